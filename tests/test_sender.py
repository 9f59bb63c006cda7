"""Outbox delivery: to a folder without relay, or through a real SMTP relay with retries."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest
from sqlmodel import Session, select

from gateway.service import build
from storage import inbound
from storage.models import Notification, utcnow
from tests.conftest import deliver, load_mail, parse_mail


def queue_received(parts, name: str = "outlook-new-request-es.eml") -> Notification:
    queue_id = inbound.enqueue(parts.engine, parts.blobs, load_mail(name), channel="file")
    assert parts.ingestor.process_next(queue_id).outcome == "created"
    with Session(parts.engine) as session:
        return session.exec(select(Notification)).one()


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
