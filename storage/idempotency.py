"""The API's ``Idempotency-Key`` answers in the database (web.idempotency is the HTTP side):
claimed before a request acts, stored after, forgotten after ``KEEP``."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, delete, select

from storage.db import transaction
from storage.models import IdempotentRequest, aware, utcnow

KEEP = timedelta(hours=24)
ABANDONED = timedelta(minutes=2)  # a claim this old without an answer: its request died


@dataclass(frozen=True)
class Claim:
    outcome: str  # "new" (act, then store), "replay", "busy" (still running), "mismatch"
    row_id: int | None = None
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


def claim(engine: Engine, agent_id: int, key: str, fingerprint: str) -> Claim:
    try:
        with transaction(engine) as session:
            row = IdempotentRequest(agent_id=agent_id, key=key, fingerprint=fingerprint)
            session.add(row)
            session.flush()
            return Claim("new", row.id)
    except IntegrityError:
        pass  # the key was used before: what became of it?
    with transaction(engine) as session:
        row = session.exec(select(IdempotentRequest).where(
            IdempotentRequest.agent_id == agent_id, IdempotentRequest.key == key)).one()
        if row.fingerprint != fingerprint:
            return Claim("mismatch")
        if row.status_code:
            return Claim("replay", row.id, row.status_code, json.loads(row.headers),
                         row.body or b"")
        if utcnow() - aware(row.created_at) < ABANDONED:
            return Claim("busy")
        row.created_at = utcnow()  # its request died: this one takes it over
        session.add(row)
        return Claim("new", row.id)


def store(engine: Engine, row_id: int, status: int, headers: dict[str, str],
          body: bytes) -> None:
    with transaction(engine) as session:
        row = session.get(IdempotentRequest, row_id)
        if row is not None:
            row.status_code, row.headers, row.body = status, json.dumps(headers), body
            session.add(row)


def release(engine: Engine, row_id: int) -> None:
    """The request failed without an answer worth keeping: the key may act again."""
    with transaction(engine) as session:
        session.exec(delete(IdempotentRequest).where(col(IdempotentRequest.id) == row_id))


def forget_before(engine: Engine, moment: datetime) -> int:
    with transaction(engine) as session:
        result = session.exec(delete(IdempotentRequest).where(
            col(IdempotentRequest.created_at) < moment))
        return int(result.rowcount or 0)
