"""The support team's actions on tickets, each recorded with the agent (and token) who made it.

The rules of statuses and mails stay in ``gateway.workflow``: a status change here is the
workflow's ``move``, an answer its ``agent_reply``. This module adds what only the team does
(assign, prioritise, internal notes), the check that nobody overwrites a change they have not
seen (``expect_version``), and the record of who did what (``TeamAction``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlmodel import Session, col, select

from gateway.workflow import TransitionError, Workflow
from storage.models import (
    PRIORITIES,
    Agent,
    Application,
    Message,
    Notification,
    TeamAction,
    Ticket,
    utcnow,
)
from storage.tickets import FileRecord


class TeamError(ValueError):
    """An action that cannot be done as asked (unknown assignee, priority, application...)."""


class StaleTicket(TeamError):
    """The ticket changed since the agent read it (its version is not the one they name)."""

    def __init__(self, number: int, expected: int, current: int) -> None:
        super().__init__(f"ticket {number} changed since it was read: version {current}, "
                         f"not {expected}")
        self.current = current


@dataclass(frozen=True)
class Actor:
    """Who acts: an agent, through a token (the API) or not (console, CLI)."""

    agent: Agent
    token_id: int | None = None

    @property
    def name(self) -> str:
        return self.agent.name

    @property
    def agent_id(self) -> int:
        assert self.agent.id is not None
        return self.agent.id


def ticket_for_change(session: Session, number: int) -> Ticket | None:
    """A ticket to change, locked against other writers until the transaction ends (PostgreSQL;
    SQLite's writers take turns anyway), so a version check stays true until the write."""
    query = select(Ticket).where(Ticket.number == number)
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update()
    return session.exec(query).first()


def expect_version(ticket: Ticket, expected: int | None) -> None:
    if expected is not None and ticket.version != expected:
        raise StaleTicket(ticket.number, expected, ticket.version)


def record(session: Session, actor: Actor, action: str, ticket: Ticket | None = None,
           **detail: Any) -> None:
    session.add(TeamAction(ticket_id=ticket.id if ticket is not None else None,
                           agent_id=actor.agent_id, token_id=actor.token_id, action=action,
                           detail=json.dumps(detail, ensure_ascii=False, default=str)))


def move(session: Session, workflow: Workflow, ticket: Ticket, actor: Actor, to_status: str,
         *, note: str = "", planned_for: date | None = None,
         request: str | None = None) -> Notification | None:
    """A status change through the workflow's transitions (TransitionError if impossible)."""
    from_status = ticket.status
    mail = workflow.move(session, ticket, to_status, actor=actor.name, note=note,
                         planned_for=planned_for, request=request)
    record(session, actor, "status", ticket, from_status=from_status, to_status=to_status,
           note=note, planned_for=planned_for, request=request)
    return mail


def reply(session: Session, workflow: Workflow, ticket: Ticket, actor: Actor,
          text: str, files: Sequence[FileRecord] = ()) -> Notification:
    """An answer to the customer, kept on the thread and mailed to the requester with its
    files. Files pass the rules of mail attachments; one refused refuses the answer (the
    agent sends it again without it), so the customer never gets half of what was meant."""
    if not text.strip():
        raise TeamError("an answer needs its text")
    refused = [f"{f.filename}: {f.reason}" for f in files if not f.accepted]
    if refused:
        raise TeamError("files refused (the rules of mail attachments): " + "; ".join(refused))
    if ticket.status in ("held", "closed", "cancelled"):
        raise TransitionError(f"ticket {ticket.number} is {ticket.status}: not answered")
    mail = workflow.agent_reply(session, ticket, agent_name=actor.name, text=text.strip(),
                                files=files)
    message = session.exec(select(Message).where(Message.notification_id == mail.id)).one()
    message.author_agent_id = actor.agent_id
    session.add(message)
    record(session, actor, "reply", ticket, notification=mail.id,
           files=[f.filename for f in files])
    return mail


def note(session: Session, ticket: Ticket, actor: Actor, text: str) -> Message:
    """An internal note: on the ticket for the team, never shown to the customer nor mailed."""
    if not text.strip():
        raise TeamError("a note needs its text")
    assert ticket.id is not None
    message = Message(ticket_id=ticket.id, direction="out", channel="note", internal=True,
                      author_agent_id=actor.agent_id, from_address=actor.agent.email,
                      subject=ticket.subject, text=text.strip(), new_text=text.strip())
    session.add(message)
    ticket.updated_at = utcnow()
    session.add(ticket)
    record(session, actor, "note", ticket)
    session.flush()
    return message


_UNSET: Any = object()


def update(session: Session, ticket: Ticket, actor: Actor, *, priority: str | None = None,
           application: str | None = _UNSET, assignee: str | None = _UNSET) -> list[str]:
    """Set priority, application (by name; None clears it) and assignee (an active agent's
    email; None unassigns). What changed, by field name."""
    changed: dict[str, Any] = {}
    if priority is not None and priority != ticket.priority:
        if priority not in PRIORITIES:
            raise TeamError(f"priority must be one of {', '.join(PRIORITIES)}")
        ticket.priority = changed["priority"] = priority
    if application is not _UNSET:
        found_id = None
        if application is not None:
            found = session.exec(select(Application).where(
                Application.name == application, col(Application.active))).first()
            if found is None:
                raise TeamError(f"no active application {application!r}")
            found_id = found.id
        if found_id != ticket.application_id:
            ticket.application_id = found_id
            changed["application"] = application
    if assignee is not _UNSET:
        agent_id = None
        if assignee is not None:
            agent = session.exec(select(Agent).where(
                Agent.email == assignee.strip().lower(), col(Agent.active))).first()
            if agent is None:
                raise TeamError(f"no active agent {assignee!r}")
            agent_id = agent.id
        if agent_id != ticket.assignee_id:
            ticket.assignee_id = agent_id
            changed["assignee"] = assignee
    if changed:
        ticket.updated_at = utcnow()
        session.add(ticket)
        record(session, actor, "update", ticket, **changed)
    return sorted(changed)
