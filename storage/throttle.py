"""Queries of the throttle: attempts per key within a window, shared through the database."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, delete, func, select

from storage.db import transaction
from storage.models import ThrottleEvent, aware


def recent(engine: Engine, keys: Sequence[str],
           since: datetime) -> dict[str, tuple[int, datetime]]:
    """Per key: failures since ``since`` and the time of the last one."""
    query = (select(ThrottleEvent.key, func.count(), func.max(ThrottleEvent.at))
             .where(col(ThrottleEvent.key).in_(keys), col(ThrottleEvent.at) >= since)
             .group_by(col(ThrottleEvent.key)))
    with Session(engine) as session:
        return {key: (int(count), aware(last)) for key, count, last in session.exec(query)}



def record(engine: Engine, keys: Sequence[str], at: datetime) -> None:
    with transaction(engine) as session:
        for key in keys:
            session.add(ThrottleEvent(key=key[:400], at=at))


def clear(engine: Engine, key: str) -> None:
    with transaction(engine) as session:
        session.exec(delete(ThrottleEvent).where(col(ThrottleEvent.key) == key))


def forget_before(engine: Engine, moment: datetime) -> int:
    with transaction(engine) as session:
        result = session.exec(delete(ThrottleEvent).where(col(ThrottleEvent.at) < moment))
        return int(result.rowcount or 0)
