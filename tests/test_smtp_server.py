"""The SMTP edge: only our domains, size limit, 250 only once stored, 451 when it cannot store
(or not in time), every client answered whatever the others do."""

from __future__ import annotations

import dataclasses
import hashlib
import smtplib
import threading
import time

import pytest
from sqlalchemy import make_url, text
from sqlalchemy.exc import OperationalError
from sqlmodel import Session, select

from storage.blobs import BlobStore
from storage.models import InboundMessage
from tests.conftest import RunningService, held, load_mail, wait_for
from tests.tcp_proxy import TcpProxy


def test_recipient_outside_support_domains_is_refused(gateway):
    # We are never a relay: RCPT for another domain gets 550 5.7.1.
    with smtplib.SMTP("127.0.0.1", gateway.smtp_port, timeout=10) as client:
        client.ehlo()
        client.mail("maria.garcia@ferreteria-lopez.es")
        code, message = client.rcpt("someone@gmail.com")
    assert code == 550
    assert b"5.7.1" in message


def test_size_limit_is_advertised_and_enforced(gateway):
    # EHLO advertises SIZE; a declared size over it is refused at MAIL, and a client that
    # does not declare it is refused with 552 at the end of DATA. Nothing is queued.
    limit = gateway.settings.smtp_max_size
    big = b"Subject: big\r\n\r\n" + (b"x" * 998 + b"\r\n") * (limit // 1000 + 10)
    with smtplib.SMTP("127.0.0.1", gateway.smtp_port, timeout=30) as client:
        client.ehlo()
        assert int(client.esmtp_features["size"]) == limit
        with pytest.raises(smtplib.SMTPSenderRefused) as refused:
            client.sendmail("maria.garcia@ferreteria-lopez.es", ["soporte@example.com"], big)
        assert refused.value.smtp_code == 552
    with smtplib.SMTP("127.0.0.1", gateway.smtp_port, timeout=30) as client:
        client.ehlo()
        assert client.mail("maria.garcia@ferreteria-lopez.es")[0] == 250
        assert client.rcpt("soporte@example.com")[0] == 250
        code, _ = client.data(big)
        assert code == 552
    with Session(gateway.service.parts.engine) as session:
        assert session.exec(select(InboundMessage)).all() == []


def test_accepted_mail_is_stored_before_250(gateway):
    # When 250 comes back, the raw bytes are on disk and the queue row names them.
    raw = load_mail("outlook-new-request-es.eml")
    with smtplib.SMTP("127.0.0.1", gateway.smtp_port, timeout=10) as client:
        client.sendmail("maria.garcia@ferreteria-lopez.es", ["soporte@example.com"], raw)
    with Session(gateway.service.parts.engine) as session:
        row = session.exec(select(InboundMessage)).one()
    assert row.channel == "smtp"
    assert row.mail_from == "maria.garcia@ferreteria-lopez.es"
    assert row.rcpt_to == "soporte@example.com"
    assert BlobStore(gateway.settings.storage_dir).get(row.raw_key) == raw


def test_database_unavailable_answers_451_so_the_client_retries(gateway):
    # If the queue cannot be written, the client gets a temporary 451 and nothing is claimed.
    engine = gateway.service.parts.engine

    def drop() -> bool:
        # PostgreSQL may pick the DROP (CASCADE: the queue and the tables referring to it) as
        # the victim of a deadlock with a worker's query on those tables: try again.
        try:
            with engine.begin() as conn:
                conn.execute(text("DROP TABLE inbound_message CASCADE")
                             if engine.dialect.name == "postgresql"
                             else text("ALTER TABLE inbound_message RENAME TO "
                                       "inbound_message_away"))
        except OperationalError as exc:
            if "deadlock" not in str(exc):
                raise
            return False
        return True

    wait_for(drop, timeout=30, interval=0.1)
    with (smtplib.SMTP("127.0.0.1", gateway.smtp_port, timeout=10) as client,
          pytest.raises(smtplib.SMTPDataError) as refused):
        client.sendmail("maria.garcia@ferreteria-lopez.es", ["soporte@example.com"],
                        load_mail("outlook-new-request-es.eml"))
    assert refused.value.smtp_code == 451


def queue_held(db_url: str):
    """While this lasts the inbound queue cannot be written."""
    return held(db_url, "LOCK TABLE inbound_message IN ACCESS EXCLUSIVE MODE")


def send_in_thread(port: int, raw: bytes, timeout: float, results: dict, key: str):
    def run() -> None:
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=timeout) as client:
                client.sendmail("maria.garcia@ferreteria-lopez.es", ["soporte@example.com"], raw)
            results[key] = 250
        except smtplib.SMTPResponseException as exc:
            results[key] = exc.smtp_code
        except (OSError, smtplib.SMTPException) as exc:
            results[key] = type(exc).__name__

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def numbered_mail(n: int) -> bytes:
    return load_mail("outlook-new-request-es.eml").replace(
        b"Message-ID: <", f"Message-ID: <held-{n}-".encode(), 1)


