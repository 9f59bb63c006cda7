"""storage.db.insert_now: the plain INSERT the ingest path writes its rows with, run by the driver
itself, must write what the ORM would, give the row its id, and fail as SQLAlchemy would."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from storage.db import insert_now, plain_row, transaction
from storage.models import Contact, Notification, StatusChange, Ticket


def test_rows_are_written_as_given_with_their_ids_and_types(directory):
    # A ticket kept in the session, and a notification (datetime, JSON text, NULLs) written
    # once: read back through the ORM, every column is what was given.
    engine = directory
    with transaction(engine) as session:
        contact = session.exec(select(Contact).order_by(col(Contact.id))).first()
        assert contact is not None and contact.id is not None
        ticket = insert_now(session, Ticket(
            number=4242, organization_id=contact.organization_id, requester_id=contact.id,
            subject="Factura ñ €", status="new", channel="email", priority="normal"), keep=True)
        assert ticket.id is not None and ticket in session
        ticket.status = "in_progress"  # changed later in the same transaction, as ingest does
        due = datetime(2026, 12, 1, 9, 30, 15, 123456, tzinfo=UTC)
        sent = insert_now(session, Notification(
            ticket_id=ticket.id, contact_id=contact.id, event="received",
            recipient=contact.email, language="es", context='{"a": "ñ"}',
            message_id="<x@example.com>", in_reply_to=None, references=None,
            next_attempt_at=due))
        ids = (ticket.id, sent.id)
    with Session(engine) as session:
        stored = session.get(Ticket, ids[0])
        queued = session.get(Notification, ids[1])
        assert stored is not None and queued is not None
        assert (stored.number, stored.subject, stored.status) == (4242, "Factura ñ €",
                                                                  "in_progress")
        assert (queued.next_attempt_at, queued.context, queued.in_reply_to) == (
            due, '{"a": "ñ"}', None)


def test_a_refused_row_raises_sqlalchemys_error_and_rolls_back(directory):
    # A history entry for a ticket that does not exist: the database's refusal comes out as
    # SQLAlchemy's IntegrityError (what the batch's retry and the temporary-error rules read),
    # and the transaction rolls back with nothing written.
    engine = directory
    with pytest.raises(IntegrityError), transaction(engine) as session:
        insert_now(session, StatusChange(ticket_id=987654, from_status=None, to_status="new",
                                         actor="test", note=""))
    with Session(engine) as session:
        assert session.exec(select(StatusChange)).all() == []


def test_a_plain_row_holds_what_the_constructor_would():
    # plain_row skips SQLAlchemy's per-field instrumentation, not the model's defaults: the
    # same values as the constructor (timestamps aside), and a missing or unknown field is
    # an error rather than a row that fails later.
    given = {"ticket_id": 1, "contact_id": 2, "event": "received", "recipient": "a@example.com",
             "message_id": "<m@example.com>", "next_attempt_at": datetime.now(UTC)}
    built, plain = Notification(**given), plain_row(Notification, **given)

    def values(row: Notification) -> dict:
        return {k: v for k, v in row.__dict__.items()
                if k not in {"_sa_instance_state", "created_at"}}

    assert values(plain) == values(built)
    assert (plain.state, plain.language, plain.attempts) == ("queued", "es", 0)
    with pytest.raises(TypeError, match="needs event"):
        plain_row(Notification, **{k: v for k, v in given.items() if k != "event"})
    with pytest.raises(TypeError, match="no field colour"):
        plain_row(Notification, **given, colour="red")
