"""The outbox table: claim notifications that are due, record how their delivery went."""

from __future__ import annotations

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


def record_rendered(engine: Engine, notification_id: int, subject: str, raw: bytes) -> None:
    """Keep the mail as first rendered: retries resend the same bytes, the web shows them."""
    with transaction(engine) as session:
        row = session.get(Notification, notification_id)
        if row is not None and row.raw is None:
            row.subject = subject
            row.raw = raw
            session.add(row)


def mark_sent(engine: Engine, notification_id: int) -> None:
    _update(engine, notification_id, state="sent", sent_at=utcnow(), last_error=None)


def mark_retry(engine: Engine, notification_id: int, error: str, at: datetime) -> None:
    _update(engine, notification_id, state="queued", next_attempt_at=at, last_error=error[:4000])


def mark_failed(engine: Engine, notification_id: int, error: str) -> None:
    _update(engine, notification_id, state="failed", last_error=error[:4000])


def _update(engine: Engine, notification_id: int, **values: object) -> None:
    with transaction(engine) as session:
        row = session.get(Notification, notification_id)
        if row is not None:
            for name, value in values.items():
                setattr(row, name, value)
            session.add(row)
