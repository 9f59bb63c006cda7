"""Engines and transactions for SQLite (embedded default) and PostgreSQL (scale-out).

SQLite runs in WAL mode with ``synchronous=FULL`` so that a commit survives a crash of the process
and of the machine: the SMTP server answers 250 only after such a commit. Writing units of work
start with ``BEGIN IMMEDIATE`` on SQLite, so two writers queue on the lock instead of failing
half-way with "database is locked"; readers never wait for writers. Before it, a writer takes
an advisory lock on a file beside the database (``WriteLock``): the writers of every process
queue there and each goes on within a millisecond of the last one's commit, where SQLite's own
busy handler would sleep 50 to 100 ms between looks once a wait has lasted a little (an SMTP
client waiting for its 250 behind an ingest worker's batch).
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic_core import PydanticUndefined
from sqlalchemy import Select, event, insert
from sqlalchemy.engine import Connection, Dialect, Engine, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import make_transient_to_detached
from sqlalchemy.orm.instrumentation import manager_of_class
from sqlmodel import Session, SQLModel, create_engine

from storage import faults

_BEGIN_OPTION = "sqlite_begin"
_WAIT_OPTION = "sqlite_lock_wait"
_URGENT_OPTION = "sqlite_urgent"


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
        database = make_url(url).database
        in_memory = not database or database == ":memory:" or database.startswith("file::memory")
        _configure_sqlite(engine, None if in_memory else f"{database}.writelock")
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


class WriteLock:
    """The advisory lock (flock) SQLite's writers take before ``BEGIN IMMEDIATE``, one open
    file per connection (flock locks of two open files exclude each other, in one process or
    in two). Waiting looks again every half millisecond; after ``wait`` seconds the writer goes
    on to SQLite's own lock and busy timeout, as without this lock (which is only a faster
    queue: SQLite's lock is still what keeps writers apart).

    Urgent writers go first: one whose caller is waiting (an SMTP client for its 250) says so
    on a second file beside it (a shared flock, held until its commit), and a writer that is
    not urgent lets it through before it queues, for at most ``YIELD_SECONDS``: without that,
    an ingest worker that commits a batch and at once leases the next takes the lock again
    before the client's commit looks (a client waited behind two or three such transactions)."""

    YIELD_SECONDS = 0.05

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        self.intent_fd = os.open(f"{path}-urgent", os.O_RDWR | os.O_CREAT, 0o600)
        self.held = False
        self.urgent = False

    def take(self, wait: float, urgent: bool = False) -> None:
        deadline = time.monotonic() + wait
        if urgent:
            fcntl.flock(self.intent_fd, fcntl.LOCK_SH)  # (waits only while a writer looks)
            self.urgent = True
        # Not urgent: first let urgent writers through (nobody holds the intent file shared
        # once they are done), for a bounded time.
        elif _exclusive(self.intent_fd, min(deadline, time.monotonic() + self.YIELD_SECONDS)):
            fcntl.flock(self.intent_fd, fcntl.LOCK_UN)
        self.held = _exclusive(self.fd, deadline)

    def release(self) -> None:
        if self.held:
            self.held = False
            fcntl.flock(self.fd, fcntl.LOCK_UN)
        if self.urgent:
            self.urgent = False
            fcntl.flock(self.intent_fd, fcntl.LOCK_UN)

    def close(self) -> None:
        self.release()
        os.close(self.fd)
        os.close(self.intent_fd)


def _exclusive(fd: int, until: float) -> bool:
    """Take an exclusive flock on ``fd``, looking again every half millisecond until ``until``
    (time.monotonic); whether it was taken."""
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if time.monotonic() >= until:
                return False
            time.sleep(0.0005)
            continue
        return True


