"""The SMTP edge (aiosmtpd): check recipients, store the mail durably, then answer 250.

It does as little as possible: no parsing, no ticket logic. A mail is acknowledged only after its
raw bytes are on disk and its queue row is committed; if that fails, or does not finish within
HELPDESK_SMTP_STORE_TIMEOUT, the client gets a 451 and retries later (RFC 5321 §4.2.5), so an
accepted mail is never lost and no client waits for an answer that does not come.

Around aiosmtpd's protocol (``EdgeSMTP``, and ``EdgeLMTP`` for an MTA in front, RFC 2033):
STARTTLS (optionally required before MAIL), limits on connections at once (in all and per client
address, 421 beyond them), an idle limit that any byte from the client and each of our answers
resets (421 when it runs out), and DATA read in chunks straight to the blob store
(``receive_data``) instead of line by line into memory: a 25 MB mail never sits whole in the
SMTP process, and a mail with bare LF line ends (one "line" to an SMTP server) is kept as sent
instead of refused "500 Line too long".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
import ssl
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any, AnyStr

from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP, Envelope, Session, TLSSetupException

from storage.blobs import BlobWriter
from storage.faults import describe, is_unavailable

log = logging.getLogger("gateway.smtp")

OK_250 = "250 2.1.5 OK"
ERR_421_BUSY = "421 4.7.0 Too many connections, try again later"
ERR_421_BUSY_ADDRESS = "421 4.7.0 Too many connections from your address"
ERR_421_IDLE = "421 4.4.2 Idle too long: Timeout, closing the connection"
ERR_451_LOCAL = "451 4.3.0 Local error, try again later"
ERR_451_STORE = "451 4.3.0 Temporary failure storing the message, try again later"
ERR_530_TLS = "530 5.7.0 Must issue a STARTTLS command first"
ERR_550_RELAY = "550 5.7.1 Relaying denied: this server only accepts mail for its own domains"
ERR_552_SIZE = "552 5.3.4 Message too big"

# aiosmtpd's own replies, with their enhanced status codes (RFC 3463). (Its DATA, with its
# own size and line-length replies, is replaced by _Edge.smtp_DATA.)
REPLIES = {
    "530 Must issue a STARTTLS command first": ERR_530_TLS,
}

# store(blob, mail_from, rcpt_tos, peer, helo, channel) -> inbound queue id, once the mail (the
# blob written as it arrived, not committed yet) is durably stored and queued.
StoreFunction = Callable[[BlobWriter, str, tuple[str, ...], str, str, str], Awaitable[int]]
DATA_CHUNK = 64 * 1024  # bytes read from the client at a time during DATA
_END_OF_DATA = b"\r\n.\r\n"  # RFC 5321 §4.1.1.4, the line end before the dot included
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"  # RFC 5322 atext
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
# ...and the blanks after it, which aiosmtpd's parser takes with the path (not a comment).
_PLAIN_PATH = re.compile(rf"<({_ATOM}(?:\.{_ATOM})*@{_LABEL}(?:\.{_LABEL})*)>[ \t]*(?![ \t(])")


class GatewayHandler:
    def __init__(
        self,
        accepts_recipient: Callable[[str], bool],
        store: StoreFunction,
        new_blob: Callable[[], BlobWriter],
        on_stored: Callable[[], None] = lambda: None,
        store_timeout: float = 30.0,
    ) -> None:
        self.accepts_recipient = accepts_recipient
        self.store = store
        self.new_blob = new_blob  # where DATA is written as it arrives
        self.on_stored = on_stored
        # A store that takes longer (a database or disk that hangs) is answered 451, so that
        # the client retries instead of waiting for an answer that may never come.
        self.store_timeout = store_timeout

    async def handle_EHLO(  # noqa: N802 (aiosmtpd's hook name)
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str,
        responses: list[str],
    ) -> list[str]:
        """EHLO's (and LHLO's) extensions without AUTH, which aiosmtpd offers after STARTTLS:
        we receive mail for our domains, we are not a submission server."""
        session.host_name = hostname
        return [line for line in responses if not line.startswith("250-AUTH")]

    async def handle_RCPT(  # noqa: N802 (aiosmtpd's hook name)
        self, server: SMTP, session: Session, envelope: Envelope, address: str,
        rcpt_options: list[str],
    ) -> str:
        if not self.accepts_recipient(address):
            log.info("refused recipient %s from %s", address, session.peer)
            return ERR_550_RELAY
        envelope.rcpt_tos.append(address)
        return OK_250

    async def handle_DATA(  # noqa: N802 (aiosmtpd's hook name)
        self, server: SMTP, session: Session, envelope: Envelope,
    ) -> str:
        blob: BlobWriter = envelope.blob  # written by _Edge.smtp_DATA as it arrived
        lmtp = isinstance(server, LMTP)
        try:
            inbound_id = await asyncio.wait_for(
                self.store(blob, envelope.mail_from or "", tuple(envelope.rcpt_tos),
                           peer_address(session.peer), str(session.host_name or ""),
                           "lmtp" if lmtp else "smtp"),
                self.store_timeout)
        except TimeoutError:
            log.warning("storing a %d-byte mail from %s took too long; answered 451", blob.size,
                        envelope.mail_from)
            return each_recipient(server, envelope, ERR_451_STORE)
        except Exception as exc:
            blob.discard()  # no-op once committed (an equal blob may stay: harmless)
            if is_unavailable(exc):  # a full disk, a database away: one line, no traceback
                log.warning("could not store a %d-byte mail from %s: %s", blob.size,
                            envelope.mail_from, describe(exc))
            else:
                log.exception("could not store a %d-byte mail from %s", blob.size,
                              envelope.mail_from)
            return each_recipient(server, envelope, ERR_451_STORE)
        self.on_stored()
        if lmtp:  # stored once for all of them; RFC 2033 §4.2: a reply per recipient
            return "\r\n".join(f"250 2.1.5 <{rcpt}> OK: queued as {inbound_id}"
                               for rcpt in envelope.rcpt_tos)
        return f"250 2.0.0 OK: queued as {inbound_id}"

    async def handle_exception(self, error: Exception) -> str:
        """Whatever goes wrong in a session is ours, not the client's: 451, so that it tries
        again (aiosmtpd would answer 500, which bounces the mail)."""
        if isinstance(error, TLSSetupException):  # the connection is closed, nobody reads this
            log.info("a client's TLS handshake failed: %s", error.__cause__)
        else:
            log.exception("SMTP session error; answered 451")
        return ERR_451_LOCAL


def each_recipient(server: SMTP, envelope: Envelope, status: str) -> str:
    """The reply to DATA: one line for SMTP, one per accepted recipient for LMTP."""
    if isinstance(server, LMTP) and len(envelope.rcpt_tos) > 1:
        return "\r\n".join([status] * len(envelope.rcpt_tos))
    return status


def peer_address(peer: object) -> str:
    """The client's address from a socket's peer name (an address and port, or a path)."""
    return str(peer[0]) if isinstance(peer, tuple) else str(peer or "")


class ConnectionLimits:
    """Connections at once, in all and per client address, for one listener. Used on the event
    loop's thread only, so no lock."""

    def __init__(self, total: int, per_address: int) -> None:
        self.total = total
        self.per_address = per_address
        self.open: Counter[str] = Counter()

    def admit(self, address: str) -> str | None:
        """None when the connection may go on (it is then counted), else the 421 to say."""
        if self.open.total() >= self.total:
            return ERR_421_BUSY
        if self.open[address] >= self.per_address:
            return ERR_421_BUSY_ADDRESS
        self.open[address] += 1
        return None

    def release(self, address: str) -> None:
        self.open[address] -= 1
        if self.open[address] <= 0:
            del self.open[address]


