"""Who is signed in, kept by each web process between changes on PostgreSQL (web.known_sessions):
the database's notifications make a kept answer go as soon as what it says changes, whichever
process changed it."""

from __future__ import annotations

import asyncio
import re
import time
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import text
from sqlmodel import update

from storage import sessions
from storage.db import LoopReads, transaction
from storage.models import Contact, Organization, WebSession, utcnow
from tests.conftest import PASSWORD, run_async, wait_for
from tests.gateway_process import GatewayProcess
from web.auth import _SIGNED_IN
from web.known_sessions import KnownSessions

MARIA = "maria.garcia@ferreteria-lopez.es"
JOSE = "jose.fernandez@ferreteria-lopez.es"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')

pytestmark = pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)


def contact_id(engine, email: str) -> int:
    with transaction(engine, write=False) as session:
        found = session.exec(text("SELECT id FROM contact WHERE email = :e"),
                             params={"e": email}).scalar_one()
    return int(found)


async def until(predicate, timeout: float = 10.0) -> None:
    """Give the loop (and so the listening task) time until ``predicate()`` holds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "not within the time allowed"
        await asyncio.sleep(0.01)


def test_a_kept_answer_goes_when_its_session_contact_or_organization_changes(directory):
    reads = LoopReads(directory)
    known = KnownSessions(directory)
    maria, jose = contact_id(directory, MARIA), contact_id(directory, JOSE)
    keys = {who: sessions.key_of(sessions.start(directory, who, timedelta(hours=8)))
            for who in (maria, jose)}

    def write(statement) -> None:  # another connection, as another process would
        with transaction(directory) as session:
            session.exec(statement)

    async def keep_both() -> None:
        for key in keys.values():
            generation = known.generation
            row = reads.first(_SIGNED_IN, {"key": key, "now": utcnow()})
            assert row is not None
            known.put(key, row, generation)
            assert known.get(key, utcnow()) == row

    async def scenario() -> None:
        known.start()
        try:
            await until(lambda: known.listening)
            await keep_both()
            # Maria's session ends elsewhere: her answer goes, Jose's stays.
            write(update(WebSession).where(WebSession.id == keys[maria])
                  .values(revoked_at=utcnow()))
            await until(lambda: known.get(keys[maria], utcnow()) is None)
            assert known.get(keys[jose], utcnow()) is not None
            # Jose is edited (deactivated, a language chosen...): his answer goes.
            write(update(Contact).where(Contact.id == jose).values(language="en"))
            await until(lambda: known.get(keys[jose], utcnow()) is None)
            # A ticket of their organization changes: its ticket version with it.
            await keep_both_again(jose)
            organization = reads.first(_SIGNED_IN, {"key": keys[jose],
                                                   "now": utcnow()})["organization_id"]
            write(update(Organization).where(Organization.id == organization)
                  .values(ticket_version=Organization.ticket_version + 1))
            await until(lambda: known.get(keys[jose], utcnow()) is None)
            assert known.hits >= 3
        finally:
            await known.stop()

    async def keep_both_again(who: int) -> None:
        generation = known.generation
        row = reads.first(_SIGNED_IN, {"key": keys[who], "now": utcnow()})
        known.put(keys[who], row, generation)
        assert known.get(keys[who], utcnow()) is not None

    try:
        run_async(scenario())
    finally:
        reads.close()


def test_nothing_is_kept_that_a_change_may_have_overtaken_or_while_not_listening(directory):
    reads = LoopReads(directory)
    known = KnownSessions(directory)
    key = sessions.key_of(sessions.start(directory, contact_id(directory, MARIA),
                                         timedelta(hours=8)))

    def row():
        return reads.first(_SIGNED_IN, {"key": key, "now": utcnow()})

    async def scenario() -> None:
        known.put(key, row(), known.generation)  # not listening yet: not kept
        assert known.get(key, utcnow()) is None
        known.start()
        try:
            await until(lambda: known.listening)
            # Read, then a change is heard before the answer is put: the answer is not kept.
            generation, answer = known.generation, row()
            with transaction(directory) as session:
                session.exec(update(Contact).where(Contact.email == MARIA)
                             .values(name="María G."))
            await until(lambda: known.generation != generation)
            known.put(key, answer, generation)
            assert known.get(key, utcnow()) is None
            # The listening connection dies: what was kept is forgotten and nothing is
            # kept until it listens again, on a new connection.
            known.put(key, row(), known.generation)
            assert known.get(key, utcnow()) is not None
            with directory.connect() as admin:
                ended = admin.execute(text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE pid <> pg_backend_pid() AND datname = current_database() "
                    "AND (query LIKE 'LISTEN%' OR query = 'SELECT 1')")).scalar()
            assert ended == 1
            await until(lambda: not known.listening)
            assert known.get(key, utcnow()) is None
            known.put(key, row(), known.generation)
            assert known.get(key, utcnow()) is None
            await until(lambda: known.listening, timeout=20)
            known.put(key, row(), known.generation)
            assert known.get(key, utcnow()) is not None
            # Never used past the session's own expiry.
            assert known.get(key, utcnow() + timedelta(hours=9)) is None
        finally:
            await known.stop()

    try:
        run_async(scenario())
    finally:
        reads.close()


def log_in(web: httpx.Client, email: str) -> None:
    page = web.get("/login")
    answer = web.post("/login", data={"email": email, "password": PASSWORD,
                                      "csrf_token": CSRF.search(page.text)[1]})
    assert answer.status_code == 303, answer.text


def signed_in(web: httpx.Client) -> bool:
    return web.get("/tickets").status_code == 200


def cookie_opens_tickets(base: str, cookies: httpx.Cookies) -> bool:
    """Whether a copy of these cookies still opens the list (the copy, not the browser's own
    jar, gets the cleared cookie back)."""
    with httpx.Client(base_url=base, timeout=10, cookies=cookies) as copy:
        return signed_in(copy)


def test_sessions_ended_by_another_process_are_refused_by_every_web_process(directory, db_url,
                                                                            tmp_path):
    # Two web processes keep who is signed in; the sessions are ended by this process (as the
    # command line or a worker would): each web process hears of it and refuses the cookie.
    gateway = GatewayProcess(db_url, tmp_path / "var", HELPDESK_WEB_PROCESSES="2").start()
    base = f"http://127.0.0.1:{gateway.web_port}"
    try:
        with httpx.Client(base_url=base, timeout=10) as maria, \
                httpx.Client(base_url=base, timeout=10) as jose:
            log_in(maria, MARIA)
            log_in(jose, JOSE)
            # Enough pages that both processes have kept both sessions.
            assert all(signed_in(maria) and signed_in(jose) for _ in range(20))
            with transaction(directory) as session:
                assert sessions.end_all(session, contact_id(directory, MARIA)) == 1
            wait_for(lambda: not any(cookie_opens_tickets(base, maria.cookies)
                                     for _ in range(10)), timeout=5)
            assert signed_in(jose)
            with transaction(directory) as session:
                session.exec(update(Contact).where(Contact.email == JOSE)
                             .values(active=False))
            wait_for(lambda: not any(cookie_opens_tickets(base, jose.cookies)
                                     for _ in range(10)), timeout=5)
    finally:
        gateway.stop()
    assert "Traceback" not in gateway.log()
