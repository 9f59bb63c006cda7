"""Events for the team's helpdesk tool, written in the transaction of the change they tell of.

``emit`` adds one ``WebhookDelivery`` per active subscription that wants the event, like the
mail outbox: a change rolled back tells nobody, a committed one is delivered later
(gateway.webhooks) even across crashes. The body is a Standard Webhooks message:
``{"type": ..., "timestamp": ..., "data": {...}}``.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

from sqlmodel import Session, col, select

from storage.db import once_per_transaction
from storage.models import (
    WEBHOOK_EVENTS,
    Contact,
    Message,
    Organization,
    Ticket,
    Webhook,
    WebhookDelivery,
    aware,
    utcnow,
)


def emit(session: Session, event: str, data: Callable[[], dict[str, Any]]) -> int:
    """Queue ``event`` for every subscription that wants it; how many. ``data()`` is what the
    event says, worked out only when somebody listens."""
    assert event in WEBHOOK_EVENTS, event
    hooks = [hook for hook in active_webhooks(session) if hook.wants(event)]
    if not hooks:
        return 0
    event_id = f"msg_{uuid.uuid4().hex}"
    payload = json.dumps({"type": event, "timestamp": utcnow().isoformat(), "data": data()},
                         ensure_ascii=False, default=str, separators=(",", ":"))
    for hook in hooks:
        assert hook.id is not None
        session.add(WebhookDelivery(webhook_id=hook.id, event_id=event_id, event=event,
                                    payload=payload))
    return len(hooks)


def active_webhooks(session: Session) -> list[Webhook]:
    """The active subscriptions, read once per transaction (a batch of mails asks for each)."""
    return once_per_transaction(session, "helpdesk.active_webhooks", lambda: list(
        session.exec(select(Webhook).where(col(Webhook.active)).order_by(col(Webhook.id)))))


def ticket_data(session: Session, ticket: Ticket) -> dict[str, Any]:
    """What every ticket event says of its ticket (the API has the rest: /api/v1/tickets/N)."""
    organization = session.get(Organization, ticket.organization_id)
    requester = session.get(Contact, ticket.requester_id)
    return {"number": ticket.number, "subject": ticket.subject, "status": ticket.status,
            "priority": ticket.priority, "channel": ticket.channel,
            "organization": organization.code if organization else None,
            "requester": requester.email if requester else None,
            "created_at": aware(ticket.created_at).isoformat(),
            "updated_at": aware(ticket.updated_at).isoformat()}


def ticket_created(session: Session, ticket: Ticket) -> None:
    emit(session, "ticket.created", lambda: {"ticket": ticket_data(session, ticket)})


def status_changed(session: Session, ticket: Ticket, from_status: str | None, to_status: str,
                   actor: str, note: str) -> None:
    emit(session, "ticket.status_changed", lambda: {
        "ticket": ticket_data(session, ticket), "from": from_status, "to": to_status,
        "actor": actor, "note": note})


def message_received(session: Session, ticket: Ticket, message: Message) -> None:
    def data() -> dict[str, Any]:
        if message.id is None:  # stored but not written yet: written now, for its id
            session.flush()
        return {"ticket": ticket_data(session, ticket), "message": {
            "id": message.id, "from": message.from_address, "channel": message.channel,
            "subject": message.subject, "new_text": message.new_text or message.text,
            "automatic": message.automatic}}

    emit(session, "message.received", data)


def rating_received(session: Session, ticket: Ticket) -> None:
    emit(session, "rating.received", lambda: {
        "ticket": ticket_data(session, ticket), "rating": ticket.rating,
        "comment": ticket.rating_comment, "source": ticket.rating_source})


def sla_warning(session: Session, ticket: Ticket, target: str, level: str, due_at: str | None,
                used: float, over_minutes: float) -> None:
    emit(session, "sla.breached" if level == "breached" else "sla.warning", lambda: {
        "ticket": ticket_data(session, ticket), "target": target, "level": level,
        "due_at": due_at, "used": round(used, 4), "over_minutes": round(over_minutes, 1)})


def contact_verified(session: Session, contact: Contact, decided_by: str) -> None:
    def data() -> dict[str, Any]:
        organization = session.get(Organization, contact.organization_id)
        return {"contact": {"name": contact.name, "email": contact.email,
                            "organization": organization.code if organization else None},
                "decided_by": decided_by}

    emit(session, "contact.verified", data)
