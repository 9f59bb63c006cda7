"""What the two queues (inbound mail, outbox notifications) share: the names of who holds their
rows, counts by state, and what has been waiting on temporary errors for a while (for the
operator's commands and warnings)."""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, or_
from sqlalchemy.engine import Engine
from sqlmodel import col, select

from storage.db import transaction
from storage.models import InboundMessage, Notification, utcnow

Queue = type[InboundMessage] | type[Notification]


def new_holder(role: str) -> str:
    """A name for one holder of leases or claims: host, process, role, and a random part, so
    that what a dead holder held can be told from what its successor holds."""
    return f"{socket.gethostname()}:{os.getpid()}:{role}:{uuid.uuid4().hex[:8]}"


def _error(queue: Queue) -> Any:
    return queue.error if queue is InboundMessage else queue.last_error  # type: ignore[union-attr]


@dataclass(frozen=True)
class Stuck:
    """Work waiting on temporary errors for a while: how much, since when, the newest reason."""

    count: int
    oldest: datetime | None
    last_error: str | None


def stuck(engine: Engine, queue: Queue, failing_for: timedelta,
          now: datetime | None = None) -> Stuck:
    """Rows still retried after failing for longer than ``failing_for``."""
    since = (now or utcnow()) - failing_for
    waiting = and_(col(queue.state) == "queued", col(queue.failing_since) < since)
    with transaction(engine, write=False) as session:
        count, oldest = session.exec(
            select(func.count(), func.min(queue.failing_since)).where(waiting)).one()
        error = session.exec(select(_error(queue)).where(waiting)
                             .order_by(col(queue.failing_since).desc()).limit(1)).first()
    return Stuck(count, oldest, error)


def overview(engine: Engine, queue: Queue, limit: int = 50) -> tuple[dict[str, int], list[Any]]:
    """How many rows there are in each state, and the newest ones in trouble: waiting after
    temporary errors, or failed."""
    trouble = or_(col(queue.state) == "failed",
                  and_(col(queue.state) == "queued", col(queue.failing_since).is_not(None)))
    with transaction(engine, write=False) as session:
        counts = _counts(session, queue)
        rows = list(session.exec(select(queue).where(trouble)
                                 .order_by(col(queue.id).desc()).limit(limit)).all())
    return counts, rows


def counts(engine: Engine, queue: Queue) -> dict[str, int]:
    """How many rows there are in each state."""
    with transaction(engine, write=False) as session:
        return _counts(session, queue)


def _counts(session: Any, queue: Queue) -> dict[str, int]:
    return {state: int(count) for state, count in session.exec(
        select(queue.state, func.count()).group_by(col(queue.state))).all()}


WAITING = ("queued", "processing", "sending")  # not done yet, whatever the queue


def oldest_waiting(engine: Engine, queue: Queue) -> datetime | None:
    """When the oldest row not yet done came in (a mail received, a notification queued)."""
    since = queue.received_at if queue is InboundMessage else queue.created_at  # type: ignore[union-attr]
    with transaction(engine, write=False) as session:
        return session.exec(select(func.min(since)).where(col(queue.state).in_(WAITING))).one()


def inbound_outcomes(engine: Engine) -> dict[tuple[str, str], int]:
    """Mails by channel and outcome (the state, while there is no outcome yet)."""
    with transaction(engine, write=False) as session:
        rows = session.exec(select(InboundMessage.channel,
                                   func.coalesce(InboundMessage.outcome, InboundMessage.state),
                                   func.count())
                            .group_by(col(InboundMessage.channel),
                                      func.coalesce(InboundMessage.outcome,
                                                    InboundMessage.state))).all()
    return {(channel, outcome): int(count) for channel, outcome, count in rows}


def send_delays(engine: Engine, since: datetime) -> list[float]:
    """Seconds from queued to delivered of the notifications delivered since ``since``."""
    with transaction(engine, write=False) as session:
        rows = session.exec(select(Notification.created_at, Notification.sent_at).where(
            col(Notification.sent_at) >= since, Notification.state == "sent")).all()
    return sorted((sent - made).total_seconds() for made, sent in rows if sent and made)
