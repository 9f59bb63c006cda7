"""Who is signed in with which session, kept by a web process between changes (PostgreSQL).

Every page starts by asking who is signed in (web.auth): a read by key that costs more than the
rest of a kept ticket list. On PostgreSQL each web process keeps the answers, and the database
tells it when one may have changed: triggers (migration 0013) send a notification on the
``helpdesk_web`` channel, at commit, whenever a session, a contact or an organization changes
(a session ended or renewed, a contact deactivated or edited, an organization's ticket version
raised), whoever changed it (another web process, the workers, the command line). The process
listens on a connection of its own and forgets what a notification names.

The rules that keep it right:

- nothing is kept unless the process is listening; when the listening connection fails
  everything is forgotten, and nothing is kept again before it listens again (notifications
  sent meanwhile are lost);
- an answer read while a notification arrived is not kept (``generation``): it may predate
  the change the notification is about;
- this process's own writes forget everything at once (web.app's middleware, after any
  request that may write), so its next page never waits for the notification;
- an entry is used for at most ``MAX_AGE`` and never after its session's expiry, and the
  listening connection is checked every ``HEARTBEAT`` (a connection that died silently is
  noticed then).

What is left is the time a notification takes to reach another web process: a session ended
there is refused here a few milliseconds later. SQLite has no notifications; its read is a
look-up in the process's own memory map of the file, and is made every time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Engine

from storage.faults import describe
from storage.sessions import CHANGES_CHANNEL

log = logging.getLogger("gateway.web.sessions")


class KnownSessions:
    MAX_AGE = 60.0  # seconds an answer is used at most
    HEARTBEAT = 15.0  # seconds between checks that the listening connection still answers
    SIZE = 20000  # sessions kept at most; beyond, everything is forgotten and kept anew
    RETRY_MAX = 30.0  # seconds at most between attempts to listen again

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self.remote = engine.dialect.name == "postgresql"
        self._kept: dict[str, tuple[dict[str, Any], float]] = {}
        self.generation = 0  # raised by every notification and every forget_all
        self.listening = False
        self._owner: int | None = None
        self._task: asyncio.Task[None] | None = None
        self.hits = self.misses = 0

    # ------------------------------------------------------------------ the loop's side

    def start(self) -> None:
        """Listen from the running event loop (web processes: gateway.worker; tests: the
        application's lifespan). Only that loop's thread uses what is kept; another thread
        (Starlette's pool, a second test client) always reads."""
        if not self.remote or self._task is not None:
            return
        self._owner = threading.get_ident()
        self._task = asyncio.get_running_loop().create_task(self._listen(),
                                                            name="known sessions")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is None or self._owner != threading.get_ident():
            self._task = task
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        self._owner = None

    def get(self, key: str, now: datetime) -> dict[str, Any] | None:
        """The signed-in row kept for a session (a copy), if it can be used."""
        if not self.listening or threading.get_ident() != self._owner:
            return None
        kept = self._kept.get(key)
        if kept is not None:
            row, since = kept
            if time.monotonic() - since < self.MAX_AGE and row["session_expires_at"] > now:
                self.hits += 1
                return dict(row)
            del self._kept[key]
        self.misses += 1
        return None

    def put(self, key: str, row: dict[str, Any], generation: int) -> None:
        """Keep a row read when ``generation`` was current, if no change was heard since."""
        if (not self.listening or generation != self.generation
                or threading.get_ident() != self._owner):
            return
        if len(self._kept) >= self.SIZE:
            self._kept.clear()
        self._kept[key] = (dict(row), time.monotonic())

    def renewed(self, key: str, expires_at: datetime) -> None:
        """This process renewed the session: the kept row says so until the database does."""
        kept = self._kept.get(key)
        if kept is not None:
            kept[0]["session_expires_at"] = expires_at

    def forget_all(self) -> None:
        self.generation += 1
        self._kept.clear()

    # ------------------------------------------------------------------ notifications

    def heard(self, payload: str) -> None:
        """A change named by a notification: ``s:<session key>``, ``c:<contact id>`` or
        ``o:<organization id>``."""
        self.generation += 1
        kind, _, name = payload.partition(":")
        if kind == "s":
            self._kept.pop(name, None)
            return
        column = {"c": "id", "o": "organization_id"}.get(kind)
        if column is None or not name.isdigit():
            self._kept.clear()  # not one of ours: forget everything rather than guess
            return
        number = int(name)
        for key in [key for key, (row, _since) in self._kept.items() if row[column] == number]:
            del self._kept[key]

    async def _listen(self) -> None:
        import psycopg

        wait = 1.0
        while True:
            try:
                arguments, options = self._engine.dialect.create_connect_args(self._engine.url)
                connection = await psycopg.AsyncConnection.connect(
                    *arguments, **{**options, "connect_timeout": 10, "keepalives_idle": 10,
                                   "keepalives_interval": 5, "keepalives_count": 3},
                    autocommit=True)
                async with connection:
                    await connection.execute(f"LISTEN {CHANGES_CHANNEL}")
                    self.forget_all()
                    self.listening, wait = True, 1.0
                    log.debug("listening for session changes")
                    while True:
                        async for notice in connection.notifies(timeout=self.HEARTBEAT):
                            self.heard(notice.payload)
                        await asyncio.wait_for(connection.execute("SELECT 1"), 10)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 (whatever failed, the pages read again)
                if self.listening:
                    log.warning("not listening for session changes any more: %s; every page "
                                "reads who is signed in until listening again", describe(exc))
            finally:
                self.listening = False
                self.forget_all()
            await asyncio.sleep(wait)
            wait = min(wait * 2, self.RETRY_MAX)


class ForgetOnWrite:
    """ASGI middleware: after a request that may have written (any method but GET, HEAD and
    OPTIONS), this process forgets every kept session before the response leaves, so the page
    the browser asks for next reflects the write (a logout, a language chosen, a contact
    deactivated) without waiting for the notification."""

    READING = frozenset({"GET", "HEAD", "OPTIONS"})

    def __init__(self, app: Any, known: KnownSessions) -> None:
        self.app = app
        self.known = known

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] in self.READING:
            await self.app(scope, receive, send)
            return

        async def send_after_forgetting(message: Any) -> None:
            if message["type"] == "http.response.start":
                self.known.forget_all()
            await send(message)

        try:
            await self.app(scope, receive, send_after_forgetting)
        finally:
            self.known.forget_all()
