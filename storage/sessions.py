"""Customer-area sessions in the database: made at login, renewed while used, ended on demand."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, delete, update

from storage.db import transaction
from storage.models import AgentSession, WebSession, utcnow

# The PostgreSQL channel on which the database tells the web processes that a session, a contact
# or an organization changed (migration 0013, web.known_sessions).
CHANGES_CHANNEL = "helpdesk_web"


def key_of(token: str) -> str:
    """What is stored of a cookie's token: its SHA-256."""
    return hashlib.sha256(token.encode()).hexdigest()


# The customer area's sessions, and the team console's: the same rules, tables of their own.
Kind = type[WebSession] | type[AgentSession]


def _owner(kind: Kind) -> str:
    return "agent_id" if kind is AgentSession else "contact_id"


def start(engine: Engine, owner_id: int, lifetime: timedelta, *, address: str = "",
          user_agent: str = "", kind: Kind = WebSession) -> str:
    """A new session for the contact (or, with ``kind=AgentSession``, the agent); the token
    for the cookie."""
    token = secrets.token_urlsafe(32)
    with transaction(engine) as session:
        session.add(kind(id=key_of(token), expires_at=utcnow() + lifetime,
                         address=address[:64], user_agent=user_agent[:200],
                         **{_owner(kind): owner_id}))
    return token


def renew(engine: Engine, key: str, expires_at: datetime, kind: Kind = WebSession) -> None:
    with transaction(engine) as session:
        session.exec(update(kind).where(col(kind.id) == key, col(kind.revoked_at).is_(None))
                     .values(expires_at=expires_at))


def end(engine: Engine, token: str, kind: Kind = WebSession) -> None:
    """Logout: this session ends."""
    with transaction(engine) as session:
        session.exec(update(kind).where(col(kind.id) == key_of(token),
                                        col(kind.revoked_at).is_(None))
                     .values(revoked_at=utcnow()))


def end_all(session: Session, owner_id: int, kind: Kind = WebSession) -> int:
    """Every session of the contact (or agent) ends, in the caller's transaction; how many
    were open."""
    now = utcnow()
    owner = getattr(kind, _owner(kind))
    result = session.exec(update(kind).where(
        col(owner) == owner_id, col(kind.revoked_at).is_(None),
        col(kind.expires_at) > now).values(revoked_at=now))
    return int(result.rowcount or 0)


def forget_before(engine: Engine, moment: datetime) -> int:
    """Sessions that expired or were ended before ``moment`` are deleted (housekeeping)."""
    forgotten = 0
    with transaction(engine) as session:
        for kind in (WebSession, AgentSession):
            result = session.exec(delete(kind).where(
                (col(kind.expires_at) < moment) | (col(kind.revoked_at) < moment)))
            forgotten += int(result.rowcount or 0)
    return forgotten
