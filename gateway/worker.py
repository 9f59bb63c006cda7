"""The gateway's worker processes: ingest workers (lease queued mails, prepare, apply), the
outbox sender and the web processes.

Each is an OS process of its own, started by ``helpdesk serve`` and watched by its supervisor
(gateway.supervisor), so parsing and the database work of ingestion, and the waits on the relay,
run beside the SMTP server, whose event loop only accepts. Two ingest workers take turns
naturally: while one parses its batch, the other writes its own. A worker leaves when told to,
or when the process that started it is gone; if it dies, its supervisor puts back what it held
(its leases, its claims) and starts another.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway import logs
from gateway.collector import settled
from gateway.settings import Settings
from storage import inbound
from storage.faults import describe, is_temporary, is_unavailable
from storage.queues import new_holder

log = logging.getLogger("gateway.worker")

Counter = Any  # a multiprocessing RawValue("Q"): shared memory, no lock

BATCH = 8  # small on SQLite: its one write lock is held only briefly (SMTP clients wait on it)
BATCH_POSTGRESQL = 32  # larger where writers do not queue: fewer leases and commits a mail
SLA_EVERY = 5.0  # seconds between looks for tickets whose SLA clocks must be worked out
SLA_BATCH = 500  # tickets worked out per transaction
OUTAGE_PAUSE = (0.5, 10.0)  # seconds between attempts while the database is away: first, most


def _begin(log_level: int, log_format: str) -> None:
    """What every worker process does first: its own logging and signals."""
    # Ctrl-C reaches the whole process group; the parent decides when workers stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logs.configure(logging.WARNING, log_format, gateway_level=log_level)


def run_ingest(settings: Settings, signals: Signals, slot: int, worker_id: str,
               parent_pid: int, log_level: int) -> None:
    """The body of one ingest worker process."""
    _begin(log_level, settings.log_format)
    from gateway.inbound.prepare import Prepared  # here: the child imports what it needs
    from gateway.service import build

    parts = build(settings)
    ingestor = parts.ingestor
    ingestor.worker_id = worker_id
    settled()
    signals.ready[slot] = 1
    size = BATCH if parts.engine.dialect.name == "sqlite" else BATCH_POSTGRESQL
    pause = Pause()
    while not signals.stop.value and os.getppid() == parent_pid:
        seen = signals.wake.value
        try:
            leased = ingestor.lease(size)
        except Exception as exc:
            # The database is away: wait, then try again; sooner if a channel could store a
            # mail meanwhile (the database is back).
            _failed("could not lease queued mail", exc)
            wait_for_change(signals.wake, seen, pause.next())
            continue
        pause.reset()
        if not leased:
            # Woken by the channels when they store a mail; a look anyway every poll, for mail
            # stored by another gateway process sharing the database, or due again after a
            # temporary error.
            wait_for_change(signals.wake, seen, settings.worker_poll_seconds)
            continue
        batch: list[tuple[int, Prepared | BaseException]] = []
        for mail in leased:
            try:
                batch.append((mail.id, ingestor.prepare(mail)))
            except Exception as exc:  # apply keeps it as failed, or queues it again
                batch.append((mail.id, exc))
        try:
            ingestor.apply(batch)
        except Exception as exc:  # the leases are put back, or run out, and are taken again
            _failed(f"could not apply a batch of {len(batch)} mails", exc)
            _put_back(ingestor, worker_id)
        bump(signals.applied)  # the sender may have notifications to deliver
    parts.engine.dispose()


def run_sender(settings: Settings, signals: Signals, slot: int, sender_id: str,
               parent_pid: int, log_level: int) -> None:
    """The body of the outbox sender process: deliver what is due, woken when an ingest worker
    applied mail, else every poll. It builds only the outbound side, and keeps the SLA clocks
    (``sla_clocks``): CPU work that would otherwise share the SMTP process's interpreter with
    its event loop."""
    _begin(log_level, settings.log_format)
    from gateway.outbound.sender import CLAIMED_AT_ONCE, sender_from_settings
    from storage.db import make_engine

    engine = make_engine(settings.database_url)
    sender = sender_from_settings(settings, engine)
    sender.sender_id = sender_id
    settled()
    signals.ready[slot] = 1

    async def both() -> None:
        clocks = asyncio.create_task(sla_clocks(settings, engine), name="SLA clocks")
        try:
            await loop()
        finally:
            clocks.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await clocks

    async def loop() -> None:
        pause = Pause()
        while not signals.stop.value and os.getppid() == parent_pid:
            seen = signals.applied.value
            started = time.monotonic()
            try:
                sent = await sender.deliver_due()
            except Exception as exc:
                # The database is away: wait, then try again; sooner if a worker could apply
                # mail meanwhile.
                _failed("could not claim notifications", exc)
                await asyncio.to_thread(wait_for_change, signals.applied, seen, pause.next())
                continue
            pause.reset()
            if not sent:
                await asyncio.to_thread(wait_for_change, signals.applied, seen,
                                        settings.worker_poll_seconds)
            elif (sent < CLAIMED_AT_ONCE
                  and (rest := started + SENDER_GATHER - time.monotonic()) > 0):
                # Caught up while mail comes in: let the next round's notifications gather, so
                # that they are claimed and recorded in a few transactions rather than a few
                # each (on SQLite every one takes the write lock accepted mail waits for). A
                # backlog (a full round) is sent on at once.
                await asyncio.sleep(rest)

    asyncio.run(both())
    engine.dispose()


async def sla_clocks(settings: Settings, engine: Any) -> None:
    """Every SLA_EVERY: the SLA clocks of tickets that changed, and those whose next warning
    or due time has come, are worked out again and stored (gateway.sla_clocks); batch after
    batch while there are more (after a calendar change, say)."""
    from gateway.sla_clocks import refresh_changed  # (holidays: for the sender only)
    from gateway.workflow import Workflow

    workflow = Workflow.from_settings(settings)  # the team's warnings go out as mail
    while True:
        try:
            while await asyncio.to_thread(refresh_changed, engine, limit=SLA_BATCH,
                                          workflow=workflow) == SLA_BATCH:
                pass
        except Exception as exc:
            if is_unavailable(exc):
                log.info("SLA clocks wait: %s", describe(exc))
            else:
                log.exception("SLA clocks could not be worked out; tried again in %s s",
                              SLA_EVERY)
        await asyncio.sleep(SLA_EVERY)


def run_web(settings: Settings, signals: Signals, slot: int, holder: str, parent_pid: int,
            log_level: int) -> None:
    """The body of one web process: the customer area, on a socket of its own bound to the
    gateway's web port (web.server), until the gateway stops or is gone."""
    _begin(log_level, settings.log_format)
    # Before prometheus-client is first imported: each web process counts in files of this
    # directory, which any of them adds up for /metrics (web.metrics).
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir(settings))
    from storage.db import make_engine
    from web.app import create_app
    from web.server import serve

    engine = make_engine(settings.database_url)
    app = create_app(settings, engine)

    def started() -> None:
        signals.ready[slot] = 1

    async def web() -> None:
        app.state.known_sessions.start()  # listen for session changes (web.known_sessions)
        try:
            await serve(app, settings.web_host, settings.web_port, on_started=started,
                        should_stop=lambda: bool(signals.stop.value)
                        or os.getppid() != parent_pid,
                        trusted_proxies=settings.trusted_proxies)
        finally:
            await app.state.known_sessions.stop()

    asyncio.run(web())
    app.state.loop_reads.close()
    engine.dispose()


