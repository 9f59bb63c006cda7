"""Ticket status changes: history, and the notifications they queue in the same transaction.

The outbox rule of the design: a notification row is written by the transaction that makes the
change, so a ticket never exists without its "received" mail queued, and a rolled-back change
never mails anybody. Rendering and sending happen later, in ``gateway.sender``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlmodel import Session

from gateway.render import new_message_id
from storage.models import (
    STATUS_GROUPS,
    Contact,
    Notification,
    StatusChange,
    Ticket,
    VerificationRequest,
    utcnow,
)
from storage.tickets import next_ticket_number


@dataclass(frozen=True)
class Thread:
    """The mail a notification answers, so that it threads in the customer's client."""

    in_reply_to: str | None = None
    references: tuple[str, ...] = ()


@dataclass(frozen=True)
class RefusedFile:
    filename: str
    reason: str


class Workflow:
    def __init__(self, *, support_address: str, public_url: str, brand: str) -> None:
        self.domain = support_address.rpartition("@")[2]
        self.public_url = public_url
        self.brand = brand

    def open_ticket(
        self,
        session: Session,
        *,
        requester: Contact,
        subject: str,
        channel: str,
        thread: Thread = Thread(),
        refused: Sequence[RefusedFile] = (),
        application_id: int | None = None,
        linked_ticket: Ticket | None = None,
        notify: bool = True,
    ) -> Ticket:
        """Create a ticket in status new, record it, and queue the "received" mail."""
        ticket = self._new_ticket(session, requester, subject, channel, "new", application_id,
                                  linked_ticket)
        note = f"opened by {channel}"
        if linked_ticket is not None:
            note += f", follows ticket {linked_ticket.number}"
        self._record(session, ticket, None, "new", requester.email, note)
        if not notify:
            return ticket
        self.queue(
            session,
            event="received",
            ticket=ticket,
            contact=requester,
            thread=thread,
            extra={"refused": [{"filename": r.filename, "reason": r.reason} for r in refused]},
        )
        return ticket

    def hold_for_verification(
        self, session: Session, *, sender: Contact, subject: str, channel: str,
        request: bool = True,
    ) -> Ticket:
        """A ticket from an unknown person of a known organization, held until a manager says who
        they are; the request for the managers is recorded (the notifier mails it)."""
        ticket = self._new_ticket(session, sender, subject, channel, "held", None, None)
        self._record(session, ticket, None, "held", sender.email, "sender pending verification")
        assert ticket.id is not None and sender.id is not None
        if request:
            session.add(VerificationRequest(organization_id=sender.organization_id,
                                            contact_id=sender.id, ticket_id=ticket.id))
        return ticket

    def customer_replied(self, session: Session, ticket: Ticket, author: Contact) -> None:
        """A customer's reply puts a ticket waiting for them, or just resolved, back to work."""
        if ticket.status == "awaiting_customer":
            self.change_status(session, ticket, "in_progress", author.email, "customer replied")
        elif ticket.status == "resolved":
            self.change_status(session, ticket, "in_progress", author.email,
                               "reopened by the customer's reply")
        ticket.updated_at = utcnow()
        session.add(ticket)

    def change_status(
        self, session: Session, ticket: Ticket, to_status: str, actor: str, note: str = "",
    ) -> None:
        """Move a ticket to another status and record who, when and why."""
        if to_status not in STATUS_GROUPS:
            raise ValueError(f"unknown status {to_status!r}")
        if to_status == ticket.status:
            return
        from_status = ticket.status
        ticket.status = to_status
        ticket.updated_at = utcnow()
        if to_status == "resolved":
            ticket.resolved_at = ticket.updated_at
        session.add(ticket)
        self._record(session, ticket, from_status, to_status, actor, note)

    def _new_ticket(
        self, session: Session, requester: Contact, subject: str, channel: str, status: str,
        application_id: int | None, linked_ticket: Ticket | None,
    ) -> Ticket:
        assert requester.id is not None
        ticket = Ticket(
            number=next_ticket_number(session),
            organization_id=requester.organization_id,
            requester_id=requester.id,
            application_id=application_id,
            subject=subject[:500],
            status=status,
            channel=channel,
            linked_ticket_id=linked_ticket.id if linked_ticket else None,
        )
        session.add(ticket)
        session.flush()
        return ticket

    def _record(self, session: Session, ticket: Ticket, from_status: str | None,
                to_status: str, actor: str, note: str) -> None:
        assert ticket.id is not None
        session.add(StatusChange(ticket_id=ticket.id, from_status=from_status,
                                 to_status=to_status, actor=actor[:320], note=note))

    def queue(
        self,
        session: Session,
        *,
        event: str,
        ticket: Ticket,
        contact: Contact,
        thread: Thread = Thread(),
        extra: dict[str, Any] | None = None,
    ) -> Notification:
        """Write one outgoing mail to the outbox, with the context its template needs."""
        context = {
            "brand": self.brand,
            "contact_name": contact.name,
            "ticket_number": ticket.number,
            "ticket_subject": ticket.subject,
            "ticket_status": ticket.status,
            "ticket_url": f"{self.public_url}/tickets/{ticket.number}",
            "portal_url": self.public_url,
            **(extra or {}),
        }
        references = tuple(dict.fromkeys((*thread.references, *filter(None, [thread.in_reply_to]))))
        notification = Notification(
            ticket_id=ticket.id,
            contact_id=contact.id,
            event=event,
            recipient=contact.email,
            language=contact.language,
            context=json.dumps(context, ensure_ascii=False),
            message_id=new_message_id(self.domain, f"t{ticket.number}.{event}"),
            in_reply_to=thread.in_reply_to,
            references=" ".join(references) or None,
            next_attempt_at=utcnow(),
        )
        session.add(notification)
        return notification
