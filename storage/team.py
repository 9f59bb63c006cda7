"""What the support team reads: tickets found by filters, and one ticket's whole record (thread,
files, status history, the mails sent and how their delivery went). The CLI shows these; the
team's API and console will too."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlmodel import Session, col, func, or_, select

from storage.models import (
    STATUS_GROUPS,
    Agent,
    Application,
    Attachment,
    Contact,
    InboundMessage,
    Message,
    Notification,
    Organization,
    SlaClock,
    StatusChange,
    Ticket,
    aware,
)


@dataclass(frozen=True)
class TicketFilter:
    statuses: Sequence[str] = ()
    organization_code: str | None = None
    application: str | None = None
    text: str = ""  # words all found in the subject or in one message's text
    created_from: datetime | None = None
    created_to: datetime | None = None
    updated_from: datetime | None = None
    updated_to: datetime | None = None
    priorities: Sequence[str] = ()
    assignee: str | None = None  # an agent's email, or "none" for tickets nobody has
    due_before: datetime | None = None  # an SLA clock running, due before this moment
    breached: bool | None = None  # an SLA clock breached (True) or none (False)


@dataclass(frozen=True)
class FoundTicket:
    ticket: Ticket
    organization: Organization
    requester: Contact
    due_at: datetime | None = None  # the soonest due time of its running SLA clocks


def find_tickets(session: Session, wanted: TicketFilter, *, limit: int = 50,
                 before: tuple[datetime, int] | None = None,
                 sort: str = "updated") -> list[FoundTicket]:
    """Tickets matching every filter: the most recently updated first, or (``sort="due"``)
    those with an SLA clock running, the soonest due first (their next due time on
    ``FoundTicket.due_at``). ``before`` is where the previous page ended (its last ticket's
    update or due time, and id), for cursor pagination."""
    due = (select(SlaClock.ticket_id, func.min(SlaClock.due_at).label("due_at"))
           .where(SlaClock.state == "running").group_by(col(SlaClock.ticket_id)).subquery())
    query = _filtered(select(Ticket, Organization, Contact, due.c.due_at)
                      .join(Organization, col(Organization.id) == Ticket.organization_id)
                      .join(Contact, col(Contact.id) == Ticket.requester_id)
                      .join(due, due.c.ticket_id == Ticket.id, isouter=sort != "due"), wanted)
    if sort == "due":
        if before is not None:
            moment, ticket_id = before
            query = query.where(or_(due.c.due_at > moment,
                                    (due.c.due_at == moment) & (col(Ticket.id) > ticket_id)))
        query = query.order_by(due.c.due_at, col(Ticket.id))
    else:
        if before is not None:
            moment, ticket_id = before
            query = query.where(or_(col(Ticket.updated_at) < moment,
                                    (col(Ticket.updated_at) == moment)
                                    & (col(Ticket.id) < ticket_id)))
        query = query.order_by(col(Ticket.updated_at).desc(), col(Ticket.id).desc())
    return [FoundTicket(ticket, organization, requester,
                        aware(due_at) if due_at is not None else None)
            for ticket, organization, requester, due_at in session.exec(query.limit(limit))]


def count_tickets(session: Session, wanted: TicketFilter) -> int:
    query = _filtered(select(func.count(col(Ticket.id))).select_from(Ticket)
                      .join(Organization, col(Organization.id) == Ticket.organization_id), wanted)
    return int(session.exec(query).one())


def _filtered(query: Any, wanted: TicketFilter) -> Any:
    unknown = set(wanted.statuses) - set(STATUS_GROUPS) - {"held"}
    if unknown:
        raise ValueError(f"unknown status {sorted(unknown)[0]!r}")
    if wanted.statuses:
        query = query.where(col(Ticket.status).in_(list(wanted.statuses)))
    if wanted.organization_code:
        query = query.where(Organization.code == wanted.organization_code)
    if wanted.priorities:
        query = query.where(col(Ticket.priority).in_(list(wanted.priorities)))
    if wanted.assignee == "none":
        query = query.where(col(Ticket.assignee_id).is_(None))
    elif wanted.assignee:
        query = query.join(Agent, col(Agent.id) == Ticket.assignee_id).where(
            Agent.email == wanted.assignee.strip().lower())
    if wanted.application:
        query = query.join(Application, col(Application.id) == Ticket.application_id).where(
            func.lower(Application.name) == wanted.application.strip().lower())
    for word in wanted.text.lower().split()[:8]:
        pattern = "%" + word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        in_messages = select(Message.id).where(
            Message.ticket_id == Ticket.id,
            func.lower(Message.text).like(pattern, escape="\\")).exists()
        query = query.where(or_(func.lower(Ticket.subject).like(pattern, escape="\\"),
                                in_messages))
    if wanted.due_before is not None:
        query = query.where(select(SlaClock.id).where(
            SlaClock.ticket_id == Ticket.id, SlaClock.state == "running",
            col(SlaClock.due_at) < wanted.due_before).exists())
    if wanted.breached is not None:
        breached = select(SlaClock.id).where(SlaClock.ticket_id == Ticket.id,
                                             col(SlaClock.breached)).exists()
        query = query.where(breached if wanted.breached else ~breached)
    for column, low, high in ((Ticket.created_at, wanted.created_from, wanted.created_to),
                              (Ticket.updated_at, wanted.updated_from, wanted.updated_to)):
        if low is not None:
            query = query.where(col(column) >= low)
        if high is not None:
            query = query.where(col(column) < high)
    return query


@dataclass
class TicketRecord:
    ticket: Ticket
    organization: Organization
    requester: Contact
    application: Application | None
    messages: list[Message] = field(default_factory=list)
    attachments: list[Attachment] = field(default_factory=list)
    history: list[StatusChange] = field(default_factory=list)
    notifications: list[Notification] = field(default_factory=list)
    # Per message that came by mail: its inbound row (sender authentication verdict).
    inbound: dict[int, InboundMessage] = field(default_factory=dict)


def ticket_record(session: Session, number: int) -> TicketRecord | None:
    ticket = session.exec(select(Ticket).where(Ticket.number == number)).first()
    if ticket is None:
        return None
    organization = session.get(Organization, ticket.organization_id)
    requester = session.get(Contact, ticket.requester_id)
    assert organization is not None and requester is not None
    application = (session.get(Application, ticket.application_id)
                   if ticket.application_id is not None else None)
    messages = list(session.exec(select(Message).where(Message.ticket_id == ticket.id)
                                 .order_by(col(Message.created_at), col(Message.id))))
    arrivals = {m.inbound_id: m.id for m in messages if m.inbound_id is not None}
    rows = session.exec(select(InboundMessage).where(
        col(InboundMessage.id).in_(list(arrivals)))).all() if arrivals else []
    return TicketRecord(
        ticket, organization, requester, application, messages=messages,
        inbound={arrivals[row.id]: row for row in rows if row.id is not None},
        attachments=list(session.exec(select(Attachment)
                                      .where(Attachment.ticket_id == ticket.id)
                                      .order_by(col(Attachment.id)))),
        history=list(session.exec(select(StatusChange)
                                  .where(StatusChange.ticket_id == ticket.id)
                                  .order_by(col(StatusChange.id)))),
        notifications=list(session.exec(select(Notification)
                                        .where(Notification.ticket_id == ticket.id)
                                        .order_by(col(Notification.id)))),
    )
