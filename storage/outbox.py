"""The outbox table: claim notifications that are due, record how their delivery went."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, bindparam, func, or_, update
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
    """Write the outcomes of a batch of deliveries in one transaction: one UPDATE, executed for
    all the rows at once, without reading them first (a row deleted meanwhile is skipped)."""
    if not results:
        return
    now = utcnow()
    table = Notification.__table__
    column = table.c
    statement = (
        update(table)
        .where(column.id == bindparam("b_id"))
        .values(
            # The mail as first rendered is kept: a retry sends exactly the same bytes.
            raw=func.coalesce(column.raw, bindparam("b_raw", type_=column.raw.type)),
            subject=func.coalesce(column.subject,
                                  bindparam("b_subject", type_=column.subject.type)),
            state=bindparam("b_state"),
            last_error=bindparam("b_error"),
            sent_at=func.coalesce(bindparam("b_sent_at", type_=column.sent_at.type),
                                  column.sent_at),
            next_attempt_at=func.coalesce(
                bindparam("b_retry_at", type_=column.next_attempt_at.type),
                column.next_attempt_at),
        )
    )
    rows = [{
        "b_id": result.notification_id,
        "b_raw": result.raw,
        "b_subject": result.subject,
        "b_state": result.state,
        "b_error": result.error[:4000] if result.error else None,
        "b_sent_at": now if result.state == "sent" else None,
        "b_retry_at": result.retry_at,
    } for result in results]
    with transaction(engine) as session:
        session.connection().execute(statement, rows)
