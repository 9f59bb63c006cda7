"""Queries on organizations, contacts and tickets, each one indexed."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import or_, update
from sqlmodel import Session, col, func, select

from storage.models import (
    COMPLETED_STATUSES,
    OPEN_STATUSES,
    Contact,
    Counter,
    Message,
    Notification,
    Organization,
    OrganizationDomain,
    Ticket,
)


def next_ticket_number(session: Session) -> int:
    """Take the next human ticket number inside the caller's transaction."""
    result = session.execute(
        update(Counter)
        .where(col(Counter.name) == "ticket")
        .values(value=Counter.value + 1)
        .returning(Counter.value)
    )
    return int(result.scalar_one())


def contact_by_email(session: Session, email: str) -> Contact | None:
    return session.exec(select(Contact).where(Contact.email == email.strip().lower())).first()


def managers_of(session: Session, organization_id: int) -> list[Contact]:
    """The active, verified managers of an organization: who verifies senders and gets the
    set-password links."""
    return list(session.exec(select(Contact).where(
        Contact.organization_id == organization_id, col(Contact.is_manager),
        col(Contact.active), Contact.state == "verified").order_by(col(Contact.id))).all())


def organization_id_for_domain(session: Session, domain: str) -> int | None:
    row = session.get(OrganizationDomain, domain.strip().lower())
    return row.organization_id if row else None


def ticket_by_number(session: Session, number: int) -> Ticket | None:
    return session.exec(select(Ticket).where(Ticket.number == number)).first()


def ticket_by_message_ids(session: Session, message_ids: Sequence[str]) -> list[Ticket]:
    """Tickets of messages we received or sent with one of these Message-IDs."""
    if not message_ids:
        return []
    ids = list(message_ids)
    received = select(Message.ticket_id).where(col(Message.message_id).in_(ids))
    sent = select(Notification.ticket_id).where(col(Notification.message_id).in_(ids))
    query = select(Ticket).where(or_(col(Ticket.id).in_(received), col(Ticket.id).in_(sent)))
    return list(session.exec(query).all())


def tickets_of_organization(session: Session, organization_id: int, group: str) -> list[Ticket]:
    """The customer-area lists: open, completed, or to rate (completed and rated or rateable)."""
    query = select(Ticket).where(Ticket.organization_id == organization_id)
    if group == "open":
        query = query.where(col(Ticket.status).in_(OPEN_STATUSES))
    elif group == "completed":
        query = query.where(col(Ticket.status).in_(COMPLETED_STATUSES))
    elif group == "to_rate":
        query = query.where(col(Ticket.status) == "resolved")
    else:
        raise ValueError(f"unknown ticket group {group!r}")
    return list(session.exec(query.order_by(col(Ticket.created_at).desc())).all())


def unrated_count(session: Session, organization_id: int) -> int:
    """Resolved tickets of an organization that nobody has rated yet."""
    query = select(func.count()).select_from(Ticket).where(
        Ticket.organization_id == organization_id, Ticket.status == "resolved",
        col(Ticket.rating).is_(None))
    return int(session.exec(query).one())


def messages_from_since(session: Session, address: str, since: datetime) -> int:
    """How many messages this sender got stored since a moment (the flood rule's count)."""
    query = select(func.count()).select_from(Message).where(
        col(Message.from_address) == address, col(Message.created_at) >= since
    )
    return int(session.exec(query).one())


def notifications_by_message_ids(
    session: Session, message_ids: Sequence[str]
) -> list[Notification]:
    if not message_ids:
        return []
    query = select(Notification).where(col(Notification.message_id).in_(list(message_ids)))
    return list(session.exec(query).all())


def catchall_organization(session: Session, code: str) -> Organization:
    """The organization that collects accepted mail from senders matching no client."""
    org = session.exec(select(Organization).where(Organization.code == code)).first()
    if org is None:
        org = Organization(code=code, tax_id="-", name="Sin clasificar")
        session.add(org)
        session.flush()
    return org
