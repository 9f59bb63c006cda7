"""Which errors go away by themselves, and an outage logged once when it starts and once when
it ends.

A temporary error (the disk is full, the database is unreachable, a lock was not granted in
time, two transactions deadlocked) says nothing about the mail or notification being worked on:
the work is put back and done again later. Any other error is a property of the work itself (a
bug, a mail we cannot read) and is kept with its reason for a person to look at.
"""

from __future__ import annotations

import errno
import logging
import threading
import time
from collections.abc import Callable

import sqlalchemy.exc

log = logging.getLogger("gateway.outage")

# Disk and network conditions that an operator or time fixes: full or failing storage, a shared
# volume that went away, too many open files, a peer that is restarting.
TEMPORARY_ERRNOS = frozenset({
    errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS, errno.ENOMEM, errno.EMFILE,
    errno.ENFILE, errno.EAGAIN, errno.EBUSY, errno.EINTR, errno.ETIMEDOUT, errno.ESTALE,
    errno.ECONNREFUSED, errno.ECONNRESET, errno.ECONNABORTED, errno.EHOSTUNREACH,
    errno.ENETUNREACH, errno.ENETDOWN, errno.EPIPE,
})

# SQLSTATE classes and codes of PostgreSQL errors that a later attempt can pass (Appendix A of
# its manual): connection exceptions, insufficient resources, operator intervention (shutdown,
# statement timeout), system errors; lock not available.
UNAVAILABLE_SQLSTATE_CLASSES = ("08", "53", "57", "58")
UNAVAILABLE_SQLSTATES = frozenset({"55P03"})
# Two transactions in each other's way: serialization failure, deadlock, unique violation (two
# workers inserting the same row at the same moment; the second attempt finds the row).
CONFLICT_SQLSTATES = frozenset({"40001", "40P01", "23505"})

# SQLite's words for the same (sqlite3 gives no codes through SQLAlchemy's wrapper).
UNAVAILABLE_SQLITE_WORDS = ("database is locked", "database table is locked", "disk i/o error",
                            "database or disk is full", "unable to open database file")


def is_temporary(exc: BaseException) -> bool:
    """True if ``exc`` (or what caused it) is a condition that goes away by itself: a resource
    unavailable for now, or a conflict with a concurrent transaction."""
    return any(_unavailable(e) or _conflict(e) for e in _chain(exc))


def is_unavailable(exc: BaseException) -> bool:
    """True if ``exc`` says a resource (disk, database) is down, full or too slow right now."""
    return any(_unavailable(e) for e in _chain(exc))


def _chain(exc: BaseException) -> list[BaseException]:
    """The exception, what caused it, and the driver's error beneath a SQLAlchemy one."""
    found: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and all(current is not e for e in found):
        found.append(current)
        orig = getattr(current, "orig", None)
        if isinstance(current, sqlalchemy.exc.DBAPIError) and isinstance(orig, BaseException):
            found.append(orig)
        current = current.__cause__ or current.__context__
    return found


class Unavailable(Exception):
    """A service outside the database and the disk that cannot answer for now (DNS): the work
    that needed it is put back and done again later."""


def _unavailable(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError | Unavailable):
        return True
    if isinstance(exc, OSError):
        return isinstance(exc, TimeoutError) or exc.errno in TEMPORARY_ERRNOS
    if isinstance(exc, sqlalchemy.exc.TimeoutError | sqlalchemy.exc.DisconnectionError):
        return True  # no connection free in the pool in time; a connection lost
    if isinstance(exc, sqlalchemy.exc.DBAPIError):
        return bool(exc.connection_invalidated)
    sqlstate = getattr(exc, "sqlstate", None)  # psycopg
    module = type(exc).__module__
    if module.startswith("psycopg"):
        if isinstance(sqlstate, str):
            return sqlstate in UNAVAILABLE_SQLSTATES or sqlstate[:2] in UNAVAILABLE_SQLSTATE_CLASSES
        # No SQLSTATE: the server could not be reached at all.
        return type(exc).__name__ in {"OperationalError", "InterfaceError"}
    if module == "sqlite3":
        message = str(exc).lower()
        return any(words in message for words in UNAVAILABLE_SQLITE_WORDS)
    return False


def _conflict(exc: BaseException) -> bool:
    sqlstate = getattr(exc, "sqlstate", None)
    return type(exc).__module__.startswith("psycopg") and sqlstate in CONFLICT_SQLSTATES


class Outage:
    """One resource of this process (the database, the storage) seen failing and recovering.

    The first failure is logged with its reason, further ones are only counted, and the
    recovery is logged once with how long it lasted: a database down for ten minutes is two
    log lines per process, not a traceback a second."""

    def __init__(self, what: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.what = what
        self._clock = clock
        self._lock = threading.Lock()
        self.since: float | None = None
        self.failures = 0

    @property
    def down(self) -> bool:
        return self.since is not None

    def failed(self, exc: BaseException, where: str = "") -> None:
        with self._lock:
            self.failures += 1
            if self.since is not None:
                return
            self.since = self._clock()
        log.error("%s unavailable%s: %s; retrying until it is back",
                  self.what, f" ({where})" if where else "", describe(exc))

    def recovered(self) -> None:
        if self.since is None:  # the common case: no lock taken
            return
        with self._lock:
            if self.since is None:
                return
            lasted, failures = self._clock() - self.since, self.failures
            self.since, self.failures = None, 0
        log.warning("%s available again after %.0f s (%d failed attempt(s) meanwhile)",
                    self.what, lasted, failures)


def describe(exc: BaseException) -> str:
    """One line for a log: the exception's type and first line, without the SQL it ran."""
    if isinstance(exc, sqlalchemy.exc.StatementError) and exc.orig is not None:
        exc = exc.orig
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


# This process's view of its database; storage.db reports to it from the engine's events.
database = Outage("database")
