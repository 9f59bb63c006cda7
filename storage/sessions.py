"""Customer-area sessions in the database: made at login, renewed while used, ended on demand."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, delete, update

from storage.db import transaction
from storage.models import WebSession, utcnow

# The PostgreSQL channel on which the database tells the web processes that a session, a contact
# or an organization changed (migration 0013, web.known_sessions).
CHANGES_CHANNEL = "helpdesk_web"


def key_of(token: str) -> str:
    """What is stored of a cookie's token: its SHA-256."""
    return hashlib.sha256(token.encode()).hexdigest()


def start(engine: Engine, contact_id: int, lifetime: timedelta, *, address: str = "",
          user_agent: str = "") -> str:
    """A new session for the contact; the token for the cookie."""
    token = secrets.token_urlsafe(32)
    with transaction(engine) as session:
        session.add(WebSession(id=key_of(token), contact_id=contact_id,
                               expires_at=utcnow() + lifetime, address=address[:64],
                               user_agent=user_agent[:200]))
    return token


def renew(engine: Engine, key: str, expires_at: datetime) -> None:
    with transaction(engine) as session:
        session.exec(update(WebSession).where(col(WebSession.id) == key,
                                              col(WebSession.revoked_at).is_(None))
                     .values(expires_at=expires_at))


def end(engine: Engine, token: str) -> None:
    """Logout: this session ends."""
    with transaction(engine) as session:
        session.exec(update(WebSession).where(col(WebSession.id) == key_of(token),
                                              col(WebSession.revoked_at).is_(None))
                     .values(revoked_at=utcnow()))


def end_all(session: Session, contact_id: int) -> int:
    """Every session of the contact ends (in the caller's transaction); how many were open."""
    now = utcnow()
    result = session.exec(update(WebSession).where(
        col(WebSession.contact_id) == contact_id, col(WebSession.revoked_at).is_(None),
        col(WebSession.expires_at) > now).values(revoked_at=now))
    return int(result.rowcount or 0)


def forget_before(engine: Engine, moment: datetime) -> int:
    """Sessions that expired or were ended before ``moment`` are deleted (housekeeping)."""
    with transaction(engine) as session:
        result = session.exec(delete(WebSession).where(
            (col(WebSession.expires_at) < moment) | (col(WebSession.revoked_at) < moment)))
        return int(result.rowcount or 0)