def _configure_sqlite(engine: Engine, lock_path: str | None) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, record):  # type: ignore[no-untyped-def]
        # Take transaction control from pysqlite so that BEGIN IMMEDIATE is ours to emit.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=60000")
        cursor.close()
        if lock_path is not None:
            record.info["write_lock"] = WriteLock(lock_path)

    @event.listens_for(engine, "close")
    def _on_close(_dbapi_connection, record):  # type: ignore[no-untyped-def]
        lock = record.info.pop("write_lock", None)
        if lock is not None:
            lock.close()

    def _release(connection):  # type: ignore[no-untyped-def]
        lock = connection.connection.info.get("write_lock") if connection.connection else None
        if lock is not None:
            lock.release()

    # After the transaction ends, whichever way; and when the connection goes back to the
    # pool, in case it ended in a way that said neither (a connection invalidated meanwhile).
    event.listen(engine, "commit", _release)
    event.listen(engine, "rollback", _release)

    @event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi_connection, record):  # type: ignore[no-untyped-def]
        lock = record.info.get("write_lock")
        if lock is not None:
            lock.release()

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
        lock = info.get("write_lock")
        if mode == "IMMEDIATE" and lock is not None:
            lock.take(wait_ms / 1000, urgent=bool(options.get(_URGENT_OPTION)))
        if mode is not None:
            try:
                connection.exec_driver_sql(f"BEGIN {mode}")
            except BaseException:
                if lock is not None:
                    lock.release()
                raise