class _Sink:
    """Where ``receive_data`` puts a mail: a new blob (an empty mail too). A disk that refuses
    it (full, gone) is remembered, the rest of the mail read and dropped."""

    def __init__(self, blob: BlobWriter) -> None:
        self.blob = blob
        self.error: OSError | None = None

    def write(self, chunk: bytes) -> None:
        if self.error is not None:
            return
        try:
            self.blob.write(chunk)
        except OSError as exc:
            self.error = exc
            self.discard()

    def discard(self) -> None:
        with contextlib.suppress(OSError):
            self.blob.discard()


async def receive_data(reader: asyncio.StreamReader, write: Callable[[bytes], None],
                       limit: int | None = None) -> int:
    """Read a mail's DATA up to the line holding only "." and give its bytes to ``write`` as
    they come, a chunk at a time, with the dot-stuffing undone (RFC 5321 §4.5.2: a line's
    leading dot removed). Returns how many bytes the client sent (stuffing included, the end
    excluded); past ``limit`` nothing more is written, but the mail is read to its end so that
    the answer comes after it. Commands the client pipelined behind the end stay in
    ``reader`` for the session."""
    pending = b"\r\n"  # the mail starts at a line start: its first line may be dot-stuffed
    skip = 2  # ...but those two bytes are not the mail's
    received = 0
    while True:
        chunk = await reader.read(DATA_CHUNK)
        if not chunk:  # aiosmtpd cancels us when the client leaves; in case it did not
            raise ConnectionResetError("the client closed the connection during DATA")
        pending += chunk
        end = pending.find(_END_OF_DATA)
        if end >= 0:
            rest = pending[end + len(_END_OF_DATA):]
            if rest:  # pipelined (RFC 2920): read again by the session; asyncio has no unread
                reader._buffer[:0] = rest  # type: ignore[attr-defined]  # noqa: SLF001
            body, pending = pending[:end + 2], b""
        elif len(pending) < 2 * len(_END_OF_DATA):
            continue
        else:
            # Keep the tail: the end of data or a stuffed line start may be cut in two there.
            cut = len(pending) - len(_END_OF_DATA) + 1
            carriage = pending.find(b"\r", cut - 2, cut)
            cut = carriage if carriage >= 0 else cut
            body, pending = pending[:cut], pending[cut:]
        received += len(body)
        body = body.replace(b"\r\n.", b"\r\n")
        if skip:
            body, skip = body[skip:], max(skip - len(body), 0)
        if body and (limit is None or received - 2 <= limit):
            write(body)
        if end >= 0:
            return received - 2  # the two bytes the mail was started with


