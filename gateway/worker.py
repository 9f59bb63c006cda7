"""Ingest worker processes: lease queued mails in small batches, prepare them, apply them.

Each worker is an OS process of its own (started by ``helpdesk serve``), so parsing and the
database work of ingestion run on other cores than the SMTP server, whose event loop only
accepts. Two workers take turns naturally: while one parses its batch, the other writes its own.
A worker leaves when told to, or when the process that started it is gone.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import time
from dataclasses import dataclass
from multiprocessing.synchronize import Event
from typing import Any

from gateway.inbound.prepare import Prepared
from gateway.settings import Settings

log = logging.getLogger("gateway.worker")

Counter = Any  # a multiprocessing RawValue("Q"): shared memory, no lock

BATCH = 8  # small: a lease never waits long, and SQLite's write lock is held only briefly


def run(settings: Settings, signals: Signals, number: int, parent_pid: int,
        log_level: int) -> None:
    """The body of one worker process."""
    # Ctrl-C reaches the whole process group; the parent decides when workers stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(level=logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("gateway").setLevel(log_level)
    from gateway.service import build  # here: the child imports what it needs after spawn

    parts = build(settings)
    ingestor = parts.ingestor
    signals.ready[number] = 1
    stop = signals.stop
    while not stop.is_set() and os.getppid() == parent_pid:
        seen = signals.wake.value
        try:
            leased = ingestor.lease(BATCH)
        except Exception:  # the database is away: wait, then try again
            log.exception("could not lease queued mail")
            time.sleep(1)
            continue
        if not leased:
            # Woken by the channels when they store a mail; a look anyway every poll, for
            # mail stored by another gateway process sharing the database.
            wait_for_change(signals.wake, seen, settings.worker_poll_seconds)
            continue
        batch: list[tuple[int, Prepared | BaseException]] = []
        for queue_id, key in leased:
            try:
                batch.append((queue_id, ingestor.prepare(key)))
            except Exception as exc:  # kept as failed with its error by apply
                batch.append((queue_id, exc))
        try:
            ingestor.apply(batch)
        except Exception:  # the leases run out and the mails are taken again
            log.exception("could not apply a batch of %d mails", len(batch))
        bump(signals.applied)  # the sender may have notifications to deliver
    parts.engine.dispose()


@dataclass
class Signals:
    """What the gateway process and its workers tell each other.

    Shared counters, polled, rather than multiprocessing Events: an Event's set() waits for
    every sleeping waiter to wake, and a waiter killed in its sleep (SIGKILL of the gateway)
    would leave the setter blocked for ever, a worker hung or the SMTP server frozen."""

    stop: Event  # set by the gateway; workers only look at it, never sleep on it
    wake: Counter  # a channel stored a mail
    applied: Counter  # a worker applied a batch (notifications may be waiting)
    ready: Any  # one flag per worker: started and taking mail


def bump(counter: Counter) -> None:
    # No lock on purpose: a lost increment still changes the value, and nothing can be left
    # blocked on a lock held by a process that was killed.
    counter.value = (counter.value + 1) % 2**63


def wait_for_change(counter: Counter, seen: int, timeout: float, step: float = 0.02) -> int:
    """Sleep until ``counter`` moves past ``seen`` or ``timeout`` passes; its value then."""
    deadline = time.monotonic() + timeout
    while counter.value == seen and time.monotonic() < deadline:
        time.sleep(step)
    return counter.value


class IngestProcesses:
    """Starts and stops the worker processes of one gateway."""

    def __init__(self, settings: Settings, count: int) -> None:
        self.settings = settings
        self.count = count
        context = multiprocessing.get_context("spawn")  # clean children: no inherited threads
        self.signals = Signals(context.Event(), context.RawValue("Q", 0),
                               context.RawValue("Q", 0), context.RawArray("b", count))
        self._processes = [
            context.Process(target=run, name=f"ingest-{n}", daemon=True,
                            args=(settings, self.signals, n, os.getpid(),
                                  logging.getLogger("gateway").getEffectiveLevel()))
            for n in range(count)
        ]

    def start(self) -> None:
        for process in self._processes:
            process.start()

    def wait_ready(self, timeout: float = 60) -> bool:
        """True once every worker has started and is taking mail."""
        deadline = time.monotonic() + timeout
        while sum(self.signals.ready) < self.count and time.monotonic() < deadline:
            time.sleep(0.02)
        return sum(self.signals.ready) >= self.count

    def wake(self) -> None:
        """A channel stored a mail: idle workers look at the queue now."""
        bump(self.signals.wake)

    def stop(self, timeout: float = 15) -> None:
        self.signals.stop.set()
        deadline = time.monotonic() + timeout
        for process in self._processes:
            process.join(max(0.1, deadline - time.monotonic()))
            if process.is_alive():  # its leases run out; another worker takes the mails
                process.terminate()
                process.join(5)