@contextmanager
def transaction(engine: Engine, *, write: bool = True, lock_wait: float | None = None,
                urgent: bool = False) -> Iterator[Session]:
    """One unit of work: commit on success, roll back on any exception.

    ``lock_wait``: give up (with a temporary error) after waiting this many seconds for a lock,
    instead of the default minute. ``urgent``: somebody waits for this commit (an SMTP client):
    on SQLite, writers that are not urgent let it go first (``WriteLock``)."""
    with Session(engine, expire_on_commit=False) as session:
        if engine.dialect.name == "sqlite":
            options: dict[str, object] = {}
            if write:
                options[_BEGIN_OPTION] = "IMMEDIATE"
                options[_URGENT_OPTION] = urgent
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
    """The one-statement reads a web process runs on its event loop (who is signed in, on
    every page), on a connection kept for them.

    Each is what SQLAlchemy would run, compiled once, and then run by the driver itself: no
    pool checkout, no pre-ping, no reset, no ``BEGIN`` (each statement is its own transaction,
    as consistent as one), and none of the per-execution bookkeeping, which costs more than a
    read by primary key (about 0.15 ms against 0.02). The values go through the columns' own
    types, and a driver error comes out as SQLAlchemy's (``DBAPIError``), so callers see no
    difference. Only the thread that made it uses the connection (the event loop's); another
    thread reads through the pool. A connection the database dropped is replaced and the read
    tried once more, as the pool's pre-ping would have done."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._owner = threading.get_ident()
        self._connection: Connection | None = None
        self._compiled: dict[int, _Compiled] = {}

    def first(self, statement: Select[Any], params: dict[str, Any]) -> dict[str, Any] | None:
        """The first row, by column name, or None."""
        if threading.get_ident() != self._owner:
            with self._engine.connect() as connection:
                row = connection.execution_options(**_AUTOCOMMIT).execute(
                    statement, params).first()
            return None if row is None else dict(row._mapping)
        compiled = self._compiled.get(id(statement))
        if compiled is None or compiled.statement is not statement:
            compiled = self._compiled[id(statement)] = _Compiled.of(statement,
                                                                    self._engine.dialect)
        for attempt in (1, 2):
            if self._connection is None:
                self._connection = self._engine.connect().execution_options(**_AUTOCOMMIT)
            driver = self._connection.connection.driver_connection
            try:
                cursor = driver.cursor()
                try:
                    cursor.execute(compiled.sql, compiled.parameters(params))
                    row = cursor.fetchone()
                finally:
                    cursor.close()
            except self._engine.dialect.loaded_dbapi.Error as exc:
                error = driver_error(self._engine.dialect, compiled.sql, params, exc, driver)
                self.close()
                if attempt == 2 or not error.connection_invalidated:
                    raise error from exc
                continue
            return None if row is None else compiled.values(row)
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(Exception):
                self._connection.invalidate()  # a connection of our own: not for the pool
                self._connection.close()
            self._connection = None


@dataclass(frozen=True)
class _Compiled:
    """A SELECT as the driver runs it: its SQL, how to order its parameters, and how to read
    each column of a row (the column type's result processor, if it has one)."""

    statement: Select[Any]
    sql: str
    defaults: dict[str, Any]  # literal values bound by the statement itself
    order: tuple[str, ...] | None  # parameter names in order, for positional drivers
    binders: dict[str, Callable[[Any], Any]]
    names: tuple[str, ...]
    readers: tuple[Callable[[Any], Any] | None, ...]

    @classmethod
    def of(cls, statement: Select[Any], dialect: Dialect) -> _Compiled:
        compiled = statement.compile(dialect=dialect)
        binders = {name: processor for name, bind in compiled.binds.items()
                   if (processor := bind.type._cached_bind_processor(dialect)) is not None}
        columns = list(statement.selected_columns)
        defaults = {name: bind.effective_value for name, bind in compiled.binds.items()
                    if not bind.required}
        return cls(statement, compiled.string, defaults,
                   tuple(compiled.positiontup) if compiled.positional and
                   compiled.positiontup is not None else None,
                   binders, tuple(c.key for c in columns),
                   tuple(c.type._cached_result_processor(dialect, None) for c in columns))

    def parameters(self, params: dict[str, Any]) -> Any:
        values = {**self.defaults, **params}
        for name, processor in self.binders.items():
            values[name] = processor(values[name])
        return [values[name] for name in self.order] if self.order is not None else values

    def values(self, row: Sequence[Any]) -> dict[str, Any]:
        return {name: (read(value) if read is not None and value is not None else value)
                for name, read, value in zip(self.names, self.readers, row, strict=True)}


def driver_error(dialect: Dialect, sql: str, params: Any, exc: Exception,
                 driver: Any) -> DBAPIError:
    """A driver's error for a statement run without SQLAlchemy, as SQLAlchemy would have raised
    it (what the retry and temporary-error rules read), told to the outage log if it says the
    database is away."""
    error = DBAPIError.instance(
        sql, params, exc, dialect.loaded_dbapi.Error,
        connection_invalidated=dialect.is_disconnect(exc, driver, None), dialect=dialect)
    if faults.is_unavailable(error):
        faults.database.failed(exc)
    return error


# No transaction of its own: AUTOCOMMIT for PostgreSQL, no BEGIN for SQLite (pysqlite is in
# autocommit mode already, see _configure_sqlite).
_AUTOCOMMIT: dict[str, Any] = {"isolation_level": "AUTOCOMMIT", _BEGIN_OPTION: None}


def supports_skip_locked(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"


def once_per_transaction(session: Session, key: str, load: Callable[[], Any]) -> Any:
    """``load()``, read once per transaction of ``session`` and kept until it ends: for what a
    batch of mails applied in one transaction asks again and again (the active webhooks, the
    agents to alert, an organization's default priority) and that changes rarely. A change
    committed by another transaction meanwhile is seen by the next transaction."""
    current = session.get_transaction()
    kept = session.info.get(key)
    if current is None or kept is None or kept[0] is not current:
        kept = (current, load())
        session.info[key] = kept
    return kept[1]


Row = TypeVar("Row", bound=SQLModel)


@dataclass(frozen=True)
class _Insert:
    """One table's INSERT of every column but its id, as the driver runs it (as ``_Compiled``
    for reads): its SQL, its parameters' order and bind processors, and how to read the new
    id (the cursor's lastrowid on SQLite, RETURNING on PostgreSQL)."""

    sql: str
    keys: tuple[str, ...]
    order: tuple[str, ...] | None  # parameter names in order, for positional drivers
    binders: dict[str, Callable[[Any], Any]]
    returning: bool

    @classmethod
    def of(cls, table: Any, dialect: Dialect) -> _Insert:
        keys = tuple(column.key for column in table.columns if column.key != "id")
        returning = dialect.name != "sqlite"
        statement = insert(table).returning(table.c.id) if returning else insert(table)
        compiled = statement.compile(dialect=dialect, column_keys=list(keys))
        binders = {name: processor for name, bind in compiled.binds.items()
                   if (processor := bind.type._cached_bind_processor(dialect)) is not None}
        return cls(compiled.string, keys,
                   tuple(compiled.positiontup) if compiled.positional and
                   compiled.positiontup is not None else None, binders, returning)

    def run(self, connection: Connection, given: dict[str, Any]) -> int:
        values = {key: given.get(key) for key in self.keys}
        for name, processor in self.binders.items():
            values[name] = processor(values[name])
        parameters = [values[name] for name in self.order] if self.order is not None else values
        driver = connection.connection.driver_connection
        dialect = connection.dialect
        cursor = driver.cursor()  # type: ignore[union-attr]
        try:
            cursor.execute(self.sql, parameters)
            return int(cursor.fetchone()[0] if self.returning else cursor.lastrowid)
        except dialect.loaded_dbapi.Error as exc:
            raise driver_error(dialect, self.sql, parameters, exc, driver) from exc
        finally:
            cursor.close()


_INSERTS: dict[tuple[Any, str], _Insert] = {}  # per table and dialect, built once
_FIELDS: dict[type, tuple[tuple[str, Any, Callable[[], Any] | None], ...]] = {}


def plain_row(model: type[Row], **values: Any) -> Row:
    """A row as the model's constructor makes it (every field given or defaulted), for a row
    written once with ``insert_now`` and then only read: made as SQLAlchemy makes a loaded row
    (``new_instance``, the values put in its dict), not by setting each field through
    SQLAlchemy's instrumentation, which costs several times the INSERT itself."""
    fields = _FIELDS.get(model)
    if fields is None:
        fields = _FIELDS[model] = tuple(
            (name, info.default, info.default_factory)  # type: ignore[misc]
            for name, info in model.model_fields.items())
    row: Row = manager_of_class(model).new_instance()
    given = row.__dict__
    for name, default, factory in fields:
        if name in values:
            given[name] = values.pop(name)
        elif factory is not None:
            given[name] = factory()
        elif default is PydanticUndefined:
            raise TypeError(f"{model.__name__} needs {name}")
        else:
            given[name] = copy.copy(default)  # (a list or dict default is not shared)
    if values:
        raise TypeError(f"{model.__name__} has no field {', '.join(values)}")
    return row


def insert_now(session: Session, row: Row, *, keep: bool = False) -> Row:
    """Write ``row`` at once with one plain INSERT on the session's connection and give it its
    id, without the ORM's unit of work: a flush costs several times its statement, and a batch
    of mails writes a ticket, its history, its message and its queued mail for each one. The
    INSERT, built once per table, is run by the driver itself (SQLAlchemy's execution costs
    four times the statement), with the columns' own bind processors, and its errors come out
    as SQLAlchemy's.

    ``keep``: the row goes on in the session as loaded (a ticket, changed later in the same
    transaction); else it stays out of it, a plain object (what is written once: a history
    entry, a message, a queued mail). Its columns are read from the object as it is (what the
    model's constructor set, defaults included); a value the database would fill in itself
    is not read back. The row's id, if set, is not written: the database gives it."""
    table = row.__table__  # type: ignore[attr-defined]
    connection = session.connection()
    known = _INSERTS.get((table, connection.dialect.name))
    if known is None:
        known = _INSERTS[(table, connection.dialect.name)] = _Insert.of(table, connection.dialect)
    row.id = known.run(connection, row.__dict__)  # type: ignore[attr-defined]
    if keep:
        # A row of a savepoint rolled back may have left an object under the same key (SQLite
        # gives a rolled-back id again): the new row is the one the session knows from now on.
        stale = session.identity_map.get(session.identity_key(type(row), row.id))  # type: ignore[attr-defined]
        if stale is not None and stale is not row:
            session.expunge(stale)
        make_transient_to_detached(row)
        session.add(row)
    return row
