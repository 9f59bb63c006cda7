"""The SMTP edge against the running gateway: STARTTLS (optionally required), connection limits
in all and per address, the idle limit, DATA written to disk as it arrives (dot-stuffing undone
wherever the chunks split, pipelined commands after it, nothing left behind by a client that
leaves), long lines with bare LF ends kept as sent, and the LMTP listener an MTA in front
delivers to (a reply per recipient, its Authentication-Results trusted)."""

from __future__ import annotations

import asyncio
import dataclasses
import random
import smtplib
import socket
import ssl
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from sqlmodel import Session, col, select

from bench.clients import wire_form
from gateway.channels.smtp_server import (
    ConnectionLimits,
    GatewayHandler,
    bind,
    receive_data,
    start_server,
)
from gateway.channels.tls import self_signed
from storage.blobs import INCOMING, MEMORY_MAX, BlobStore
from storage.models import InboundMessage, Ticket
from tests.conftest import RunningService, held, load_mail, run_async, wait_for
from tests.test_smtp_server import send_in_thread

MARIA = "maria.garcia@ferreteria-lopez.es"


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    """The self-signed certificate the demo makes, made for this test."""
    return self_signed(tmp_path / "tls", "example.com")


@pytest.fixture
def edge(settings, directory) -> Iterator:
    """Starts the gateway with some settings changed: ``edge(smtp_require_tls=True)``."""
    with ExitStack() as stack:
        yield lambda **changes: stack.enter_context(
            RunningService(dataclasses.replace(settings, **changes)))


def trusting(cert: Path) -> ssl.SSLContext:
    """A client context that verifies the server's certificate against ``cert`` as its CA."""
    return ssl.create_default_context(cafile=str(cert))


def numbered(n: int) -> bytes:
    return load_mail("outlook-new-request-es.eml").replace(
        b"Message-ID: <", f"Message-ID: <edge-{n}-".encode(), 1)


def queued(gateway) -> list[InboundMessage]:
    with Session(gateway.service.parts.engine) as session:
        return list(session.exec(select(InboundMessage).order_by(col(InboundMessage.id))).all())


