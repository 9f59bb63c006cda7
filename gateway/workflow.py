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
from storage.models import Contact, Notification, StatusChange, Ticket, utcnow
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
    ) -> Ticket:
        """Create a ticket in status new, record it, and queue the "received" mail."""
        assert requester.id is not None
        ticket = Ticket(
            number=next_ticket_number(session),
            organization_id=requester.organization_id,
            requester_id=requester.id,
            application_id=application_id,
            subject=subject[:500],
            status="new",
            channel=channel,
        )
        session.add(ticket)
        session.flush()
        assert ticket.id is not None
        session.add(
            StatusChange(ticket_id=ticket.id, from_status=None, to_status="new",
                         actor=requester.email, note=f"opened by {channel}")
        )
        self.queue(
            session,
            event="received",
            ticket=ticket,
            contact=requester,
            thread=thread,
            extra={"refused": [{"filename": r.filename, "reason": r.reason} for r in refused]},
        )
        return ticket

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
