"""Queries for the contacts page: an organization's people, and who waits to be verified."""

from __future__ import annotations

from dataclasses import dataclass

from sqlmodel import Session, col, select

from storage.models import Contact, Ticket, VerificationRequest


def contacts_of(session: Session, organization_id: int) -> list[Contact]:
    """The organization's contacts, verified ones (active and not), by name."""
    return list(session.exec(
        select(Contact).where(Contact.organization_id == organization_id,
                              Contact.state == "verified")
        .order_by(col(Contact.active).desc(), col(Contact.name), col(Contact.id))).all())


def contact_of(session: Session, organization_id: int, contact_id: int) -> Contact | None:
    """A contact, if it belongs to that organization (another's is answered like a missing one)."""
    contact = session.get(Contact, contact_id)
    return contact if contact is not None and contact.organization_id == organization_id \
        else None


@dataclass(frozen=True)
class PendingRequest:
    """A person waiting to be verified by a manager, and the tickets held until then."""

    request: VerificationRequest
    contact: Contact
    held: list[Ticket]


def pending_requests(session: Session, organization_id: int) -> list[PendingRequest]:
    """The organization's open verification requests, oldest first, one per person."""
    rows = session.exec(
        select(VerificationRequest, Contact)
        .join(Contact, col(Contact.id) == VerificationRequest.contact_id)
        .where(VerificationRequest.organization_id == organization_id,
               VerificationRequest.state == "pending")
        .order_by(col(VerificationRequest.id))).all()
    first: dict[int, tuple[VerificationRequest, Contact]] = {}
    for request, contact in rows:
        assert contact.id is not None
        first.setdefault(contact.id, (request, contact))
    held: dict[int, list[Ticket]] = {contact_id: [] for contact_id in first}
    if first:
        for ticket in session.exec(select(Ticket).where(col(Ticket.requester_id).in_(list(first)),
                                                        Ticket.status == "held")
                                   .order_by(col(Ticket.id))):
            held[ticket.requester_id].append(ticket)
    return [PendingRequest(request, contact, held[contact_id])
            for contact_id, (request, contact) in first.items()]


def request_of(session: Session, organization_id: int,
               request_id: int) -> VerificationRequest | None:
    """A verification request, if it belongs to that organization."""
    request = session.get(VerificationRequest, request_id)
    return request if request is not None and request.organization_id == organization_id \
        else None
