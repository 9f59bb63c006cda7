"""The outbox table: claim notifications that are due, record how each delivery went, put back
what a dead sender held, and say what is stuck."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, bindparam, func, or_, update
from sqlalchemy.engine import Engine
from sqlmodel import col, select

from storage.db import supports_skip_locked, transaction
from storage.models import Notification, utcnow

# A claim not renewed for this long is taken to belong to a sender that died mid-delivery (a
# sender renews its claims every RENEW_CLAIMS while it works on them). When the supervisor sees
# its sender die, the claims are put back at once instead (release).
STALE_CLAIM = timedelta(seconds=45)
RENEW_CLAIMS = timedelta(seconds=10)


def claim_due(engine: Engine, sender: str, limit: int = 20,
              now: datetime | None = None) -> list[Notification]:
    """Mark up to ``limit`` due notifications as being sent by ``sender`` and return them.

    The claim is committed before delivery starts, so two sender processes never take the same
    row (PostgreSQL skips rows another transaction has locked).
    """
    now = now or utcnow()
    due = or_(
        and_(col(Notification.state) == "queued", col(Notification.next_attempt_at) <= now),
        and_(col(Notification.state) == "sending",
             col(Notification.claimed_at) < now - STALE_CLAIM),
    )
    with transaction(engine) as session:
        query = select(Notification).where(due).order_by(col(Notification.id)).limit(limit)
        if supports_skip_locked(engine):
            query = query.with_for_update(skip_locked=True)
        rows = list(session.exec(query).all())
        if not rows:
            return rows
        # One UPDATE for all (SQLite's write lock is held meanwhile), the objects told after.
        session.connection().execute(
            update(Notification).where(col(Notification.id).in_([row.id for row in rows]))
            .values(state="sending", claimed_at=now, claimed_by=sender,
                    attempts=Notification.attempts + 1))
        session.expunge_all()
    for row in rows:
        row.state, row.claimed_at, row.claimed_by = "sending", now, sender
        row.attempts += 1
    return rows


def renew(engine: Engine, sender: str, ids: list[int], now: datetime | None = None) -> None:
    """The sender is still at work on these: their claims must not go stale."""
    if not ids:
        return
    with transaction(engine) as session:
        session.execute(
            update(Notification)
            .where(col(Notification.id).in_(ids), col(Notification.claimed_by) == sender,
                   col(Notification.state) == "sending")
            .values(claimed_at=now or utcnow()))


def release(engine: Engine, sender: str, now: datetime | None = None) -> int:
    """Put back what a sender known to be dead was delivering: due again at once.

    A mail that the relay had accepted just before the sender died, and whose delivery was not
    yet recorded, is sent again: the one repeat the design cannot rule out (README)."""
    with transaction(engine) as session:
        result = session.execute(
            update(Notification)
            .where(col(Notification.state) == "sending", col(Notification.claimed_by) == sender)
            .values(state="queued", claimed_by=None, next_attempt_at=now or utcnow()))
        return result.rowcount  # type: ignore[attr-defined,no-any-return]


@dataclass(frozen=True)
class Result:
    """How one delivery attempt went, with the mail as rendered (kept for retries and pages)."""

    notification_id: int
    state: str  # sent / queued (retry later) / failed
    raw: bytes | None
    subject: str | None
    error: str | None = None
    retry_at: datetime | None = None
    failing_since: datetime | None = None  # when temporary failures began (state queued)
    failure: str | None = None  # refused / unwritable / expired (state failed)
    sender: str | None = None  # the claim this result belongs to
    at: datetime | None = None  # when the attempt ended


def record_results(engine: Engine, results: list[Result]) -> list[None]:
    """Write the outcomes of deliveries in one transaction: one UPDATE, executed for all the
    rows at once, without reading them first. A row no longer claimed by the result's sender
    (its claim went stale and another sender took it) is left to that sender."""
    if not results:
        return []
    table = Notification.__table__
    column = table.c
    statement = (
        update(table)
        .where(column.id == bindparam("b_id"), column.state == "sending",
               column.claimed_by == bindparam("b_sender"))
        .values(
            # The mail as first rendered is kept: a retry sends exactly the same bytes.
            raw=func.coalesce(column.raw, bindparam("b_raw", type_=column.raw.type)),
            subject=func.coalesce(column.subject,
                                  bindparam("b_subject", type_=column.subject.type)),
            state=bindparam("b_state"),
            claimed_by=None,
            last_error=bindparam("b_error"),
            failure=bindparam("b_failure"),
            failing_since=bindparam("b_failing_since", type_=column.failing_since.type),
            sent_at=func.coalesce(bindparam("b_sent_at", type_=column.sent_at.type),
                                  column.sent_at),
            next_attempt_at=func.coalesce(
                bindparam("b_retry_at", type_=column.next_attempt_at.type),
                column.next_attempt_at),
        )
    )
    rows = [{
        "b_id": result.notification_id,
        "b_sender": result.sender,
        "b_raw": result.raw,
        "b_subject": result.subject,
        "b_state": result.state,
        "b_error": result.error[:4000] if result.error else None,
        "b_failure": result.failure,
        "b_failing_since": result.failing_since,
        "b_sent_at": (result.at or utcnow()) if result.state == "sent" else None,
        "b_retry_at": result.retry_at,
    } for result in results]
    with transaction(engine) as session:
        session.connection().execute(statement, rows)
    return [None] * len(results)


def retry(engine: Engine, ids: list[int] | None = None, *, refused: bool = False,
          now: datetime | None = None) -> int:
    """Due now, with a fresh retry time: the named notifications (failed or waiting, whatever
    the reason), or else every one that gave up on temporary failures or waits for its next
    attempt, and with ``refused`` also those the relay refused for good."""
    now = now or utcnow()
    waiting = and_(col(Notification.state) == "queued",
                   col(Notification.failing_since).is_not(None))
    failed = col(Notification.state) == "failed"
    if ids:
        where = and_(col(Notification.id).in_(ids), or_(waiting, failed))
    elif refused:
        where = or_(waiting, failed)
    else:
        where = or_(waiting, and_(failed, col(Notification.failure) == "expired"))
    with transaction(engine) as session:
        result = session.execute(
            update(Notification).where(where)
            .values(state="queued", next_attempt_at=now, attempts=0, failing_since=None,
                    failure=None, claimed_by=None))
        return result.rowcount  # type: ignore[attr-defined,no-any-return]
