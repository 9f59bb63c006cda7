"""Every mail of fixtures/mails gets the outcome fixtures/mails/expected.json gives it.

The manifest says, per mail: which mails come first ("after"), the status its ticket is in
before ("status_before", "resolved_days_ago"), and what must follow: outcome, ticket number,
decoded sender and subject, the subject of the ticket, attachments, the text and the new text of
a reply, statuses after, a linked ticket, and whether the customer is notified.
"""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from sqlmodel import Session, col, func, select

from storage import inbound
from storage.models import Attachment, Message, Notification, utcnow
from storage.tickets import ticket_by_number
from tests.conftest import MAILS, load_mail

MANIFEST: dict[str, dict] = json.loads((MAILS / "expected.json").read_text())


def ingest(parts, name: str):
    queue_id = inbound.enqueue(parts.engine, parts.blobs, load_mail(name), channel="file",
                               source=name)
    outcome = parts.ingestor.process_next(queue_id)
    assert outcome is not None
    return outcome


def set_statuses(parts, spec: dict) -> None:
    with Session(parts.engine) as session:
        for number, status in spec.get("status_before", {}).items():
            ticket = ticket_by_number(session, int(number))
            parts.ingestor.workflow.change_status(session, ticket, status, "agent@example.com")
            if status == "resolved" and "resolved_days_ago" in spec:
                ticket.resolved_at = utcnow() - timedelta(days=spec["resolved_days_ago"])
                session.add(ticket)
        session.commit()


def notification_count(parts) -> int:
    with Session(parts.engine) as session:
        return session.exec(select(func.count()).select_from(Notification)).one()


def test_manifest_covers_every_fixture_mail():
    # No mail in fixtures/mails without its expected outcome, and no outcome without its mail.
    assert sorted(MANIFEST) == sorted(p.name for p in MAILS.glob("*.eml"))
    assert len(MANIFEST) >= 40


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_fixture_mail_gets_its_expected_outcome(parts, name):
    spec = MANIFEST[name]
    for earlier in spec.get("after", []):
        ingest(parts, earlier)
    set_statuses(parts, spec)
    notes_before = notification_count(parts)

    outcome = ingest(parts, name)

    assert outcome.outcome == spec["outcome"], outcome
    if "ticket" in spec:
        assert outcome.ticket == spec["ticket"], outcome
    if "from" in spec:
        assert outcome.sender == spec["from"]
    if "subject" in spec:
        assert outcome.subject == spec["subject"]
    if "reason_contains" in spec:
        assert spec["reason_contains"].lower() in (outcome.reason or "").lower(), outcome.reason
    if "attachments" in spec:
        got = [{"filename": a.filename, "accepted": a.accepted, "reason": a.reason,
                "type": a.type} for a in outcome.attachments]
        wanted = [{k: a[k] for k in ("filename", "accepted", "reason", "type") if k in a}
                  for a in spec["attachments"]]
        assert [{k: g[k] for k in w} for g, w in zip(got, wanted, strict=False)] == wanted
        assert len(got) == len(wanted), got
    if "notification" in spec:
        assert (notification_count(parts) > notes_before) is spec["notification"]

    with Session(parts.engine) as session:
        message = session.exec(select(Message).where(Message.inbound_id == outcome.inbound_id)
                               ).first()
        for text in spec.get("text_contains", []):
            assert message is not None and text in message.text, text
        for text in spec.get("text_excludes", []):
            assert message is not None and text not in message.text, text
        for text in spec.get("new_text_contains", []):
            assert message is not None and text in message.new_text, (text, message.new_text)
        for text in spec.get("new_text_excludes", []):
            assert message is not None and text not in message.new_text, (text, message.new_text)
        inline = [a for a in spec.get("attachments", []) if a.get("inline")]
        if inline:
            stored = session.exec(select(Attachment).where(
                Attachment.message_id == message.id, col(Attachment.content_id).is_not(None))
            ).all()
            assert {a.filename for a in stored} >= {a["filename"] for a in inline}
        for number, status in spec.get("status_after", {}).items():
            assert ticket_by_number(session, int(number)).status == status
        if "ticket_subject" in spec:
            assert ticket_by_number(session, outcome.ticket).subject == spec["ticket_subject"]
        if "linked_to" in spec:
            new = ticket_by_number(session, outcome.ticket)
            old = ticket_by_number(session, spec["linked_to"])
            assert new.linked_ticket_id == old.id