class _Edge(SMTP):
    """What the gateway adds to aiosmtpd's protocol: the connection limits, an idle limit
    reset by any byte (so a slow DATA is not cut) and answered 421, DATA written to a blob as
    it arrives, and aiosmtpd's own replies with enhanced status codes.

    It reaches into aiosmtpd 1.4 (pinned): ``_reader``, ``_reset_timeout``, ``_timeout_cb``,
    ``_call_handler_hook``, ``_set_post_data_state``, and asyncio's ``StreamReader._limit`` and
    ``_buffer``; tests/test_smtp_edge.py shows when that changes."""

    def __init__(self, handler: Any, *, limits: ConnectionLimits, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.limits = limits
        self._counted: str | None = None  # the address this connection is counted under
        self._refused = False
        self._waiting_on_us = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.transport is None:  # the connection, not its switch to TLS
            address = peer_address(transport.get_extra_info("peername"))
            refusal = self.limits.admit(address)
            if refusal is not None:
                log.warning("refused a connection from %s: %s (at most %d at once, %d per "
                            "address)", address, refusal, self.limits.total,
                            self.limits.per_address)
                self._refused = True
                assert isinstance(transport, asyncio.WriteTransport)
                transport.write(f"{refusal}\r\n".encode())
                transport.close()
                return
            self._counted = address
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        if self._refused:  # aiosmtpd never saw it
            return
        if self._counted is not None:
            self.limits.release(self._counted)
            self._counted = None
        super().connection_lost(error)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        self._reset_timeout()  # idle means silent, not slow
        super().data_received(data)

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        """The path of MAIL or RCPT and what follows it, as aiosmtpd reads it, with the usual
        "<local@domain>" (RFC 5321 dot-atoms) read by one regular expression: aiosmtpd builds a
        typing class and runs the stdlib's header parser for each path, a third of a
        millisecond a mail. Any other path (quoted, with a source route, an address literal,
        without angle brackets) is left to aiosmtpd."""
        plain = _PLAIN_PATH.match(arg)
        if plain is None:
            return super()._getaddr(arg)
        address = plain.group(1)
        if self.local_part_limit and address.index("@") > self.local_part_limit:
            return None, None
        return address, arg[plain.end():]

    async def _call_handler_hook(self, command: str, *args: Any) -> Any:
        self._waiting_on_us = True  # storing a mail: the client is waiting, not idle
        try:
            return await super()._call_handler_hook(command, *args)
        finally:
            self._waiting_on_us = False
            self._reset_timeout()  # its silence counts from our reply (RFC 5321 §4.5.3.2)

    def _timeout_cb(self) -> None:
        if self._waiting_on_us:  # our store has its own time limit (451 when it runs out)
            self._reset_timeout()
            return
        transport = self.transport
        if isinstance(transport, asyncio.WriteTransport) and not transport.is_closing():
            log.info("closed a connection from %s idle for %g s", self._counted,
                     self._timeout_duration)
            transport.write(f"{ERR_421_IDLE}\r\n".encode())  # RFC 5321 §4.5.3.2
        super()._timeout_cb()

    async def smtp_DATA(self, arg: str) -> None:  # noqa: N802 (aiosmtpd's command method)
        """aiosmtpd's DATA (its checks and replies) but with the mail written to a blob as it
        arrives (``receive_data``), and the size limit's 552, or a 451 when the disk refused the
        mail, said once the client has sent all of it (RFC 5321 §4.2.5)."""
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        envelope = self.envelope
        assert envelope is not None
        if not envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        handler: GatewayHandler = self.event_handler
        sink = _Sink(handler.new_blob())  # (no disk touched until past a MiB: BlobWriter)
        handed_over = False
        reader = self._reader
        # While DATA lasts the reader may hold a chunk: with aiosmtpd's limit for command lines
        # (1001 bytes) it would pause the socket after every two lines.
        reader._limit = DATA_CHUNK  # type: ignore[attr-defined]  # noqa: SLF001
        try:
            received = await receive_data(reader, sink.write, self.data_size_limit)
            if sink.error is not None:
                log.warning("could not store a mail from %s as it arrived (%d bytes): %s; "
                            "answered 451", envelope.mail_from, received, describe(sink.error))
                status = each_recipient(self, envelope, ERR_451_STORE)
            elif self.data_size_limit and received > self.data_size_limit:
                log.info("refused a %d-byte mail from %s: over the %d-byte limit", received,
                         envelope.mail_from, self.data_size_limit)
                status = each_recipient(self, envelope, ERR_552_SIZE)
            else:
                envelope.blob = sink.blob  # type: ignore[attr-defined]
                handed_over = True
                try:
                    status = await self._call_handler_hook("DATA")
                except Exception:  # said here, not by handle_exception: LMTP wants a reply per
                    # recipient, and the session must be ready for the next MAIL
                    log.exception("could not take a mail from %s; answered 451",
                                  envelope.mail_from)
                    handed_over = False  # dropped below, unless it was stored (then kept)
                    status = each_recipient(self, envelope, ERR_451_LOCAL)
        finally:
            reader._limit = SMTP.line_length_limit  # type: ignore[attr-defined]  # noqa: SLF001
            if not handed_over:
                sink.discard()
        self._set_post_data_state()
        await self.push(status)

    async def push(self, status: AnyStr) -> None:
        if isinstance(status, str):
            status = REPLIES.get(status, status)  # type: ignore[assignment]
        await super().push(status)


class EdgeSMTP(_Edge):
    """The SMTP listener."""


class EdgeLMTP(_Edge, LMTP):
    """The LMTP listener (RFC 2033): after DATA, one reply per accepted recipient (said by
    ``_Edge.smtp_DATA`` and the handler, ``each_recipient``)."""


async def start_server(
    handler: GatewayHandler, sock: socket.socket, *, hostname: str, max_size: int,
    limits: ConnectionLimits, idle_timeout: float = 300.0,
    tls_context: ssl.SSLContext | None = None, require_tls: bool = False, lmtp: bool = False,
) -> asyncio.Server:
    """Serve SMTP (or LMTP) on an already bound socket (so callers may bind port 0 and read
    the port)."""
    if require_tls and tls_context is None:
        raise ValueError("HELPDESK_SMTP_REQUIRE_TLS needs a certificate: set "
                         "HELPDESK_SMTP_TLS_CERT (and HELPDESK_SMTP_TLS_KEY)")
    loop = asyncio.get_running_loop()
    protocol = EdgeLMTP if lmtp else EdgeSMTP

    def factory() -> SMTP:
        return protocol(
            handler,
            limits=limits,
            hostname=hostname,
            ident="helpdesk-gateway LMTP" if lmtp else "helpdesk-gateway ESMTP",
            data_size_limit=max_size,
            enable_SMTPUTF8=True,
            decode_data=False,
            tls_context=tls_context,
            require_starttls=require_tls,
            timeout=idle_timeout,
            loop=loop,
        )

    return await loop.create_server(factory, sock=sock)


def bind(host: str, port: int, *, listen: bool = True, share: bool = False) -> socket.socket:
    """A listening TCP socket. Named IPPROTO_TCP, not 0: asyncio turns Nagle's algorithm off
    (TCP_NODELAY) only on connections of such a socket, and with it on, a reply written in two
    pieces (headers then body, or a multi-line SMTP answer) waits ~40 ms for the peer's delayed
    ACK.

    ``share``: with SO_REUSEPORT, so that several processes each listen on a socket of their
    own bound to the same port and the kernel spreads new connections evenly among them (one
    socket shared by all would let whichever process wakes first accept a whole burst).
    ``listen=False`` only reserves the port (such a socket is given no connections)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if share:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    if listen:
        sock.listen(128)
    sock.setblocking(False)
    return sock
