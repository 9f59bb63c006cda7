"""Keeps the long-running parts of one gateway alive: a part that dies is logged, what it held is
put back, and it is started again after a pause that grows while it keeps dying; a part that
keeps dying is reported (log, ``health()``), never a silent stall.

The parts are the ingest worker processes, the sender process, the IMAP pollers (threads) and
the housekeeping loop (a task). Each is watched through the small ``Part`` protocol.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol

from storage.faults import describe

log = logging.getLogger("gateway.supervisor")


class Part(Protocol):
    name: str

    def start(self) -> None: ...

    def alive(self) -> bool: ...

    def exit_reason(self) -> str: ...

    def after_death(self) -> str:
        """Clean up after a death (put back leases); say what was done. May raise."""
        ...


@dataclass(frozen=True)
class Policy:
    """How soon a dead part comes back, and when it counts as failing."""

    first_delay: float = 0.5  # seconds before the first restart; doubles with each death
    most_delay: float = 60.0
    window: float = 600.0  # deaths older than this are forgotten
    failing_after: int = 5  # deaths within the window that make a part "failing"


@dataclass
class _Watch:
    part: Part
    deaths: deque[float] = field(default_factory=deque)
    restarts: int = 0
    restart_at: float | None = None
    last_exit: str = ""
    reported: bool = False  # "keeps dying" was logged for the current run of deaths


class Supervisor:
    def __init__(self, policy: Policy = Policy(), interval: float = 0.2,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.policy = policy
        self.interval = interval
        self.clock = clock
        self._watches: list[_Watch] = []

    def watch(self, part: Part) -> None:
        """Watch a part that has been started."""
        self._watches.append(_Watch(part))

    async def run(self) -> None:
        while True:
            await self.look()
            await asyncio.sleep(self.interval)

    async def look(self) -> None:
        """One look at every part: notice deaths, restart those whose pause is over."""
        for watch in self._watches:
            try:
                await self._look(watch)
            except Exception:  # the supervisor itself must not die of one part
                log.exception("supervising %s failed", watch.part.name)

    async def _look(self, watch: _Watch) -> None:
        part, now = watch.part, self.clock()
        if watch.restart_at is None:
            if not part.alive():
                watch.last_exit = part.exit_reason()
                await self._died(watch, now)
            elif watch.reported and not self._recent(watch, now):
                watch.reported = False
                log.warning("%s has stayed up for %.0f minutes: no longer failing", part.name,
                            self.policy.window / 60)
            return
        if now < watch.restart_at:
            return
        watch.restart_at = None
        try:
            part.start()
        except Exception as exc:
            watch.last_exit = f"could not start: {describe(exc)}"
            await self._died(watch, now)
            return
        watch.restarts += 1

    async def _died(self, watch: _Watch, now: float) -> None:
        part, policy = watch.part, self.policy
        watch.deaths.append(now)
        recent = self._recent(watch, now)
        delay = min(policy.first_delay * 2 ** (recent - 1), policy.most_delay)
        watch.restart_at = now + delay
        try:
            cleaned = await asyncio.to_thread(part.after_death)
        except Exception as exc:  # what it held runs out by itself instead
            cleaned = f"could not clean up after it: {describe(exc)}"
        log.error("%s died (%s)%s; restarting in %g s", part.name, watch.last_exit,
                  f"; {cleaned}" if cleaned else "", round(delay, 2))
        if recent >= policy.failing_after and not watch.reported:
            watch.reported = True
            log.critical("%s keeps dying: %d times in the last %.0f minutes (last: %s); "
                         "restarting at most every %.0f s", part.name, recent,
                         policy.window / 60, watch.last_exit, policy.most_delay)

    def _recent(self, watch: _Watch, now: float) -> int:
        while watch.deaths and watch.deaths[0] < now - self.policy.window:
            watch.deaths.popleft()
        return len(watch.deaths)

    def health(self) -> list[dict[str, Any]]:
        """Each part: alive now, restarts so far, deaths within the window, failing or not."""
        now = self.clock()
        return [{
            "part": w.part.name,
            "alive": w.restart_at is None and w.part.alive(),
            "restarts": w.restarts,
            "recent_deaths": self._recent(w, now),
            "failing": w.reported,  # from "keeps dying" until it stayed up a whole window
            "last_exit": w.last_exit or None,
        } for w in self._watches]

    @property
    def healthy(self) -> bool:
        return not any(part["failing"] for part in self.health())


class TaskPart:
    """A coroutine of the gateway's own event loop, started again if it ends."""

    def __init__(self, name: str, factory: Callable[[], Coroutine[Any, Any, None]]) -> None:
        self.name = name
        self._factory = factory
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._factory(), name=self.name)

    def alive(self) -> bool:
        return self._task is not None and not self._task.done()

    def exit_reason(self) -> str:
        if self._task is None:
            return "not started"
        if self._task.cancelled():
            return "cancelled"
        exc = self._task.exception()
        return f"raised {describe(exc)}" if exc is not None else "returned"

    def after_death(self) -> str:
        return ""

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


class ThreadPart:
    """A thread with start() / is_alive() of its own (an IMAP poller)."""

    def __init__(self, name: str, target: Any) -> None:
        self.name = name
        self._target = target

    def start(self) -> None:
        self._target.start()

    def alive(self) -> bool:
        return bool(self._target.is_alive())

    def exit_reason(self) -> str:
        return "its thread ended"

    def after_death(self) -> str:
        return ""
