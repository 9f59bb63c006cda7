"""Whole gateway processes: two sharing one PostgreSQL queue, and one killed mid-stream."""

from __future__ import annotations

import dataclasses
import os
import re
import smtplib
import subprocess
import threading
from email.message import EmailMessage

import pytest
from sqlalchemy import func
from sqlmodel import Session, col, select

from gateway.service import build
from storage import inbound
from storage.models import InboundMessage, Message, Notification
from tests.conftest import parse_mail, wait_for
from tests.gateway_process import HELPDESK, GatewayProcess

# One sender sends hundreds of mails here (no flood limit); a dead worker's leases are taken
# again after 2 s instead of 30 s.
FAST = {"HELPDESK_FLOOD_LIMIT": "0", "HELPDESK_LEASE_SECONDS": "2"}


def request_message(n: int, tag: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "María García <maria.garcia@ferreteria-lopez.es>"
    msg["To"] = "soporte@example.com"
    msg["Subject"] = f"Consulta {tag} número {n}"
    msg["Message-ID"] = f"<{tag}-{n}@ferreteria-lopez.es>"
    msg.set_content(f"Hola,\n\nEsta es la consulta {n} de la prueba {tag}.\n\nGracias")
    return msg


def request_mail(n: int, tag: str) -> bytes:
    return request_message(n, tag).as_bytes()


def all_done(engine, expected: int) -> bool:
    with Session(engine) as session:
        done = session.exec(select(func.count()).select_from(InboundMessage)
                            .where(col(InboundMessage.state).in_(["done", "failed"]))).one()
    return done >= expected


def messages_per_id(engine) -> dict[str, int]:
    with Session(engine) as session:
        rows = session.exec(select(Message.message_id, func.count())
                            .group_by(col(Message.message_id))).all()
    return {mid: count for mid, count in rows}


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_two_gateways_share_the_queue_and_process_each_mail_once(db_url, directory, tmp_path):
    # Two processes on one PostgreSQL database, 200 mails sent to both: every mail becomes
    # exactly one ticket message, and both workers took part (FOR UPDATE SKIP LOCKED).
    settings = FAST
    first = GatewayProcess(db_url, tmp_path / "a", **settings).start()
    second = GatewayProcess(db_url, tmp_path / "b", HELPDESK_STORAGE_DIR=str(tmp_path / "a" /
                            "storage"), **settings).start()
    try:
        def send(port: int, numbers: range) -> None:
            with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
                for n in numbers:
                    client.sendmail("maria.garcia@ferreteria-lopez.es", ["soporte@example.com"],
                                    request_mail(n, "scale"))

        senders = [threading.Thread(target=send, args=(first.smtp_port, range(0, 200, 2))),
                   threading.Thread(target=send, args=(second.smtp_port, range(1, 200, 2)))]
        for thread in senders:
            thread.start()
        for thread in senders:
            thread.join(120)
        wait_for(lambda: all_done(directory, 200), timeout=120)
    finally:
        first.stop()
        second.stop()
    counts = messages_per_id(directory)
    assert len(counts) == 200 and set(counts.values()) == {1}
    a, b = first.processed_ids(), second.processed_ids()
    assert a and b, "both workers should have processed mail"
    assert not (a & b), "no mail may be processed by both"
    assert len(a | b) == 200


def test_killed_gateway_loses_and_doubles_nothing_that_got_250(db_url, directory, tmp_path):
    # SIGKILL while a client streams 500 mails; after a restart (the client retries what had no
    # 250, as MTAs do), every mail that got a 250 is on a ticket exactly once.
    gateway = GatewayProcess(db_url, tmp_path / "var", **FAST).start()
    accepted: set[int] = set()
    total = 500
    killed = threading.Event()

    def killer(victim: GatewayProcess) -> None:
        # Strikes from another thread, so the kill lands wherever the server happens to be:
        # mid-DATA, between storing and answering, or mid-ingest.
        wait_for(lambda: len(accepted) >= 150, timeout=120, interval=0.001)
        victim.kill()
        killed.set()

    threading.Thread(target=killer, args=(gateway,), daemon=True).start()
    try:
        pending = list(range(total))
        while pending:
            try:
                with smtplib.SMTP("127.0.0.1", gateway.smtp_port, timeout=30) as client:
                    while pending:
                        n = pending[0]
                        client.sendmail("maria.garcia@ferreteria-lopez.es",
                                        ["soporte@example.com"], request_mail(n, "crash"))
                        accepted.add(n)
                        pending.pop(0)
            except (smtplib.SMTPException, OSError):
                # The server died under us: start it again and resend what had no 250.
                killed.wait(30)
                gateway.stop()
                gateway = GatewayProcess(db_url, tmp_path / "var", **FAST).start()
        assert killed.is_set()
        wait_for(lambda: all_done(directory, total), timeout=180)
    finally:
        gateway.stop()
    counts = messages_per_id(directory)
    assert len(accepted) == total
    missing = [n for n in accepted if counts.get(f"<crash-{n}@ferreteria-lopez.es>") != 1]
    assert missing == []


def test_imap_poller_killed_mid_fetch_loses_and_doubles_nothing(db_url, directory, tmp_path,
                                                                dovecot):
    # 150 mails wait in the mailbox; the gateway is SIGKILLed while its poller fetches them and
    # started again: every mail ends on a ticket exactly once, and all are flagged stored.
    for n in range(150):
        dovecot.append(request_mail(n, "imap"))
    env = dict(FAST, HELPDESK_IMAP_MAILBOXES=dovecot.url(), HELPDESK_IMAP_POLL_SECONDS="1")

    def stored() -> int:
        with Session(directory) as session:
            return session.exec(select(func.count()).select_from(InboundMessage)).one()

    gateway = GatewayProcess(db_url, tmp_path / "var", **env).start()
    try:
        wait_for(lambda: stored() >= 20, timeout=120, interval=0.005)
        gateway.kill()  # mid-fetch: some mails stored, some maybe stored but not yet flagged
        assert stored() < 150
        gateway = GatewayProcess(db_url, tmp_path / "var", **env).start()
        wait_for(lambda: all_done(directory, 150), timeout=180)
    finally:
        gateway.stop()
    counts = messages_per_id(directory)
    assert [n for n in range(150) if counts.get(f"<imap-{n}@ferreteria-lopez.es>") != 1] == []
    assert stored() == 150  # nothing queued twice


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_two_sender_processes_never_send_a_notification_twice(db_url, settings, directory,
                                                              smtp_sink, tmp_path):
    # 60 "received" mails queued; two `helpdesk outbox send` processes drain the outbox at once
    # through the same relay: each mail arrives exactly once and every notification is sent.
    parts = build(dataclasses.replace(settings, flood_limit=0), directory)
    for n in range(60):
        queue_id = inbound.enqueue(parts.engine, parts.blobs, request_mail(n, "outbox"),
                                   channel="file")
        assert parts.ingestor.process_next(queue_id).outcome == "created"
    sink, port = smtp_sink
    env = {k: v for k, v in os.environ.items() if not k.startswith("HELPDESK_")}
    env.update(HELPDESK_DATABASE_URL=db_url, HELPDESK_VAR_DIR=str(tmp_path / "send"),
               HELPDESK_SECRET_KEY="test-secret-key-not-for-production",
               HELPDESK_RELAY_HOST="127.0.0.1", HELPDESK_RELAY_PORT=str(port))
    senders = [subprocess.Popen([HELPDESK, "outbox", "send"], env=env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
               for _ in range(2)]
    outputs = [proc.communicate(timeout=120)[0] for proc in senders]
    assert [proc.returncode for proc in senders] == [0, 0], outputs
    attempted = [int(re.search(r"(\d+) notification", out).group(1)) for out in outputs]
    assert sum(attempted) == 60, attempted  # each claimed by exactly one of the two
    ids = [parse_mail(raw)["Message-ID"] for _from, _to, raw in sink.messages]
    assert len(ids) == 60 and len(set(ids)) == 60
    with Session(parts.engine) as session:
        states = session.exec(select(Notification.state)).all()
    assert set(states) == {"sent"} and len(states) == 60