def metrics_dir(settings: Settings) -> Path:
    """Where the web processes keep their counts for /metrics; emptied when serve starts."""
    return settings.var_dir / "metrics"


def _failed(what: str, exc: BaseException) -> None:
    """A temporary error is logged once by the outage log (storage.faults), not every second."""
    if is_temporary(exc):
        log.debug("%s: %s", what, describe(exc))
    else:
        log.exception(what)


def _put_back(ingestor: Any, worker_id: str) -> None:
    try:
        inbound.release(ingestor.engine, worker_id, died=False)
    except Exception as exc:  # the database is still away: the leases run out instead
        log.debug("could not put back the leases of %s: %s", worker_id, describe(exc))


SENDER_GATHER = 0.25  # seconds: at most one round of deliveries this often while mail comes in


class Pause:
    """Waits between attempts while something is away: doubling, capped."""

    def __init__(self, first: float = OUTAGE_PAUSE[0], most: float = OUTAGE_PAUSE[1]) -> None:
        self.first, self.most, self.current = first, most, first

    def next(self) -> float:
        value, self.current = self.current, min(self.current * 2, self.most)
        return value

    def reset(self) -> None:
        self.current = self.first


@dataclass
class Signals:
    """What the gateway process and its workers tell each other.

    Shared values, polled, rather than multiprocessing Events: an Event's set() waits for
    every sleeping waiter to wake, and a waiter killed in its sleep (SIGKILL of a worker) would
    leave the setter blocked for ever, a worker hung or the SMTP server frozen."""

    stop: Counter  # 1 once the gateway stops: workers finish what they hold and leave
    wake: Counter  # a channel stored a mail
    applied: Counter  # a worker applied a batch (notifications may be waiting)
    ready: Any  # one flag per worker slot: started and taking work


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


class WorkerProcess:
    """One supervised worker process (gateway.supervisor's Part): each start is a new OS process
    with a new name for what it holds, so that after a death exactly its leases or claims are
    put back (``put_back``, run by the supervisor in the parent)."""

    def __init__(self, name: str, role: str, target: Callable[..., None], settings: Settings,
                 signals: Signals, slot: int, put_back: Callable[[str], int]) -> None:
        self.name = name
        self.role = role
        self._target = target
        self._settings = settings
        self._signals = signals
        self._slot = slot
        self._put_back = put_back
        self._context = multiprocessing.get_context("spawn")  # clean: no inherited threads
        self._process: multiprocessing.process.BaseProcess | None = None
        self.holder = ""

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def start(self) -> None:
        self.holder = new_holder(self.role)
        self._signals.ready[self._slot] = 0
        self._process = self._context.Process(
            target=self._target, name=self.name, daemon=True,
            args=(self._settings, self._signals, self._slot, self.holder, os.getpid(),
                  logging.getLogger("gateway").getEffectiveLevel()))
        self._process.start()
        log.info("%s started (pid %s)", self.name, self._process.pid)

    def alive(self) -> bool:
        return self._process is not None and self._process.is_alive()

    def ready(self) -> bool:
        return bool(self._signals.ready[self._slot])

    def exit_reason(self) -> str:
        code = self._process.exitcode if self._process is not None else None
        if code is None:
            return "not started"
        if code < 0:
            try:
                return f"killed by {signal.Signals(-code).name}"
            except ValueError:
                return f"killed by signal {-code}"
        return f"exited with status {code}"

    def after_death(self) -> str:
        """Put back what the dead process held; say what was put back."""
        if self.role == "web":
            return "a web process holds nothing"
        count = self._put_back(self.holder)
        return f"{count} {'lease(s)' if self.role == 'ingest' else 'claim(s)'} put back"

    def stop(self, deadline: float) -> None:
        process = self._process
        if process is None:
            return
        process.join(max(0.1, deadline - time.monotonic()))
        if process.is_alive():  # what it holds runs out; another worker takes it
            process.terminate()
            process.join(5)
