"""Engines and transactions for SQLite (embedded default) and PostgreSQL (scale-out).

SQLite runs in WAL mode with ``synchronous=FULL`` so that a commit survives a crash of the process
and of the machine: the SMTP server answers 250 only after such a commit. Writing units of work
start with ``BEGIN IMMEDIATE`` on SQLite, so two writers queue on the lock instead of failing
half-way with "database is locked"; readers never wait for writers.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine, Row, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import Executable
from sqlmodel import Session, create_engine

from storage import faults

_BEGIN_OPTION = "sqlite_begin"
_WAIT_OPTION = "sqlite_lock_wait"


def normalize_url(url: str) -> str:
    """Use psycopg 3 for PostgreSQL whatever driver the URL names (or none)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


# How long a writer waits for SQLite's write lock (or PostgreSQL for a lock) unless a unit of work
# asks for less (the SMTP server, which must answer its client in time).
LOCK_WAIT_SECONDS = 60.0


def make_engine(url: str) -> Engine:
    url = normalize_url(url)
    if url.startswith("sqlite"):
        # As many pooled connections as the web's thread pool may use at once: opening one
        # (WAL, pragmas) costs more than the query it is opened for.
        engine = create_engine(url, connect_args={"check_same_thread": False,
                                                  "timeout": LOCK_WAIT_SECONDS},
                               pool_size=20, max_overflow=20)
        _configure_sqlite(engine)
    else:
        # connect_timeout: a server that does not answer at all (stopped, firewalled) is an
        # error after 10 s, not a hang.
        engine = create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10,
                               connect_args={"connect_timeout": 10})
    _report_outages(engine)
    return engine


def _report_outages(engine: Engine) -> None:
    """Tell this process's database outage log when the database fails and when it works."""

    @event.listens_for(engine, "handle_error")
    def _on_error(context):  # type: ignore[no-untyped-def]
        if faults.is_unavailable(context.original_exception):
            faults.database.failed(context.original_exception)

    @event.listens_for(engine, "commit")
    def _on_commit(connection):  # type: ignore[no-untyped-def]
        faults.database.recovered()


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):  # type: ignore[no-untyped-def]
        # Take transaction control from pysqlite so that BEGIN IMMEDIATE is ours to emit.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=60000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection):  # type: ignore[no-untyped-def]
        options = connection.get_execution_options()
        # The busy timeout is the connection's, so it is set for each unit of work that wants
        # another one than the connection has now (pooled connections are reused).
        wait_ms = int(options.get(_WAIT_OPTION, LOCK_WAIT_SECONDS) * 1000)
        info = connection.connection.info
        if info.get("busy_timeout") != wait_ms:
            connection.exec_driver_sql(f"PRAGMA busy_timeout={wait_ms}")
            info["busy_timeout"] = wait_ms
        mode = options.get(_BEGIN_OPTION, "DEFERRED")
        if mode is not None:
            connection.exec_driver_sql(f"BEGIN {mode}")


@contextmanager
def transaction(engine: Engine, *, write: bool = True,
                lock_wait: float | None = None) -> Iterator[Session]:
    """One unit of work: commit on success, roll back on any exception.

    ``lock_wait``: give up (with a temporary error) after waiting this many seconds for a lock,
    instead of the default minute."""
    with Session(engine, expire_on_commit=False) as session:
        if engine.dialect.name == "sqlite":
            options: dict[str, object] = {}
            if write:
                options[_BEGIN_OPTION] = "IMMEDIATE"
            if lock_wait is not None:
                options[_WAIT_OPTION] = lock_wait
            if options:
                session.connection(execution_options=options)
        elif lock_wait is not None:
            # Local to this transaction; statement_timeout also bounds a wait for a row lock.
            milliseconds = max(1, int(lock_wait * 1000))
            session.connection().exec_driver_sql(
                f"SET LOCAL statement_timeout = {milliseconds}")
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


class LoopReads:
    """A connection of its own for the one-statement reads a web process runs on its event loop
    (who is signed in, on every page): no pool checkout, no pre-ping, no reset, no ``BEGIN``
    (each statement is its own transaction, as consistent as one), so such a read costs one
    round trip to PostgreSQL instead of four. Only the thread that made it uses it (the event
    loop's); any other thread reads through the pool. A connection the database dropped is
    replaced and the read tried once more, as the pool's pre-ping would have done."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._owner = threading.get_ident()
        self._connection: Connection | None = None

    def first(self, statement: Executable, params: dict[str, Any]) -> Row[Any] | None:
        if threading.get_ident() != self._owner:
            with self._engine.connect() as connection:
                return connection.execution_options(**_AUTOCOMMIT).execute(
                    statement, params).first()
        for attempt in (1, 2):
            if self._connection is None:
                self._connection = self._engine.connect().execution_options(**_AUTOCOMMIT)
            try:
                return self._connection.execute(statement, params).first()
            except DBAPIError as exc:
                self.close()
                if attempt == 2 or not exc.connection_invalidated:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(Exception):
                self._connection.close()
            self._connection = None


# No transaction of its own: AUTOCOMMIT for PostgreSQL, no BEGIN for SQLite (pysqlite is in
# autocommit mode already, see _configure_sqlite).
_AUTOCOMMIT: dict[str, Any] = {"isolation_level": "AUTOCOMMIT", _BEGIN_OPTION: None}


def supports_skip_locked(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"