def greeting(port: int) -> tuple[socket.socket, int, bytes]:
    """A new connection and the server's first reply (code, text)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    line = sock.makefile("rb").readline()
    return sock, int(line[:3]), line[4:].strip()


# --------------------------------------------------------------------------- STARTTLS


def test_starttls_uses_the_configured_certificate_and_mail_then_goes_through(edge,
                                                                             certificate):
    # EHLO offers STARTTLS; the client verifies the self-signed certificate (loaded as its CA)
    # and sends the mail over TLS: 250, and the mail is queued with the EHLO name said over
    # TLS. AUTH is never offered.
    cert, key = certificate
    gateway = edge(smtp_tls_cert=cert, smtp_tls_key=key)
    with smtplib.SMTP("127.0.0.1", gateway.smtp_port, local_hostname="mx.ferreteria-lopez.es",
                      timeout=10) as client:
        client.ehlo()
        assert client.has_extn("starttls")
        assert client.starttls(context=trusting(cert))[0] == 220
        assert isinstance(client.sock, ssl.SSLSocket)
        assert client.sock.version() in {"TLSv1.2", "TLSv1.3"}
        client.ehlo()
        assert not client.has_extn("starttls")  # RFC 3207 §4.2: not offered twice
        assert not client.has_extn("auth")  # a mail exchanger, not a submission server
        refused = client.sendmail(MARIA, ["soporte@example.com"], numbered(1))
    assert refused == {}
    assert [(row.channel, row.helo) for row in queued(gateway)] == [
        ("smtp", "mx.ferreteria-lopez.es")]


def test_required_tls_refuses_mail_before_starttls_with_530(edge, certificate):
    # HELPDESK_SMTP_REQUIRE_TLS: MAIL before STARTTLS gets 530 5.7.0 and nothing is queued;
    # after STARTTLS the same client's mail is accepted.
    cert, key = certificate
    gateway = edge(smtp_tls_cert=cert, smtp_tls_key=key, smtp_require_tls=True)
    with smtplib.SMTP("127.0.0.1", gateway.smtp_port, timeout=10) as client:
        client.ehlo()
        code, message = client.mail(MARIA)
        assert (code, message) == (530, b"5.7.0 Must issue a STARTTLS command first")
        assert queued(gateway) == []
        client.starttls(context=trusting(cert))
        client.ehlo()
        assert client.sendmail(MARIA, ["soporte@example.com"], numbered(1)) == {}
    assert len(queued(gateway)) == 1


def test_required_tls_without_a_certificate_does_not_start():
    # A listener that must refuse all mail is a mistake said at start, not a silent outage.
    async def start() -> None:
        handler = GatewayHandler(lambda address: True, store=None, new_blob=None)  # type: ignore[arg-type]
        with bind("127.0.0.1", 0) as sock:
            await start_server(handler, sock, hostname="example.com", max_size=1000,
                               limits=ConnectionLimits(10, 10), require_tls=True)

    with pytest.raises(ValueError, match="HELPDESK_SMTP_TLS_CERT"):
        run_async(start())


def test_the_self_signed_certificate_is_made_once(tmp_path):
    # The demo's certificate is made on the first start and reused after (clients that pinned
    # it keep trusting it).
    cert, key = self_signed(tmp_path, "example.com")
    made = cert.read_bytes(), key.read_bytes()
    assert self_signed(tmp_path, "example.com") == (cert, key)
    assert (cert.read_bytes(), key.read_bytes()) == made
    assert b"BEGIN CERTIFICATE" in made[0] and b"PRIVATE KEY" in made[1]


# --------------------------------------------------------------------------- limits


def burst(port: int, count: int) -> list[tuple[socket.socket, int, bytes]]:
    """``count`` connections opened one after the other and kept open, with the first reply
    of each."""
    return [greeting(port) for _ in range(count)]


def test_connections_over_the_per_address_limit_get_421_and_a_log_line(edge, caplog):
    # 3 per address: of a burst of 8 from 127.0.0.1, 3 are greeted and 5 get 421 4.7.0 and are
    # closed, each with a warning saying why; once one of the 3 hangs up, a new one is greeted.
    gateway = edge(smtp_max_connections_per_address=3)
    opened = burst(gateway.smtp_port, 8)
    sockets = [sock for sock, _code, _text in opened]
    try:
        assert Counter(code for _sock, code, _text in opened) == {220: 3, 421: 5}
        refused = [(sock, text) for sock, code, text in opened if code == 421]
        assert {text for _sock, text in refused} == {
            b"4.7.0 Too many connections from your address"}
        assert all(sock.recv(100) == b"" for sock, _text in refused)  # closed by the server
        assert sum("refused a connection from 127.0.0.1" in r.getMessage()
                   for r in caplog.records) == 5
        next(sock for sock, code, _text in opened if code == 220).close()

        def greeted() -> bool:
            sock, code, _ = greeting(gateway.smtp_port)
            sockets.append(sock)
            return code == 220

        wait_for(greeted, timeout=10, interval=0.1)
    finally:
        for sock in sockets:
            sock.close()


def test_connections_over_the_total_limit_get_421(edge):
    # 4 in all (and 10 per address, so that the total is what counts): of a burst of 7, 4 are
    # greeted and 3 get 421 4.7.0 "try again later".
    gateway = edge(smtp_max_connections=4, smtp_max_connections_per_address=10)
    opened = burst(gateway.smtp_port, 7)
    try:
        assert Counter(code for _sock, code, _text in opened) == {220: 4, 421: 3}
        assert {text for _sock, code, text in opened if code == 421} == {
            b"4.7.0 Too many connections, try again later"}
    finally:
        for sock, _code, _text in opened:
            sock.close()


def test_a_client_that_fails_the_tls_handshake_gives_its_place_back(edge, certificate):
    # 2 per address: three clients in turn send STARTTLS and then garbage instead of a TLS
    # handshake; each is dropped and gives its place back, so each is greeted, and two
    # clients at once are greeted after them.
    cert, key = certificate
    gateway = edge(smtp_tls_cert=cert, smtp_tls_key=key, smtp_max_connections_per_address=2)
    for _ in range(3):
        sock, code, _text = greeting(gateway.smtp_port)
        with sock:
            assert code == 220
            sock.sendall(b"EHLO client.example\r\nSTARTTLS\r\n")
            reader = sock.makefile("rb")
            while not reader.readline().startswith(b"220 "):
                pass
            sock.sendall(b"this is not a TLS ClientHello\r\n" * 4)
            while sock.recv(4096):  # an alert perhaps, then the end
                pass
    sockets = [greeting(gateway.smtp_port) for _ in range(2)]
    for sock, _code, _text in sockets:
        sock.close()
    assert [code for _sock, code, _text in sockets] == [220, 220]


def test_an_idle_connection_gets_421_and_is_closed(edge):
    # HELPDESK_SMTP_IDLE_TIMEOUT=1: a client that says nothing after EHLO is told 421 4.4.2
    # and the connection is closed.
    gateway = edge(smtp_idle_timeout=1.0)
    client = smtplib.SMTP("127.0.0.1", gateway.smtp_port, timeout=30)
    try:
        client.ehlo()
        code, message = client.getreply()  # waits for what the server says unasked
        assert code == 421
        assert message.startswith(b"4.4.2 ") and b"Timeout" in message
        with pytest.raises(smtplib.SMTPServerDisconnected):
            client.getreply()
    finally:
        client.close()


def test_a_slow_mail_is_not_cut_by_the_idle_limit(edge):
    # HELPDESK_SMTP_IDLE_TIMEOUT=1 counts silence, not the time DATA takes: a mail sent in
    # pieces over several seconds, none a second apart, is accepted.
    gateway = edge(smtp_idle_timeout=1.0)
    raw = numbered(1)
    pieces = [raw[i:i + len(raw) // 6 + 1] for i in range(0, len(raw), len(raw) // 6 + 1)]
    with smtplib.SMTP("127.0.0.1", gateway.smtp_port, timeout=30) as client:
        client.ehlo()
        client.mail(MARIA)
        client.rcpt("soporte@example.com")
        assert client.docmd("DATA")[0] == 354
        started = time.monotonic()
        for piece in pieces:
            client.send(piece)
            time.sleep(0.4)
        assert time.monotonic() - started > 2.0  # longer than the limit in all
        client.send(b".\r\n")
        code, _ = client.getreply()
    assert code == 250
    assert [row.size for row in queued(gateway)] == [len(raw)]


def test_a_client_waiting_for_its_mail_to_be_stored_is_not_idle(edge, db_url):
    # HELPDESK_SMTP_IDLE_TIMEOUT=1 while the queue is held for 3 s: the client waits on us,
    # so it gets its 250 once the queue is free, not 421 for idling.
    gateway = edge(smtp_idle_timeout=1.0)
    results: dict = {}
    with held(db_url, "LOCK TABLE inbound_message IN ACCESS EXCLUSIVE MODE"):
        sending = send_in_thread(gateway.smtp_port, numbered(1), 30, results, "held")
        time.sleep(3)
    sending.join(30)
    assert results["held"] == 250
    assert len(queued(gateway)) == 1


def test_the_idle_limit_counts_from_our_reply_after_a_long_store(edge, db_url):
    # HELPDESK_SMTP_IDLE_TIMEOUT=2; the store is held until 0.2 s before the limit would end
    # counted from the client's last byte. After our 250 the client stays silent 1 s (half
    # the limit) and is still served: its silence counts from our reply, not from its DATA
    # (CI once got 421 to the QUIT that followed a held store's 250).
    gateway = edge(smtp_idle_timeout=2.0)
    with smtplib.SMTP("127.0.0.1", gateway.smtp_port, timeout=30) as client:
        client.ehlo()
        client.mail(MARIA)
        client.rcpt("soporte@example.com")
        with held(db_url, "LOCK TABLE inbound_message IN ACCESS EXCLUSIVE MODE"):
            assert client.docmd("DATA")[0] == 354
            client.send(wire_form(numbered(1)))
            time.sleep(1.8)
        assert client.getreply()[0] == 250
        time.sleep(1.0)
        assert client.noop()[0] == 250
    assert len(queued(gateway)) == 1


# --------------------------------------------------------------------------- DATA as it arrives


def dotted_mail(lines: int, seed: int = 7) -> bytes:
    """A mail whose body has many lines starting with dots (".", "..", ".x"), of every length."""
    rng = random.Random(seed)
    body = []
    for n in range(lines):
        dots = b"." * rng.choice([0, 0, 1, 1, 2, 3])
        body.append(dots + b"linea %d " % n + b"x" * rng.randrange(0, 90))
    return (b"From: Maria Garcia <maria.garcia@ferreteria-lopez.es>\r\n"
            b"To: soporte@example.com\r\nSubject: Puntos\r\n"
            b"Message-ID: <dotted-1@ferreteria-lopez.es>\r\n\r\n" + b"\r\n".join(body) + b"\r\n")


def test_data_is_unstuffed_the_same_wherever_the_reads_split_it():
    # The DATA reader works in chunks, not lines: a stuffed dot or the end of data cut in two
    # between two reads (pieces of 1 to 9 bytes, of random sizes, of 64 KiB) is undone the
    # same; the count is of the bytes sent; what the client pipelined after the end stays.
    raw = dotted_mail(3000)
    wire = wire_form(raw)

    async def receive(pieces: list[bytes]) -> tuple[bytes, int, bytes]:
        reader = asyncio.StreamReader()
        got: list[bytes] = []

        async def feed() -> None:
            for piece in pieces:
                reader.feed_data(piece)
                await asyncio.sleep(0)

        feeding = asyncio.create_task(feed())
        received = await receive_data(reader, got.append)
        await feeding
        reader.feed_eof()
        return b"".join(got), received, await reader.read()

    stream = wire + b"QUIT\r\n"
    rng = random.Random(3)
    for size in (1, 2, 3, 5, 9, 65536):
        pieces = [stream[i:i + size] for i in range(0, len(stream), size)]
        assert run_async(receive(pieces)) == (raw, len(wire) - 3, b"QUIT\r\n"), size
    cuts = sorted(rng.sample(range(1, len(stream)), 400))
    pieces = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    assert run_async(receive(pieces)) == (raw, len(wire) - 3, b"QUIT\r\n")
    # An empty mail, and one line that is only a stuffed dot.
    assert run_async(receive([b".\r\n"])) == (b"", 0, b"")
    assert run_async(receive([b"..\r\n.\r\n"])) == (b".\r\n", 4, b"")


def test_a_large_dotted_mail_is_stored_byte_exact(gateway):
    # 300 KB with thousands of dotted lines over SMTP: the stored blob is the mail as written.
    raw = dotted_mail(6000)
    assert len(raw) > 250_000
    with smtplib.SMTP("127.0.0.1", gateway.smtp_port, timeout=10) as client:
        assert client.sendmail(MARIA, ["soporte@example.com"], raw) == {}
    (row,) = queued(gateway)
    assert BlobStore(gateway.settings.storage_dir).get(row.raw_key) == raw
    assert row.size == len(raw)


def test_commands_pipelined_after_the_end_of_data_are_answered(gateway):
    # RFC 2920: an MTA may send QUIT (or the next MAIL) in the same packet as the final dot;
    # the mail is accepted and the commands behind it answered in order.
    sock, code, _text = greeting(gateway.smtp_port)
    with sock, sock.makefile("rb") as replies:
        def say(line: bytes) -> int:
            sock.sendall(line)
            while True:
                reply = replies.readline()
                if reply[3:4] != b"-":
                    return int(reply[:3])

        assert say(b"EHLO client.example\r\n") == 250
        assert say(b"MAIL FROM:<%s>\r\n" % MARIA.encode()) == 250
        assert say(b"RCPT TO:<soporte@example.com>\r\n") == 250
        assert say(b"DATA\r\n") == 354
        sock.sendall(wire_form(numbered(1)) + b"MAIL FROM:<%s>\r\nQUIT\r\n" % MARIA.encode())
        answers = [replies.readline()[:3] for _ in range(3)]
    assert answers == [b"250", b"250", b"221"]
    assert len(queued(gateway)) == 1


PATHS = ["<ana@example.com>", "<ana@example.com> SIZE=100 BODY=8BITMIME", "<>",
         "<Ana.B+x_y@Ejemplo.COM>", "<a..b@x.com>", "<.a@x.com>", '<"a b"@x.com>', "ana@x.com",
         "<@relay.example:a@x.com>", "<a@[192.0.2.1]>", "<a@x..com>", "<a@-x.com>",
         " <a@x.com>", "<a@x.com>x", "<a@x.com", "<ñ@x.com>", "<a@x.com >", "<a@x>",
         "<a@x.com.>", "<a@x.com> (comentario) SIZE=1", "<a@x.com>  \t", "<a@x.com>\tSIZE=1",
         f"<{'a' * 70}@x.com>", "<a(b)@x.com>", "<a@x.com>(c)", "", "<a@b@c.com>"]


@pytest.mark.parametrize("limit", [0, 64])
def test_mail_and_rcpt_paths_are_read_as_aiosmtpd_reads_them(limit):
    # The edge reads "<local@domain>" itself (aiosmtpd's parser costs a third of a millisecond
    # a mail); every path must come out as aiosmtpd's own reading, odd ones included.
    from aiosmtpd.smtp import SMTP

    from gateway.channels.smtp_server import _Edge

    ours = _Edge(object(), limits=ConnectionLimits(1, 1))
    theirs = SMTP(object())
    ours.local_part_limit = theirs.local_part_limit = limit
    for path in PATHS:
        assert ours._getaddr(path) == theirs._getaddr(path), path


def test_mail_with_parameters_is_accepted_and_stored_under_its_sender(gateway):
    with smtplib.SMTP("127.0.0.1", gateway.smtp_port) as client:
        client.ehlo("client.example")
        assert client.mail(MARIA, ["SIZE=2000", "BODY=8BITMIME"])[0] == 250
        assert client.rcpt("Soporte@Example.com")[0] == 250
        assert client.data(numbered(7))[0] == 250
    assert [row.mail_from for row in queued(gateway)] == [MARIA]


def start_data(sock: socket.socket, replies) -> None:  # type: ignore[no-untyped-def]
    """EHLO, MAIL, RCPT and DATA, each reply read to its last line: the mail comes next."""
    for line in (b"EHLO client.example\r\n", b"MAIL FROM:<%s>\r\n" % MARIA.encode(),
                 b"RCPT TO:<soporte@example.com>\r\n", b"DATA\r\n"):
        sock.sendall(line)
        while replies.readline()[3:4] == b"-":
            pass


def test_an_empty_mail_is_accepted_and_kept_as_failed(gateway):
    # DATA with nothing before the final dot: accepted (250) and queued like any other mail,
    # then kept as failed ("empty message") for the team to see, not answered 451 for ever.
    sock, _code, _text = greeting(gateway.smtp_port)
    with sock, sock.makefile("rb") as replies:
        start_data(sock, replies)
        sock.sendall(b".\r\n")
        assert replies.readline()[:3] == b"250"
    (row,) = queued(gateway)
    assert row.size == 0

    def kept() -> InboundMessage | None:
        (done,) = queued(gateway)
        return done if done.state == "done" else None

    done = wait_for(kept)
    assert done.outcome == "failed" and "empty message" in (done.reason or "")


def test_a_client_that_leaves_during_data_leaves_nothing_behind(gateway):
    # Half a mail, then the connection drops: nothing queued, no partial file kept.
    sock, _code, _text = greeting(gateway.smtp_port)
    with sock, sock.makefile("rb") as replies:
        start_data(sock, replies)
        # Past what a blob keeps in memory: the start of the mail is in a file by now.
        sock.sendall(dotted_mail(30_000)[:MEMORY_MAX + 200_000])
        incoming = Path(gateway.settings.storage_dir) / INCOMING
        wait_for(lambda: incoming.is_dir() and any(incoming.iterdir()), timeout=5)
    assert wait_for(lambda: not any(incoming.iterdir()), timeout=5)
    assert queued(gateway) == []


# --------------------------------------------------------------------------- long lines


def bare_lf_mail(line: bytes) -> bytes:
    """A mail whose lines end in bare LF (as some scripts and old clients send them), ending
    in CRLF where DATA ends, with ``line`` in its body."""
    return (b"From: Maria Garcia <maria.garcia@ferreteria-lopez.es>\n"
            b"To: soporte@example.com\n"
            b"Subject: Informe en una sola linea\n"
            b"Message-ID: <bare-lf-1@ferreteria-lopez.es>\n"
            b"Date: Mon, 3 Feb 2025 10:00:00 +0100\n"
            b"\n"
            b"Buenos dias,\n" + line + b"\nUn saludo\r\n")


def test_a_long_bare_lf_line_is_accepted_and_stored_byte_exact(gateway):
    # A 1,500-byte line with bare LF ends no longer gets 500 "Line too long": 250, and the
    # stored mail is the bytes sent.
    raw = bare_lf_mail(b"x" * 1500)
    with smtplib.SMTP("127.0.0.1", gateway.smtp_port, timeout=10) as client:
        assert client.sendmail(MARIA, ["soporte@example.com"], raw) == {}
    (row,) = queued(gateway)
    assert BlobStore(gateway.settings.storage_dir).get(row.raw_key) == raw


def test_a_bare_lf_mail_over_the_size_limit_is_refused_552(edge):
    # The long line may be as long as a mail may be, no longer: a 30,000-byte bare-LF mail
    # with HELPDESK_SMTP_MAX_SIZE=20000 gets 552 5.3.4 (not 500), and nothing is queued; the
    # same client's next, smaller mail is accepted.
    gateway = edge(smtp_max_size=20000)
    with smtplib.SMTP("127.0.0.1", gateway.smtp_port, timeout=10) as client:
        client.ehlo()
        client.mail(MARIA)
        client.rcpt("soporte@example.com")
        code, message = client.data(bare_lf_mail(b"y" * 30000))
        assert (code, message[:6]) == (552, b"5.3.4 ")
        assert client.sendmail(MARIA, ["soporte@example.com"], bare_lf_mail(b"z" * 5000)) == {}
    assert len(queued(gateway)) == 1
    incoming = Path(gateway.settings.storage_dir) / INCOMING
    assert not incoming.exists() or not any(incoming.iterdir())


# --------------------------------------------------------------------------- LMTP


def lmtp_send(port: int, raw: bytes, recipients: list[str]) -> tuple[list[int], list[tuple]]:
    """Over LMTP: the RCPT codes, then every reply after DATA (RFC 2033 §4.2: one per
    accepted recipient; smtplib reads only one, so they are read here)."""
    with smtplib.LMTP("127.0.0.1", port, timeout=10) as client:
        client.ehlo()  # LHLO
        assert client.mail(MARIA)[0] == 250
        rcpt_codes = [client.rcpt(r)[0] for r in recipients]
        assert client.docmd("DATA")[0] == 354
        client.send(raw + b".\r\n")
        replies = [client.getreply() for _ in range(rcpt_codes.count(250))]
    return rcpt_codes, replies


def test_lmtp_answers_each_recipient_and_the_mail_becomes_a_ticket(edge):
    # HELPDESK_LMTP_PORT: two of our recipients and one outside our domains; RCPT answers
    # 250, 250, 550; after DATA one 250 per accepted recipient, the mail queued once (channel
    # lmtp) and made a ticket for María.
    gateway = edge(lmtp_port=0)
    assert gateway.service.lmtp_port
    rcpt_codes, replies = lmtp_send(
        gateway.service.lmtp_port, numbered(1),
        ["soporte@example.com", "someone@gmail.com", "ayuda@example.com"])
    assert rcpt_codes == [250, 550, 250]
    assert [code for code, _ in replies] == [250, 250]
    assert b"<soporte@example.com>" in replies[0][1]
    assert b"<ayuda@example.com>" in replies[1][1]
    (row,) = queued(gateway)
    assert (row.channel, row.source, row.rcpt_to) == (
        "lmtp", "127.0.0.1", "soporte@example.com,ayuda@example.com")
    engine = gateway.service.parts.engine

    def ticket() -> Ticket | None:
        with Session(engine) as session:
            queued_row = session.get(InboundMessage, row.id)
            return session.get(Ticket, queued_row.ticket_id) if queued_row.ticket_id else None

    made = wait_for(ticket)
    assert made.subject


def test_lmtp_over_the_size_limit_answers_each_recipient(edge):
    # aiosmtpd's own 552 after DATA is said once per recipient, so that the MTA is not left
    # waiting for the second answer.
    gateway = edge(lmtp_port=0, smtp_max_size=5000)
    _codes, replies = lmtp_send(gateway.service.lmtp_port, bare_lf_mail(b"y" * 9000),
                                ["soporte@example.com", "ayuda@example.com"])
    assert [code for code, _ in replies] == [552, 552]
    assert queued(gateway) == []


def authenticated_mail(results: str | None) -> bytes:
    raw = numbered(7)
    if results is None:
        return raw
    return f"Authentication-Results: {results}\r\n".encode() + raw


def test_lmtp_trusts_the_mta_authentication_results(edge):
    # HELPDESK_SENDER_AUTH=enforce with HELPDESK_LMTP_AUTH_RESULTS=mx.example.net: a mail the
    # MTA found aligned with DKIM makes a ticket; one without its results is held, not
    # judged by SPF against the MTA's own address.
    gateway = edge(lmtp_port=0, sender_auth="enforce", lmtp_auth_results="mx.example.net")
    passed = authenticated_mail(
        "mx.example.net; spf=pass smtp.mailfrom=ferreteria-lopez.es; "
        "dkim=pass header.d=ferreteria-lopez.es; dmarc=pass header.from=ferreteria-lopez.es")
    lmtp_send(gateway.service.lmtp_port, passed, ["soporte@example.com"])
    lmtp_send(gateway.service.lmtp_port, authenticated_mail(None).replace(
        b"Message-ID: <", b"Message-ID: <unjudged-", 1), ["soporte@example.com"])
    engine = gateway.service.parts.engine

    def outcomes() -> list[tuple[str | None, bool | None]] | None:
        with Session(engine) as session:
            rows = session.exec(select(InboundMessage).order_by(col(InboundMessage.id))).all()
            found = [(r.outcome, r.authenticated) for r in rows]
        return found if len(found) == 2 and all(o for o, _ in found) else None

    assert wait_for(outcomes) == [("created", True), ("quarantined", False)]


def test_lmtp_answers_each_recipient_when_taking_the_mail_fails(edge, monkeypatch):
    # Whatever goes wrong once DATA has arrived (here the handler fails outright) is answered
    # 451 once per accepted recipient, as RFC 2033 §4.2 wants (a single reply would leave the
    # MTA waiting for the others), and the session is ready for the next mail.
    async def broken(self, server, session, envelope):
        raise RuntimeError("broken on purpose")

    monkeypatch.setattr(GatewayHandler, "handle_DATA", broken)
    gateway = edge(lmtp_port=0)
    with smtplib.LMTP("127.0.0.1", gateway.service.lmtp_port, timeout=10) as client:
        client.ehlo()
        assert client.mail(MARIA)[0] == 250
        assert client.rcpt("soporte@example.com")[0] == 250
        assert client.rcpt("ayuda@example.com")[0] == 250
        assert client.docmd("DATA")[0] == 354
        client.send(wire_form(numbered(1)))
        replies = [client.getreply()[0] for _ in range(2)]
        assert replies == [451, 451]
        assert client.mail(MARIA)[0] == 250  # not "503 nested MAIL command"
    assert queued(gateway) == []
