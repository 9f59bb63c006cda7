"""The support team's accounts and API tokens: made, listed, deactivated, revoked, checked."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select, update

from storage import sessions
from storage.db import transaction
from storage.directory import DirectoryError
from storage.models import AGENT_ROLES, Agent, AgentSession, ApiToken, aware, utcnow
from storage.passwords import hash_password

TOKEN_PREFIX = "hd_"  # noqa: S105 (not a secret) what a helpdesk API token starts with, so a leaked one is recognised
LAST_USED_EVERY = timedelta(minutes=1)  # a token's last use is written at most this often


def add_agent(engine: Engine, *, name: str, email: str, role: str = "agent",
              language: str = "es", password: str | None = None) -> Agent:
    if role not in AGENT_ROLES:
        raise DirectoryError(f"role must be one of {', '.join(AGENT_ROLES)}, not {role!r}")
    email = email.strip().lower()
    if "@" not in email:
        raise DirectoryError(f"not an email address: {email!r}")
    with transaction(engine) as session:
        if session.exec(select(Agent).where(Agent.email == email)).first() is not None:
            raise DirectoryError(f"an agent with email {email} already exists")
        agent = Agent(name=name.strip(), email=email, role=role, language=language,
                      password_hash=hash_password(password) if password else None)
        session.add(agent)
        return agent


def agents(engine: Engine) -> list[Agent]:
    with Session(engine) as session:
        return list(session.exec(select(Agent).order_by(col(Agent.name), col(Agent.id))))


def agent_by_email(session: Session, email: str) -> Agent | None:
    return session.exec(select(Agent).where(Agent.email == email.strip().lower())).first()


def set_active(engine: Engine, email: str, active: bool) -> Agent:
    """Deactivate (or reactivate) an agent. A deactivated agent's tokens stop working at once
    (they are checked with the agent), and start again if the agent is reactivated, unless
    revoked meanwhile."""
    with transaction(engine) as session:
        agent = agent_by_email(session, email)
        if agent is None:
            raise DirectoryError(f"no agent with email {email.strip().lower()}")
        agent.active = active
        session.add(agent)
        if not active:
            assert agent.id is not None
            sessions.end_all(session, agent.id, AgentSession)  # out of the console at once
        return agent


@dataclass(frozen=True)
class NewToken:
    token: ApiToken
    secret: str  # the whole token: shown once, never stored


def create_token(engine: Engine, email: str, name: str) -> NewToken:
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    with transaction(engine) as session:
        agent = agent_by_email(session, email)
        if agent is None or not agent.active:
            raise DirectoryError(f"no active agent with email {email.strip().lower()}")
        assert agent.id is not None
        token = ApiToken(agent_id=agent.id, name=name.strip()[:100] or "token",
                         token_hash=token_hash(secret), prefix=secret[:10])
        session.add(token)
        return NewToken(token, secret)


def tokens(engine: Engine) -> list[tuple[ApiToken, Agent]]:
    with Session(engine) as session:
        rows = session.exec(select(ApiToken, Agent).join(Agent, col(Agent.id) ==
                                                         ApiToken.agent_id)
                            .order_by(col(ApiToken.id)))
        return [(token, agent) for token, agent in rows]


def revoke_token(engine: Engine, token_id: int) -> ApiToken:
    with transaction(engine) as session:
        token = session.get(ApiToken, token_id)
        if token is None:
            raise DirectoryError(f"no token {token_id}")
        if token.revoked_at is None:
            token.revoked_at = utcnow()
            session.add(token)
        return token


def token_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def agent_for_token(engine: Engine, secret: str, now: datetime | None = None,
                    ) -> tuple[Agent, ApiToken] | None:
    """The active agent a token acts as, if the token is one of ours and not revoked. Its last
    use is recorded (at most every LAST_USED_EVERY, so a busy client does not write per call)."""
    if not secret.startswith(TOKEN_PREFIX):
        return None
    now = now or utcnow()
    with Session(engine) as session:
        found = session.exec(
            select(ApiToken, Agent).join(Agent, col(Agent.id) == ApiToken.agent_id)
            .where(ApiToken.token_hash == token_hash(secret),
                   col(ApiToken.revoked_at).is_(None), col(Agent.active))).first()
    if found is None:
        return None
    token, agent = found
    last = token.last_used_at
    if last is None or now - aware(last) >= LAST_USED_EVERY:
        with transaction(engine) as session:
            session.exec(update(ApiToken).where(col(ApiToken.id) == token.id)
                         .values(last_used_at=now))
        token.last_used_at = now
    return agent, token
