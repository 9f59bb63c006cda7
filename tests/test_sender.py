"""Outbox delivery: to a folder without relay, or through a real SMTP relay with retries."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
from datetime import timedelta

import pytest
from aiosmtpd.controller import Controller
from click.testing import CliRunner
from sqlmodel import Session, select

from gateway.cli import main
from gateway.service import build, report_stuck
from storage import inbound, outbox
from storage.models import Notification, utcnow
from tests.conftest import deliver, free_port, load_mail, parse_mail, wait_for


def queue_received(parts, name: str = "outlook-new-request-es.eml", nth: int = 0) -> Notification:
    """Ingest a new request; its "received" notification (the ``nth`` queued so far)."""
    queue_id = inbound.enqueue(parts.engine, parts.blobs, load_mail(name), channel="file")
    assert parts.ingestor.process_next(queue_id).outcome == "created"
    with Session(parts.engine) as session:
        return session.exec(select(Notification).order_by(Notification.id)).all()[nth]


def reload(parts, notification_id: int) -> Notification:
    with Session(parts.engine) as session:
        return session.get(Notification, notification_id)


@pytest.fixture
def relayed(settings, directory, smtp_sink):
    _sink, port = smtp_sink
    return build(dataclasses.replace(settings, relay_host="127.0.0.1", relay_port=port), directory)


def test_without_relay_mail_is_written_to_the_outbox_folder(parts, settings):
    # The embedded default: the "received" mail lands as an .eml a newcomer can open.
    note = queue_received(parts)
    assert deliver(parts) == 1
    (eml,) = settings.outbox_dir.glob("*.eml")
    assert eml.name.endswith("-ticket1001-received.eml")
    mail = parse_mail(eml.read_bytes())
    assert mail["Message-ID"] == note.message_id
    assert mail["Subject"].startswith("[#1001] Hemos recibido tu solicitud")
    assert reload(parts, note.id).state == "sent"


def test_contact_language_english_gets_english_mail(parts, settings):
    # Lucía's language is English: her "received" mail and its refusal notice are in English.
    queue_received(parts, "thunderbird-exe-and-pdf-en.eml")
    deliver(parts)
    (eml,) = settings.outbox_dir.glob("*.eml")
    mail = parse_mail(eml.read_bytes())
    assert mail["Subject"] == ("[#1001] We have received your request: "
                               "Installer for the new appointment module")
    body = mail.get_body(("plain",)).get_content()
    assert "setup_citas.exe: this type of file is not accepted" in body
    assert mail["Content-Language"] == "en"


def test_temporary_refusal_is_retried_later_with_the_same_bytes(relayed, smtp_sink):
    # A 451 from the relay leaves the mail queued with backoff; the retry sends what was recorded.
    sink, _port = smtp_sink
    note = queue_received(relayed)
    sink.refuse = "451 4.3.0 Mailbox temporarily unavailable"
    deliver(relayed)
    after = reload(relayed, note.id)
    assert (after.state, after.attempts) == ("queued", 1)
    assert "451" in after.last_error
    assert after.next_attempt_at > utcnow() + timedelta(seconds=20)
    assert deliver(relayed) == 0  # not due yet

    sink.refuse = None
    with Session(relayed.engine) as session:
        row = session.get(Notification, note.id)
        row.next_attempt_at = utcnow()
        session.add(row)
        session.commit()
    deliver(relayed)
    final = reload(relayed, note.id)
    assert (final.state, final.attempts) == ("sent", 2)
    assert sink.messages[0][2].replace(b"\r\n", b"\n") == final.raw.replace(b"\r\n", b"\n")


def test_permanent_refusal_gives_up_with_the_reason(relayed, smtp_sink):
    # A 550 is final: the notification is failed at once, with the relay's words kept.
    sink, _port = smtp_sink
    note = queue_received(relayed)
    sink.refuse = "550 5.1.1 User unknown"
    deliver(relayed)
    after = reload(relayed, note.id)
    assert (after.state, after.attempts) == ("failed", 1)
    assert "User unknown" in after.last_error


def test_a_mail_that_cannot_be_written_fails_at_once_with_the_reason(relayed, smtp_sink):
    # A recipient that is no ASCII address (say, an internationalized one our relay could not
    # take) can never be written: failed on the first attempt, nothing sent, the reason kept.
    sink, _port = smtp_sink
    note = queue_received(relayed)
    with Session(relayed.engine) as session:
        row = session.get(Notification, note.id)
        row.recipient = "maría@ferreteria-lopez.es"
        session.add(row)
        session.commit()
    deliver(relayed)
    after = reload(relayed, note.id)
    assert (after.state, after.attempts) == ("failed", 1)
    assert "cannot write the mail" in after.last_error and "non-ASCII" in after.last_error
    assert sink.messages == []


def test_relay_down_delays_mail_without_dropping_it(parts, settings):
    # Nobody listens on the relay port: connection refused is temporary, the mail stays queued.
    from tests.conftest import free_port

    down = build(dataclasses.replace(settings, relay_host="127.0.0.1", relay_port=free_port()),
                 parts.engine)
    note = queue_received(down)
    deliver(down)
    after = reload(down, note.id)
    assert (after.state, after.attempts) == ("queued", 1)
    assert after.last_error


def test_refused_attachment_on_a_reply_is_reported_to_the_customer(parts, settings):
    # A reply whose only file is refused threads onto the ticket, and the customer gets a mail
    # naming the file and the reason.
    queue_received(parts, "outlook-new-request-es.eml")
    reply_to = parts.ingestor.reply.address(1001)
    raw = (b"From: Maria Garcia <maria.garcia@ferreteria-lopez.es>\r\nTo: " + reply_to.encode()
           + b"\r\nSubject: Re: factura\r\nMessage-ID: <r1@ferreteria-lopez.es>\r\n"
           b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=XX\r\n\r\n--XX\r\n"
           b"Content-Type: text/plain\r\n\r\nOs mando el programa.\r\n--XX\r\n"
           b"Content-Type: application/octet-stream\r\nContent-Disposition: attachment; "
           b"filename=setup.exe\r\nContent-Transfer-Encoding: base64\r\n\r\n"
           b"TVqQAAMAAAAEAAAA//8AALgAAAAAAAAAQAAAAAAAAAA=\r\n--XX--\r\n")
    queue_id = inbound.enqueue(parts.engine, parts.blobs, raw, channel="file")
    assert parts.ingestor.process_next(queue_id).outcome == "threaded"
    deliver(parts)
    (eml,) = settings.outbox_dir.glob("*-attachments_refused.eml")
    mail = parse_mail(eml.read_bytes())
    assert mail["Subject"].startswith("[#1001] No hemos podido aceptar algunos archivos adjuntos")
    body = mail.get_body(("plain",)).get_content()
    assert "- setup.exe: este tipo de archivo no se admite" in body


def test_unknown_sender_is_told_once_a_day_that_the_mail_was_not_accepted(parts, settings):
    # Two mails from a stranger: one "we could not accept your mail" notice, in Spanish, marked
    # automatic, answering the stranger's mail; the second mail gets no second notice.
    for n, name in enumerate(("unknown-sender-gmail-es.eml", "hotmail-unknown-sender-es.eml",
                              "unknown-sender-gmail-es.eml")):
        raw = load_mail(name)
        if n == 2:  # the same stranger again, with another mail
            raw = raw.replace(b"Message-ID: <CAH4", b"Message-ID: <again-CAH4")
        queue_id = inbound.enqueue(parts.engine, parts.blobs, raw, channel="file")
        assert parts.ingestor.process_next(queue_id).outcome == "rejected"
    deliver(parts)
    notices = [parse_mail(p.read_bytes()) for p in settings.outbox_dir.glob("*refused_sender.eml")]
    recipients = sorted(m["To"].addresses[0].addr_spec for m in notices)
    assert recipients.count("pedro.ruiz.1987@gmail.com") == 1
    pedro = next(m for m in notices if m["To"].addresses[0].addr_spec.startswith("pedro"))
    assert pedro["Subject"] == "No hemos podido aceptar tu correo: Consulta sobre precios"
    assert pedro["Auto-Submitted"] == "auto-generated"
    assert pedro["In-Reply-To"] == "<CAH4n2kR9xYz3pQ7mT1vB8cW0dF5gJ6sL2a@mail.gmail.com>"


def test_a_batch_through_the_relay_records_each_mail_as_sent(relayed, smtp_sink):
    # Three notifications in one batch: each is sent once, and its row keeps exactly the bytes
    # the relay got, the subject those bytes carry, and the sent state.
    sink, _port = smtp_sink
    for name in ("outlook-new-request-es.eml", "thunderbird-exe-and-pdf-en.eml",
                 "apple-mail-screenshot-es.eml"):
        queue_id = inbound.enqueue(relayed.engine, relayed.blobs, load_mail(name), channel="file")
        assert relayed.ingestor.process_next(queue_id).outcome == "created"
    assert deliver(relayed) == 3
    with Session(relayed.engine) as session:
        rows = session.exec(select(Notification)).all()
    received = {parse_mail(raw)["Message-ID"]: raw for _from, _to, raw in sink.messages}
    assert len(rows) == len(received) == 3
    for row in rows:
        assert (row.state, row.attempts, row.last_error) == ("sent", 1, None)
        assert row.sent_at is not None
        assert received[row.message_id].replace(b"\r\n", b"\n") == row.raw.replace(b"\r\n", b"\n")
        mail = parse_mail(row.raw)
        assert mail["Subject"] == row.subject
        assert mail["To"].addresses[0].addr_spec == row.recipient
        assert mail["Content-Language"] == row.language


class FakeClock:
    def __init__(self, now) -> None:
        self.now = now

    def __call__(self):
        return self.now


def test_long_relay_outage_is_retried_for_days_then_kept_for_a_command(relayed, smtp_sink,
                                                                        settings):
    # The relay answers 421 for days (a fake clock jumps from one attempt to the next): the
    # notification is tried again 30 s, 1 min, 2 min ... at most an hour apart and stays queued
    # for the whole retry time (HELPDESK_OUTBOX_RETRY_DAYS, 5); only then is it failed, as
    # expired, with the relay's words. `helpdesk outbox retry` sends it again.
    sink, _port = smtp_sink
    sink.refuse = "421 4.3.2 Service not available, closing transmission channel"
    note = queue_received(relayed)
    clock = relayed.sender.clock = FakeClock(utcnow())
    start, waits = clock.now, []
    while (row := reload(relayed, note.id)).state == "queued":
        if row.attempts:
            waits.append((row.next_attempt_at - clock.now).total_seconds())
            clock.now = row.next_attempt_at
        assert deliver(relayed) == 1
        assert len(waits) < 500
    assert waits[:5] == [30, 60, 120, 240, 480] and max(waits) == 3600
    assert (row.state, row.failure) == ("failed", "expired")
    assert "still failing after 5 day(s)" in row.last_error and "421" in row.last_error
    assert timedelta(days=5) <= clock.now - start < timedelta(days=5, hours=1)
    assert row.attempts == len(waits) + 1 and sink.messages == []

    sink.refuse = None
    relayed.sender.clock = utcnow
    result = CliRunner().invoke(main, ["outbox", "retry"],
                                env={"HELPDESK_DATABASE_URL": settings.database_url,
                                     "HELPDESK_VAR_DIR": str(settings.var_dir)})
    assert result.exit_code == 0 and "1 notification(s) queued again" in result.output
    assert deliver(relayed) == 1
    final = reload(relayed, note.id)
    assert (final.state, final.failure, final.attempts) == ("sent", None, 1)
    assert [parse_mail(raw)["Message-ID"] for _f, _t, raw in sink.messages] == [note.message_id]


def test_outbox_retry_leaves_refusals_alone_unless_named_or_asked(relayed, smtp_sink, settings):
    # A 550 is final: `outbox retry` alone does not send it again; `--refused`, or its id, does.
    sink, _port = smtp_sink
    note = queue_received(relayed)
    sink.refuse = "550 5.1.1 User unknown"
    deliver(relayed)
    env = {"HELPDESK_DATABASE_URL": settings.database_url,
           "HELPDESK_VAR_DIR": str(settings.var_dir)}
    assert "0 notification(s)" in CliRunner().invoke(main, ["outbox", "retry"], env=env).output
    status = CliRunner().invoke(main, ["outbox", "status"], env=env).output
    assert "failed: 1" in status and f"{note.id}  received to" in status and "refused" in status
    assert reload(relayed, note.id).state == "failed"
    assert "1 notification(s)" in CliRunner().invoke(main, ["outbox", "retry", str(note.id)],
                                                     env=env).output
    sink.refuse = None
    deliver(relayed)
    assert reload(relayed, note.id).state == "sent"


class HoldingRelay:
    """Accepts mail at once, except mail to ``held`` which waits until released."""

    def __init__(self, held: str) -> None:
        self.held = held
        self.release = threading.Event()

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        if self.held in envelope.rcpt_tos:
            await asyncio.to_thread(self.release.wait, 30)
        return "250 2.0.0 OK"


def test_each_delivery_is_recorded_as_soon_as_the_relay_accepts_it(settings, directory):
    # Two notifications go out together; the relay accepts María's at once and holds Lucía's:
    # María's is recorded as sent while Lucía's is still on its way, so a crash now could not
    # send María's again.
    relay = HoldingRelay("lucia.martin@clinicadental-sur.com")
    controller = Controller(relay, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        parts = build(dataclasses.replace(settings, relay_host="127.0.0.1",
                                          relay_port=controller.port), directory)
        maria = queue_received(parts, "outlook-new-request-es.eml")
        lucia = queue_received(parts, "thunderbird-exe-and-pdf-en.eml", nth=1)
        sending = threading.Thread(target=deliver, args=(parts,))
        sending.start()
        wait_for(lambda: reload(parts, maria.id).state == "sent", timeout=30)
        assert reload(parts, lucia.id).state == "sending"
        relay.release.set()
        sending.join(30)
        assert reload(parts, lucia.id).state == "sent"
    finally:
        relay.release.set()
        controller.stop()


def test_housekeeping_warns_of_mail_stuck_on_temporary_failures(relayed, smtp_sink, settings,
                                                                 caplog):
    # A notification the relay has refused with 4xx for two hours is named by housekeeping's
    # warning (how many, since when, the last error); one failing for minutes is not yet.
    sink, _port = smtp_sink
    sink.refuse = "451 4.3.0 Mailbox temporarily unavailable"
    note = queue_received(relayed)
    deliver(relayed)
    caplog.set_level(logging.WARNING, logger="gateway.service")
    report_stuck(relayed.engine, settings)
    assert "undelivered" not in caplog.text
    with Session(relayed.engine) as session:
        row = session.get(Notification, note.id)
        row.failing_since = utcnow() - timedelta(hours=2)
        session.add(row)
        session.commit()
    report_stuck(relayed.engine, settings)
    assert "1 notification(s) undelivered after temporary errors for over 1:00:00" in caplog.text
    assert "451" in caplog.text and "helpdesk outbox status" in caplog.text


def test_a_claim_marks_the_oldest_due_and_a_stale_claim_is_taken_again(parts):
    first = queue_received(parts, "outlook-new-request-es.eml")
    second = queue_received(parts, "thunderbird-exe-and-pdf-en.eml", nth=1)
    now = utcnow()
    claimed = outbox.claim_due(parts.engine, "sender-a", 1, now=now)
    assert [(n.id, n.state, n.claimed_by, n.attempts) for n in claimed] == [
        (first.id, "sending", "sender-a", 1)]
    stored = reload(parts, first.id)
    assert (stored.state, stored.claimed_by, stored.attempts) == ("sending", "sender-a", 1)
    assert abs(stored.claimed_at.replace(tzinfo=None) - now.replace(tzinfo=None)) < timedelta(
        seconds=1)
    # The claimed one is left alone while its claim holds; the other is due.
    assert [n.id for n in outbox.claim_due(parts.engine, "sender-b", 5, now=now)] == [second.id]
    assert outbox.claim_due(parts.engine, "sender-c", 5, now=now) == []
    # sender-a died: once its claim is stale, another sender takes the mail, a second attempt.
    later = now + outbox.STALE_CLAIM + timedelta(seconds=1)
    again = outbox.claim_due(parts.engine, "sender-c", 5, now=later)
    assert [(n.id, n.claimed_by, n.attempts) for n in again] == [
        (first.id, "sender-c", 2), (second.id, "sender-c", 2)]
    assert reload(parts, first.id).attempts == 2
