"""Engines and transactions for SQLite (embedded default) and PostgreSQL (scale-out).

SQLite runs in WAL mode with ``synchronous=FULL`` so that a commit survives a crash of the process
and of the machine: the SMTP server answers 250 only after such a commit. Writing units of work
start with ``BEGIN IMMEDIATE`` on SQLite, so two writers queue on the lock instead of failing
half-way with "database is locked"; readers never wait for writers.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url
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


def single_read() -> dict[str, object]:
    """Execution options for a connection that runs one read and nothing else: on SQLite, no
    ``BEGIN`` of its own (the statement is its own transaction, as consistent as one)."""
    return {_BEGIN_OPTION: None}


def supports_skip_locked(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"
