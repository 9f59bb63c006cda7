"""Webhooks to the team's helpdesk tool: subscriptions, and the delivery of their outbox.

Events are queued by gateway.events in the transaction of their change. ``WebhookSender``
(run by ``serve``, every second) POSTs them, signed per the Standard Webhooks specification
(``webhook-id``, ``webhook-timestamp``, ``webhook-signature``; the ``standardwebhooks``
package), to each subscription **in the order they happened**: a subscription's next event
waits until the one before it is delivered or given up. A receiver that answers 2xx has it; any
other answer, a timeout or a refused connection is tried again after ``RETRY_AFTER`` (about a
day in all), then marked failed with its last status and error (`helpdesk webhook
deliveries`). A claim (``claimed_at``) keeps two gateways from sending the same delivery; one
that dies mid-send leaves its claim to run out and the delivery is sent again, with the same
``webhook-id``, which is how a receiver recognises a repeat.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, func, or_, select
from standardwebhooks import Webhook as Signer

from storage.db import supports_skip_locked, transaction
from storage.directory import DirectoryError
from storage.models import WEBHOOK_EVENTS, Webhook, WebhookDelivery, aware, utcnow

if TYPE_CHECKING:  # imported where it delivers: every command imports this module
    import httpx

log = logging.getLogger("gateway.webhooks")

RETRY_AFTER = (timedelta(seconds=5), timedelta(seconds=30), timedelta(minutes=2),
               timedelta(minutes=10), timedelta(minutes=30), timedelta(hours=1),
               timedelta(hours=2), timedelta(hours=4), timedelta(hours=8), timedelta(hours=8))
CLAIM_LEASE = timedelta(seconds=60)
TIMEOUT_SECONDS = 10.0


# ---------------------------------------------------------------------- subscriptions


def add(engine: Engine, url: str, events: list[str] | None = None,
        description: str = "") -> Webhook:
    """A new subscription with a new secret (``whsec_``); ``events`` None or empty: all."""
    url = url.strip()
    if not url.startswith(("https://", "http://")) or len(url) > 2000:
        raise DirectoryError(f"not an http(s) URL: {url!r}")
    wanted = sorted(set(events or []))
    unknown = [e for e in wanted if e not in WEBHOOK_EVENTS]
    if unknown:
        raise DirectoryError(f"unknown event {unknown[0]!r}; events: {', '.join(WEBHOOK_EVENTS)}")
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    with transaction(engine) as session:
        hook = Webhook(url=url, secret=secret, events=",".join(wanted) or "*",
                       description=description.strip()[:200])
        session.add(hook)
        return hook


def subscriptions(engine: Engine) -> list[Webhook]:
    with Session(engine) as session:
        return list(session.exec(select(Webhook).order_by(col(Webhook.id))))


def remove(engine: Engine, webhook_id: int) -> Webhook:
    """Stop a subscription: nothing more is queued for it, and what is queued is not sent."""
    with transaction(engine) as session:
        hook = session.get(Webhook, webhook_id)
        if hook is None:
            raise DirectoryError(f"no webhook {webhook_id}")
        hook.active = False
        session.add(hook)
        return hook


def deliveries(engine: Engine, webhook_id: int | None = None,
               limit: int = 20) -> list[WebhookDelivery]:
    """The latest deliveries, newest first (of one subscription, or of all)."""
    query = select(WebhookDelivery).order_by(col(WebhookDelivery.id).desc()).limit(limit)
    if webhook_id is not None:
        query = query.where(WebhookDelivery.webhook_id == webhook_id)
    with Session(engine) as session:
        return list(session.exec(query))


# ---------------------------------------------------------------------- delivery


@dataclass(frozen=True)
class Due:
    delivery_id: int
    url: str
    secret: str
    event_id: str
    payload: str
    attempts: int


@dataclass(frozen=True)
class Result:
    delivery_id: int
    status: int | None
    error: str | None

    @property
    def delivered(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


class WebhookSender:
    def __init__(self, engine: Engine, holder: str,
                 retry_after: tuple[timedelta, ...] = RETRY_AFTER) -> None:
        self.engine = engine
        self.holder = holder
        self.retry_after = retry_after

    async def deliver_due(self, client: httpx.AsyncClient) -> int:
        """Send each subscription's next event if it is due; how many were delivered."""
        due = await asyncio.to_thread(self.claim_due)
        if not due:
            return 0
        results = await asyncio.gather(*(self.send(client, item) for item in due))
        await asyncio.to_thread(self.record, due, results)
        return sum(result.delivered for result in results)

    def claim_due(self, now: datetime | None = None) -> list[Due]:
        now = now or utcnow()
        with transaction(self.engine) as session:
            heads = select(func.min(WebhookDelivery.id)).where(
                WebhookDelivery.state == "queued").group_by(col(WebhookDelivery.webhook_id))
            query = (select(WebhookDelivery, Webhook)
                     .join(Webhook, col(Webhook.id) == WebhookDelivery.webhook_id)
                     .where(col(WebhookDelivery.id).in_(heads), col(Webhook.active),
                            col(WebhookDelivery.next_attempt_at) <= now,
                            or_(col(WebhookDelivery.claimed_at).is_(None),
                                col(WebhookDelivery.claimed_at) < now - CLAIM_LEASE)))
            if supports_skip_locked(self.engine):
                query = query.with_for_update(skip_locked=True, of=WebhookDelivery)
            claimed = []
            for delivery, hook in session.exec(query):
                assert delivery.id is not None
                delivery.claimed_at, delivery.claimed_by = now, self.holder
                session.add(delivery)
                claimed.append(Due(delivery.id, hook.url, hook.secret, delivery.event_id,
                                   delivery.payload, delivery.attempts))
            return claimed

    async def send(self, client: httpx.AsyncClient, item: Due) -> Result:
        import httpx

        moment = utcnow()
        headers = {"content-type": "application/json", "webhook-id": item.event_id,
                   "webhook-timestamp": str(int(moment.timestamp())),
                   "webhook-signature": Signer(item.secret).sign(item.event_id, moment,
                                                                 item.payload),
                   "user-agent": "helpdesk-gateway-webhooks"}
        try:
            response = await client.post(item.url, content=item.payload.encode(),
                                         headers=headers, timeout=TIMEOUT_SECONDS)
        except httpx.HTTPError as exc:
            return Result(item.delivery_id, None, f"{type(exc).__name__}: {exc}"[:500])
        error = None if response.is_success else response.text[:500]
        return Result(item.delivery_id, response.status_code, error)

    def record(self, due: list[Due], results: list[Result], now: datetime | None = None,
               ) -> None:
        now = now or utcnow()
        with transaction(self.engine) as session:
            for result in results:
                delivery = session.get(WebhookDelivery, result.delivery_id)
                if delivery is None or delivery.claimed_by != self.holder:
                    continue  # another gateway took it over after our claim ran out
                delivery.attempts += 1
                delivery.last_status, delivery.last_error = result.status, result.error
                delivery.claimed_at = delivery.claimed_by = None
                if result.delivered:
                    delivery.state, delivery.delivered_at = "sent", now
                elif delivery.attempts > len(self.retry_after):
                    delivery.state = "failed"
                    log.warning("webhook delivery %s (%s) given up after %d attempts: %s",
                                delivery.id, delivery.event, delivery.attempts,
                                result.error or result.status)
                else:
                    delivery.next_attempt_at = now + self.retry_after[delivery.attempts - 1]
                    log.info("webhook delivery %s (%s) failed (%s), attempt %d; next at %s",
                             delivery.id, delivery.event, result.status or result.error,
                             delivery.attempts, f"{aware(delivery.next_attempt_at):%H:%M:%S}")
                session.add(delivery)
