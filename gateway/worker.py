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

from gateway.prepare import Prepared
from gateway.settings import Settings

log = logging.getLogger("gateway.worker")

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
    signals.ready[number].set()
    stop, wake = signals.stop, signals.wake
    while not stop.is_set() and os.getppid() == parent_pid:
        try:
            leased = ingestor.lease(BATCH)
        except Exception:  # the database is away: wait, then try again
            log.exception("could not lease queued mail")
            time.sleep(1)
            continue
        if not leased:
            # Woken by the channels when they store a mail; a look anyway every poll, for
            # mail stored by another gateway process sharing the database.
            wake.wait(settings.worker_poll_seconds)
            wake.clear()
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
        signals.applied.set()  # the sender may have notifications to deliver
    parts.engine.dispose()


@dataclass
class Signals:
    """What the gateway process and its workers tell each other."""

    stop: Event
    wake: Event  # a channel stored a mail
    applied: Event  # a worker applied a batch (notifications may be waiting)
    ready: list[Event]


class IngestProcesses:
    """Starts and stops the worker processes of one gateway."""

    def __init__(self, settings: Settings, count: int) -> None:
        self.settings = settings
        self.count = count
        context = multiprocessing.get_context("spawn")  # clean children: no inherited threads
        self.signals = Signals(context.Event(), context.Event(), context.Event(),
                               [context.Event() for _ in range(count)])
        self.wake = self.signals.wake
        self.applied = self.signals.applied
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
        return all(event.wait(max(0.0, deadline - time.monotonic()))
                   for event in self.signals.ready)

    def stop(self, timeout: float = 15) -> None:
        self.signals.stop.set()
        self.signals.wake.set()
        deadline = time.monotonic() + timeout
        for process in self._processes:
            process.join(max(0.1, deadline - time.monotonic()))
            if process.is_alive():  # its leases run out; another worker takes the mails
                process.terminate()
                process.join(5)
