"""Queries on organizations, contacts and tickets, each one indexed."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import bindparam, or_, update
from sqlmodel import Session, col, func, select

from storage.models import (
    COMPLETED_STATUSES,
    OPEN_STATUSES,
    Attachment,
    Contact,
    Counter,
    Message,
    Notification,
    Organization,
    OrganizationDomain,
    Ticket,
)

# The statements ingest runs for every mail, built once (building one costs more than
# running it on SQLite); their values are bound at each run.
_NEXT_TICKET_NUMBER = (update(Counter).where(col(Counter.name) == "ticket")
                       .values(value=Counter.value + 1).returning(Counter.value))
_CONTACT_BY_EMAIL = select(Contact).where(Contact.email == bindparam("email"))
_MESSAGES_FROM_SINCE = select(func.count()).select_from(Message).where(
    col(Message.from_address) == bindparam("address"),
    col(Message.created_at) >= bindparam("since"))
_TICKETS_BY_MESSAGE_IDS = select(Ticket).where(or_(
    col(Ticket.id).in_(select(Message.ticket_id).where(
        col(Message.message_id).in_(bindparam("ids", expanding=True)))),
    col(Ticket.id).in_(select(Notification.ticket_id).where(
        col(Notification.message_id).in_(bindparam("ids", expanding=True))))))

def next_ticket_number(session: Session) -> int:
    """Take the next human ticket number inside the caller's transaction (a plain statement on
    the session's connection: nothing of the session needs flushing for it)."""
    return int(session.connection().execute(_NEXT_TICKET_NUMBER).scalar_one())


def contact_by_email(session: Session, email: str) -> Contact | None:
    return session.exec(_CONTACT_BY_EMAIL, params={"email": email.strip().lower()}).first()


def contacts_by_email(session: Session, emails: Sequence[str]) -> dict[str, Contact | None]:
    """Each address (in lower case, as contacts are kept) and its contact, or None."""
    wanted = {email.strip().lower() for email in emails}
    found: dict[str, Contact | None] = dict.fromkeys(wanted)
    if wanted:
        for contact in session.exec(select(Contact).where(col(Contact.email).in_(wanted))):
            found[contact.email] = contact
    return found


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
    return list(session.exec(_TICKETS_BY_MESSAGE_IDS, params={"ids": list(message_ids)}).all())


# The customer-area groups of tickets (DESIGN "Statuses"): "to_rate" holds the tickets that
# can take a rating, rated or still waiting for one (closed but unrated included).
RATEABLE = ("resolved", "closed")
GROUPS = {"open": OPEN_STATUSES, "completed": COMPLETED_STATUSES, "to_rate": RATEABLE}


@dataclass(frozen=True)
class TicketPage:
    """One page of a ticket list, newest first, and how many there are in all."""

    tickets: list[Ticket]
    total: int
    page: int
    per_page: int

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.per_page))


def ticket_page(session: Session, organization_id: int, group: str, *, page: int = 1,
                per_page: int = 25, search: str = "") -> TicketPage:
    """A page of the organization's tickets of a group, optionally those whose number is
    ``search`` (``1042``, ``#1042``) or whose subject has every word of it."""
    if group not in GROUPS:
        raise ValueError(f"unknown ticket group {group!r}")
    where = [col(Ticket.organization_id) == organization_id,
             col(Ticket.status).in_(GROUPS[group])]
    words = search.strip().lstrip("#").strip()
    if words.isdigit() and len(words) <= 9:
        where.append(col(Ticket.number) == int(words))
    elif words:
        for word in search.lower().split()[:8]:
            escaped = word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            where.append(func.lower(Ticket.subject).like(f"%{escaped}%", escape="\\"))
    total = int(session.exec(select(func.count()).select_from(Ticket).where(*where)).one())
    page = max(1, min(page, max(1, -(-total // per_page))))
    tickets = session.exec(select(Ticket).where(*where)
                           .order_by(col(Ticket.created_at).desc(), col(Ticket.id).desc())
                           .offset((page - 1) * per_page).limit(per_page)).all()
    return TicketPage(list(tickets), total, page, per_page)


def unrated_count(session: Session, organization_id: int) -> int:
    """Tickets of an organization waiting for a rating: resolved or closed, and unrated."""
    query = select(func.count()).select_from(Ticket).where(
        Ticket.organization_id == organization_id, col(Ticket.status).in_(RATEABLE),
        col(Ticket.rating).is_(None))
    return int(session.exec(query).one())


def messages_from_since(session: Session, address: str, since: datetime) -> int:
    """How many messages this sender got stored since a moment (the flood rule's count),
    including those stored earlier in the same transaction and not written yet (counted in
    the session rather than flushed for the count: a batch of mails flushes less)."""
    written = int(session.connection().execute(
        _MESSAGES_FROM_SINCE, {"address": address, "since": since}).scalar_one())
    return written + sum(1 for item in session.new if isinstance(item, Message)
                         and item.from_address == address and item.created_at >= since)


def messages_from_each_since(session: Session, addresses: Sequence[str],
                             since: datetime) -> dict[str, int]:
    """messages_from_since for several senders at once (messages written so far)."""
    found = dict.fromkeys(addresses, 0)
    if addresses:
        found.update(session.connection().execute(
            select(Message.from_address, func.count()).where(
                col(Message.from_address).in_(list(addresses)),
                col(Message.created_at) >= since).group_by(Message.from_address)).all())
    return found


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


@dataclass(frozen=True)
class FileRecord:
    """A file of a message, checked: where it is stored if accepted, why not if refused."""

    filename: str
    type: str
    size: int
    sha256: str
    accepted: bool
    reason: str | None
    storage_key: str | None
    content_id: str | None


def add_files(session: Session, message: Message, files: Sequence[FileRecord]) -> None:
    """A message's files on its ticket: accepted ones with their stored blob, refused ones
    with the reason. The message is flushed for its id if it has files and none yet."""
    if files and message.id is None:
        session.flush()
    assert message.id is not None or not files
    for item in files:
        session.add(Attachment(
            message_id=message.id, ticket_id=message.ticket_id, filename=item.filename,
            content_type=item.type[:127], size=item.size, sha256=item.sha256,
            storage_key=item.storage_key, content_id=item.content_id, accepted=item.accepted,
            reason=item.reason))
