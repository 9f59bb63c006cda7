"""The outbox table: claim notifications that are due, record how their delivery went."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, or_
from sqlalchemy.engine import Engine
from sqlmodel import col, select

from storage.db import supports_skip_locked, transaction
from storage.models import Notification, utcnow

# A claim older than this is taken to belong to a sender that died mid-delivery.
STALE_CLAIM = timedelta(minutes=2)


def claim_due(engine: Engine, limit: int = 20, now: datetime | None = None) -> list[Notification]:
    """Mark up to ``limit`` due notifications as being sent by this process and return them.

    The claim is committed before delivery starts, so two sender processes never take the same
    row (PostgreSQL skips rows another transaction has locked).
    """
    now = now or utcnow()
    stale = now - STALE_CLAIM
    due = or_(
        and_(col(Notification.state) == "queued", col(Notification.next_attempt_at) <= now),
        and_(col(Notification.state) == "sending", col(Notification.claimed_at) < stale),
    )
    with transaction(engine) as session:
        query = select(Notification).where(due).order_by(col(Notification.id)).limit(limit)
        if supports_skip_locked(engine):
            query = query.with_for_update(skip_locked=True)
        rows = list(session.exec(query).all())
        for row in rows:
            row.state = "sending"
            row.claimed_at = now
            row.attempts += 1
            session.add(row)
        return rows


@dataclass(frozen=True)
class Result:
    """How one delivery attempt went, with the mail as rendered (kept for retries and pages)."""

    notification_id: int
    state: str  # sent / queued (retry later) / failed
    raw: bytes | None
    subject: str | None
    error: str | None = None
    retry_at: datetime | None = None


def record_results(engine: Engine, results: list[Result]) -> None:
    """Write the outcomes of a batch of deliveries in one transaction."""
    now = utcnow()
    with transaction(engine) as session:
        for result in results:
            row = session.get(Notification, result.notification_id)
            if row is None:
                continue
            if row.raw is None and result.raw is not None:
                row.raw, row.subject = result.raw, result.subject
            row.state = result.state
            row.last_error = result.error[:4000] if result.error else None
            if result.state == "sent":
                row.sent_at = now
            if result.retry_at is not None:
                row.next_attempt_at = result.retry_at
            session.add(row)
