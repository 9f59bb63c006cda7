"""SQLite's writers queue on an advisory lock beside the database before BEGIN IMMEDIATE: held
for exactly the write transaction, whichever way it ends, never by readers."""

from __future__ import annotations

import fcntl
import os
import threading

import pytest
from sqlalchemy import text

from storage.db import WriteLock, make_engine, transaction
from storage.migrate import upgrade
from tests.conftest import wait_for


@pytest.fixture
def sqlite_engine(tmp_path):
    url = f"sqlite:///{tmp_path / 'helpdesk.db'}"
    upgrade(url)
    engine = make_engine(url)
    yield engine, tmp_path / "helpdesk.db.writelock"
    engine.dispose()


def locked(path) -> bool:
    """Whether some writer holds the lock now (asked through an open file of our own)."""
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # (closing drops the lock if we got it)
    return False


def test_the_lock_is_held_for_a_write_transaction_only(sqlite_engine):
    engine, lock = sqlite_engine
    with transaction(engine, write=False) as session:
        session.execute(text("SELECT count(*) FROM ticket"))
        assert not locked(lock)  # readers never take it
    with transaction(engine) as session:
        session.execute(text("SELECT count(*) FROM ticket"))
        assert locked(lock)
    assert not locked(lock)  # committed: free
    with pytest.raises(RuntimeError), transaction(engine) as session:
        session.execute(text("SELECT count(*) FROM ticket"))
        assert locked(lock)
        raise RuntimeError("a rule failed")
    assert not locked(lock)  # rolled back: free


def test_a_second_writer_waits_for_the_first_and_then_writes(sqlite_engine):
    # Two threads, each with its connection (two open files: they exclude each other as two
    # processes would): the second writer's transaction begins only once the first committed.
    engine, lock = sqlite_engine
    order: list[str] = []
    first_in = threading.Event()
    release_first = threading.Event()

    def first() -> None:
        with transaction(engine) as session:
            session.execute(text("SELECT 1"))
            order.append("first begins")
            first_in.set()
            release_first.wait(10)
            order.append("first commits")

    def second() -> None:
        first_in.wait(10)
        with transaction(engine) as session:
            session.execute(text("SELECT 1"))
            order.append("second begins")

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    first_in.wait(10)
    threading.Event().wait(0.2)  # the second is waiting meanwhile
    assert order == ["first begins"]
    release_first.set()
    for thread in threads:
        thread.join(10)
    assert order == ["first begins", "first commits", "second begins"]
    assert not locked(lock)


def test_a_writer_that_waited_too_long_goes_on_to_sqlites_own_lock(sqlite_engine):
    # The lock is only a faster queue: a unit of work with a short lock wait, behind a writer
    # that holds on, still gets SQLite's "database is locked" after its wait (a temporary
    # error for the caller), not a hang and not a write beside the other.
    engine, lock = sqlite_engine
    holding = threading.Event()
    done = threading.Event()

    def hold() -> None:
        with transaction(engine) as session:
            session.execute(text("SELECT 1"))
            holding.set()
            done.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    holding.wait(10)
    try:
        with pytest.raises(Exception, match="locked"), \
                transaction(engine, lock_wait=0.3) as session:
            session.execute(text("SELECT 1"))
    finally:
        done.set()
        holder.join(10)
    assert not locked(lock)


def test_a_writer_somebody_waits_for_goes_before_one_that_queued_after_it(sqlite_engine,
                                                                          monkeypatch):
    # An ingest worker's next transaction arrives while an SMTP client's commit waits behind
    # the one writing now: the client's goes first, the worker's after it.
    monkeypatch.setattr(WriteLock, "YIELD_SECONDS", 10.0)  # (the order must not depend on speed)
    engine, lock = sqlite_engine
    order: list[str] = []
    holding, release = threading.Event(), threading.Event()

    def holder() -> None:
        with transaction(engine) as session:
            session.execute(text("SELECT 1"))
            holding.set()
            release.wait(10)
            order.append("first commits")

    def writer(name: str, urgent: bool) -> None:
        with transaction(engine, urgent=urgent) as session:
            session.execute(text("SELECT 1"))
            order.append(name)

    first = threading.Thread(target=holder)
    first.start()
    holding.wait(10)
    client = threading.Thread(target=writer, args=("client's commit", True))
    client.start()
    wait_for(lambda: urgent_waiting(lock), timeout=10)
    worker = threading.Thread(target=writer, args=("worker's batch", False))
    worker.start()
    threading.Event().wait(0.2)  # the worker queues meanwhile
    release.set()
    for thread in (first, client, worker):
        thread.join(20)
    assert order == ["first commits", "client's commit", "worker's batch"]
    assert not locked(lock) and not urgent_waiting(lock)


def test_a_writer_lets_urgent_ones_through_for_a_bounded_time_only(sqlite_engine, monkeypatch):
    # An urgent writer that never gets on (stuck behind something else) does not stop the
    # others for longer than YIELD_SECONDS.
    monkeypatch.setattr(WriteLock, "YIELD_SECONDS", 0.2)
    engine, lock = sqlite_engine
    stuck = os.open(f"{lock}-urgent", os.O_RDWR)
    fcntl.flock(stuck, fcntl.LOCK_SH)
    try:
        with transaction(engine) as session:
            session.execute(text("INSERT INTO counter (name, value) VALUES ('probe', 1)"))
    finally:
        os.close(stuck)
    with transaction(engine, write=False) as session:
        assert session.execute(text("SELECT value FROM counter WHERE name = 'probe'")).scalar() == 1


def urgent_waiting(path) -> bool:
    """Whether an urgent writer says it is waiting or writing (a shared lock on the file beside
    the write lock's)."""
    return locked(f"{path}-urgent")
