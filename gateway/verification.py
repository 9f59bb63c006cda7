"""Unknown senders of a known organization: a manager's approval or rejection, and what follows.

DESIGN "Unknown senders": approval makes the sender a verified contact and releases the held
tickets (they become new, and the sender gets the usual "received" mail with the ticket number);
rejection marks the sender rejected and cancels the held tickets, with no mail to the sender, so
an impostor learns nothing. The first decision wins; later links say who decided and when.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlmodel import Session, col, select

from gateway.workflow import Workflow
from storage.models import Contact, Ticket, VerificationRequest, utcnow

log = logging.getLogger("gateway.verification")


class VerificationError(ValueError):
    """A decision that cannot be taken: unknown request, or a decider who is not its manager."""


@dataclass(frozen=True)
class Decision:
    request: VerificationRequest
    sender: Contact
    tickets: tuple[int, ...]  # numbers of the tickets released or cancelled


def may_decide(manager: Contact | None, request: VerificationRequest) -> bool:
    """An active, verified manager of the organization the request belongs to."""
    return (
        manager is not None
        and manager.active
        and manager.is_manager
        and manager.state == "verified"
        and manager.organization_id == request.organization_id
    )


def decide(session: Session, workflow: Workflow, request: VerificationRequest, *,
           approve: bool, actor: str) -> Decision:
    """Approve or reject a pending request, in the caller's transaction; ``actor`` is who
    decided (a manager's address, or the team member named on the command line)."""
    if request.state != "pending":
        raise VerificationError(f"verification request {request.id} was already {request.state}")
    sender = session.get(Contact, request.contact_id)
    if sender is None:
        raise VerificationError(f"verification request {request.id} names no contact")
    now = utcnow()
    outcome = "approved" if approve else "rejected"
    # Every open request of this sender is answered by one decision (a sender writes again
    # before anybody decides: the same held ticket, or another one).
    for same in session.exec(select(VerificationRequest).where(
            VerificationRequest.contact_id == sender.id, VerificationRequest.state == "pending")):
        same.state, same.decided_by, same.decided_at = outcome, actor[:320], now
        session.add(same)
    sender.state = "verified" if approve else "rejected"
    if approve:
        sender.active = True  # a deactivated contact whose mail was held is back
    session.add(sender)
    held = session.exec(select(Ticket).where(Ticket.requester_id == sender.id,
                                             Ticket.status == "held")
                        .order_by(col(Ticket.id))).all()
    for ticket in held:
        if approve:
            workflow.release(session, ticket, sender, actor)
        else:
            workflow.change_status(session, ticket, "cancelled", actor,
                                   "sender rejected by the organization")
    workflow.verification_decided(session, sender, approve, actor, held)
    log.info("verification request %s %s by %s: %s, tickets %s", request.id, outcome, actor,
             sender.email, [t.number for t in held])
    return Decision(request, sender, tuple(t.number for t in held))


def pending_request_of(session: Session, email: str) -> VerificationRequest | None:
    """The pending request of a sender, by address (for the team's command line)."""
    query = (select(VerificationRequest)
             .join(Contact, col(Contact.id) == VerificationRequest.contact_id)
             .where(Contact.email == email.strip().lower(),
                    VerificationRequest.state == "pending")
             .order_by(col(VerificationRequest.id)))
    return session.exec(query).first()