def test_client_that_hangs_up_mid_commit_leaves_the_others_answered(gateway, db_url):
    # The queue is held for 5 s; a client with a 2 s timeout hangs up while its mail is being
    # written, three patient clients wait behind it: once the queue is free, each of the three
    # gets its 250 and its mail is queued (the impatient one's mail may be kept too: its
    # sender will send it again, and the copy is recorded as a duplicate).
    results: dict = {}
    with queue_held(db_url):
        impatient = send_in_thread(gateway.smtp_port, numbered_mail(0), 2, results, "impatient")
        time.sleep(0.5)  # its write starts first, and waits
        patient = [send_in_thread(gateway.smtp_port, numbered_mail(n), 20, results, str(n))
                   for n in (1, 2, 3)]
        impatient.join(10)
        time.sleep(2)
    for thread in patient:
        thread.join(30)
    assert results["impatient"] in {"timeout", "TimeoutError", "SMTPServerDisconnected"}
    assert [results[str(n)] for n in (1, 2, 3)] == [250, 250, 250]
    with Session(gateway.service.parts.engine) as session:
        keys = set(session.exec(select(InboundMessage.raw_key)).all())
    assert {hashlib.sha256(numbered_mail(n)).hexdigest() for n in (1, 2, 3)} <= keys


def test_queue_held_too_long_answers_451_instead_of_hanging(settings, directory, db_url):
    # With HELPDESK_SMTP_STORE_TIMEOUT=1.5, a queue held for 6 s answers the client 451 (it
    # retries later) well before the client's own timeout, and keeps nothing half-written;
    # once the queue is free the next mail is accepted.
    results: dict = {}
    with RunningService(dataclasses.replace(settings, smtp_store_timeout=1.5)) as gateway:
        with queue_held(db_url):
            send_in_thread(gateway.smtp_port, numbered_mail(1), 30, results, "held").join(20)
            time.sleep(3)
        assert results["held"] == 451
        send_in_thread(gateway.smtp_port, numbered_mail(2), 30, results, "free").join(20)
        assert results["free"] == 250
        with Session(gateway.service.parts.engine) as session:
            keys = session.exec(select(InboundMessage.raw_key)).all()
    assert keys == [hashlib.sha256(numbered_mail(2)).hexdigest()]


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_frozen_database_answers_451_not_silence(settings, directory, db_url):
    # PostgreSQL stops answering at all (as under SIGSTOP; here a proxy stops passing bytes):
    # a client gets 451 after HELPDESK_SMTP_STORE_TIMEOUT instead of waiting for ever; once the
    # database answers again, mail is accepted.
    url = make_url(db_url)
    proxy = TcpProxy(url.host, url.port).start()
    proxied = url.set(port=proxy.port).render_as_string(hide_password=False)
    results: dict = {}
    try:
        with RunningService(dataclasses.replace(settings, database_url=proxied,
                                                smtp_store_timeout=2)) as gateway:
            proxy.freeze()
            send_in_thread(gateway.smtp_port, numbered_mail(1), 60, results, "frozen").join(30)
            proxy.thaw()
            assert results["frozen"] == 451

            def accepted() -> bool:
                send_in_thread(gateway.smtp_port, numbered_mail(2), 60, results, "thawed").join(30)
                return results["thawed"] == 250

            wait_for(accepted, timeout=60, interval=1)
    finally:
        proxy.close()
