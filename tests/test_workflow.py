"""Status workflow: allowed transitions, history, and the customer's mails threading together."""

from __future__ import annotations

import json
from datetime import date

import pytest
from sqlmodel import Session, col, select

from gateway.workflow import TransitionError
from storage import inbound
from storage.models import Message, Notification, StatusChange
from storage.tickets import ticket_by_number
from tests.conftest import deliver, load_mail, parse_mail


@pytest.fixture
def ticket_1001(parts):
    queue_id = inbound.enqueue(parts.engine, parts.blobs,
                               load_mail("outlook-new-request-es.eml"), channel="file")
    assert parts.ingestor.process_next(queue_id).ticket == 1001
    return 1001


def move(parts, number, status, **kwargs):
    with Session(parts.engine) as session:
        ticket = ticket_by_number(session, number)
        note = parts.ingestor.workflow.move(session, ticket, status, actor="Laura", **kwargs)
        session.commit()
        return note


def events(parts) -> list[tuple[str, dict]]:
    with Session(parts.engine) as session:
        rows = session.exec(select(Notification).order_by(col(Notification.id))).all()
        return [(row.event, json.loads(row.context)) for row in rows]


def test_agent_status_changes_are_recorded_with_who_and_why(parts, ticket_1001):
    # Each change leaves a StatusChange with the agent and the note.
    move(parts, 1001, "qualified", note="Facturación, prioridad alta")
    move(parts, 1001, "in_progress")
    with Session(parts.engine) as session:
        history = session.exec(select(StatusChange).order_by(col(StatusChange.id))).all()
    assert [(h.from_status, h.to_status) for h in history] == [
        (None, "new"), ("new", "qualified"), ("qualified", "in_progress")]
    assert (history[1].actor, history[1].note) == ("Laura", "Facturación, prioridad alta")


def test_each_mailed_status_queues_its_event_and_silent_ones_do_not(parts, ticket_1001):
    # qualified, planned (with its date) and awaiting_customer (with the request) are mailed;
    # pending is not.
    move(parts, 1001, "qualified")
    move(parts, 1001, "pending")
    move(parts, 1001, "planned", planned_for=date(2026, 12, 3))
    move(parts, 1001, "awaiting_customer", request="La versión del programa")
    names = [event for event, _ in events(parts)]
    assert names == ["received", "qualified", "planned", "awaiting_customer"]
    contexts = dict(events(parts))
    assert contexts["planned"]["planned_for"] == "2026-12-03"
    assert contexts["awaiting_customer"]["request"] == "La versión del programa"


@pytest.mark.parametrize(("setup", "target", "kwargs"), [
    (["cancelled"], "in_progress", {}),
    ([], "planned", {}),
    ([], "awaiting_customer", {"request": "  "}),
    ([], "closed", {}),
])
def test_impossible_or_incomplete_transitions_are_refused(parts, ticket_1001, setup, target,
                                                         kwargs):
    # Cancelled is final, planned needs a date, awaiting-customer what we need, new cannot close.
    for status in setup:
        move(parts, 1001, status)
    with pytest.raises(TransitionError):
        move(parts, 1001, target, **kwargs)


def test_agent_reply_is_on_the_thread_and_mailed(parts, ticket_1001):
    # The agent's answer is a message of the ticket and an "agent_reply" mail with its text.
    with Session(parts.engine) as session:
        ticket = ticket_by_number(session, 1001)
        parts.ingestor.workflow.agent_reply(session, ticket, agent_name="Laura",
                                            text="Ya está corregido.")
        session.commit()
        out = session.exec(select(Message).where(Message.direction == "out")).one()
    assert (out.channel, out.text) == ("agent", "Ya está corregido.")
    event, context = events(parts)[-1]
    assert (event, context["reply_text"], context["agent_name"]) == (
        "agent_reply", "Ya está corregido.", "Laura")


def test_every_mail_of_a_ticket_threads_onto_the_previous_one(parts, settings, ticket_1001):
    # received → qualified → agent reply: each answers the mail before it, and References
    # carry the chain back to the customer's first mail.
    move(parts, 1001, "qualified")
    with Session(parts.engine) as session:
        parts.ingestor.workflow.agent_reply(session, ticket_by_number(session, 1001),
                                            agent_name="Laura", text="Hola")
        session.commit()
    deliver(parts)
    mails = [parse_mail(p.read_bytes()) for p in sorted(settings.outbox_dir.glob("*.eml"))]
    assert len(mails) == 3
    first = "<AM6PR04MB5781C0D2B4E1F5A9E3B7C1D2A3F40@AM6PR04MB5781.eurprd04.prod.outlook.com>"
    assert mails[0]["In-Reply-To"] == first
    for earlier, later in zip(mails, mails[1:], strict=False):
        assert later["In-Reply-To"] == earlier["Message-ID"]
        assert first in later["References"].split()
        assert earlier["Message-ID"] in later["References"].split() + [later["In-Reply-To"]]
    assert all(m["Subject"].startswith("[#1001] ") for m in mails)
    assert all(m["Auto-Submitted"] == "auto-generated" for m in mails)
