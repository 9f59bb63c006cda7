"""Ingest: real client mails become tickets, replies, or recorded rejections, on both databases."""

from __future__ import annotations

import json

from sqlmodel import Session, col, select

from gateway.service import Parts
from storage import inbound
from storage.models import Attachment, InboundMessage, Message, Notification, Ticket
from tests.conftest import load_mail


def ingest(parts: Parts, name: str):
    queue_id = inbound.enqueue(parts.engine, parts.blobs, load_mail(name), channel="file",
                               source=name)
    outcome = parts.ingestor.process_next(queue_id)
    assert outcome is not None
    return outcome


def test_new_request_from_known_contact_creates_ticket_with_received_notification(parts):
    # An Outlook mail from a contact becomes ticket 1001, its text decoded, a Spanish mail queued.
    outcome = ingest(parts, "outlook-new-request-es.eml")
    assert (outcome.outcome, outcome.ticket) == ("created", 1001)
    assert outcome.sender == "maria.garcia@ferreteria-lopez.es"
    with Session(parts.engine) as session:
        ticket = session.exec(select(Ticket)).one()
        assert ticket.subject == "Error al generar la factura de noviembre"
        assert ticket.status == "new"
        message = session.exec(select(Message)).one()
        assert "código 4012" in message.text
        assert message.message_id.startswith("<AM6PR04MB5781")
        note = session.exec(select(Notification)).one()
        assert (note.event, note.recipient, note.state) == (
            "received", "maria.garcia@ferreteria-lopez.es", "queued")
        assert note.in_reply_to == message.message_id
        assert json.loads(note.context)["ticket_number"] == 1001


def test_reply_with_in_reply_to_threads_onto_the_ticket(parts):
    # The Gmail reply names the Outlook mail in In-Reply-To: same ticket, no new ticket.
    first = ingest(parts, "outlook-new-request-es.eml")
    reply = ingest(parts, "gmail-reply-es-quoted.eml")
    assert (reply.outcome, reply.ticket) == ("threaded", first.ticket)
    with Session(parts.engine) as session:
        assert len(session.exec(select(Ticket)).all()) == 1
        assert len(session.exec(select(Message)).all()) == 2


def test_subject_tag_of_another_organization_opens_a_new_ticket(parts):
    # Lucía (another organization) writes "[#1001]": never threaded onto María's ticket.
    first = ingest(parts, "outlook-new-request-es.eml")
    foreign = ingest(parts, "foreign-org-subject-tag-en.eml")
    assert foreign.outcome == "created"
    assert foreign.ticket != first.ticket
    with Session(parts.engine) as session:
        tickets = {t.number: t.organization_id for t in session.exec(select(Ticket)).all()}
    assert tickets[first.ticket] != tickets[foreign.ticket]


def test_same_mail_twice_is_a_duplicate(parts):
    # Re-delivery of identical bytes records a duplicate pointing at the first ticket.
    first = ingest(parts, "outlook-new-request-es.eml")
    again = ingest(parts, "outlook-new-request-es.eml")
    assert (again.outcome, again.ticket) == ("duplicate", first.ticket)
    with Session(parts.engine) as session:
        assert len(session.exec(select(Ticket)).all()) == 1


def test_unknown_sender_is_rejected_and_recorded(parts):
    # A freemail sender matching no organization: no ticket, the rejection kept in the queue.
    outcome = ingest(parts, "unknown-sender-gmail-es.eml")
    assert (outcome.outcome, outcome.ticket, outcome.reason) == ("rejected", None,
                                                                 "unknown sender")
    with Session(parts.engine) as session:
        row = session.get(InboundMessage, outcome.inbound_id)
        assert (row.state, row.outcome) == ("done", "rejected")
        assert session.exec(select(Ticket)).all() == []


def test_attachments_checked_by_content_and_refusal_reported(parts):
    # The .exe is refused by its bytes, the PDF kept; the received mail lists the refusal.
    outcome = ingest(parts, "thunderbird-exe-and-pdf-en.eml")
    files = {a.filename: a for a in outcome.attachments}
    assert files["setup_citas.exe"].accepted is False
    assert files["setup_citas.exe"].reason == "type_not_allowed"
    assert files["error-report.pdf"].accepted is True
    assert files["error-report.pdf"].type == "application/pdf"
    with Session(parts.engine) as session:
        stored = session.exec(select(Attachment).order_by(col(Attachment.id))).all()
        kept = [a for a in stored if a.accepted]
        assert [a.filename for a in kept] == ["error-report.pdf"]
        assert parts.blobs.get(kept[0].storage_key).startswith(b"%PDF-1.4")
        refused = [a for a in stored if not a.accepted]
        assert refused[0].storage_key is None
        context = json.loads(session.exec(select(Notification)).one().context)
    assert context["refused"] == [{"filename": "setup_citas.exe", "reason": "type_not_allowed"}]


def test_rfc2231_filename_of_apple_mail_screenshot_is_decoded(parts):
    # Apple Mail sends filename*=utf-8''...: stored under its readable name, as a PNG.
    outcome = ingest(parts, "apple-mail-screenshot-es.eml")
    (shot,) = outcome.attachments
    assert shot.filename == "Captura de pantalla 2026-11-24 a las 11.31.02.png"
    assert (shot.type, shot.accepted) == ("image/png", True)


def test_mail_whose_processing_fails_is_kept_with_its_error(parts):
    # A queue row whose raw blob vanished cannot be processed: failed, error kept, queue goes on.
    queue_id = inbound.enqueue(parts.engine, parts.blobs, load_mail("outlook-new-request-es.eml"),
                               channel="file")
    with Session(parts.engine) as session:
        row = session.get(InboundMessage, queue_id)
        parts.blobs.path(row.raw_key).unlink()
    outcome = parts.ingestor.process_next(queue_id)
    assert outcome.outcome == "failed"
    with Session(parts.engine) as session:
        row = session.get(InboundMessage, queue_id)
        assert row.state == "failed"
        assert "FileNotFoundError" in row.error
    assert parts.ingestor.process_next() is None
