"""Group commit: callers that each need a row written and committed before they go on (an SMTP
client's 250, a notification recorded as sent) share one transaction with whoever else is
waiting at that moment, so one commit (one fsync) serves them all.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Generic, TypeVar

log = logging.getLogger("gateway.group_commit")

T = TypeVar("T")
R = TypeVar("R")


class GroupCommit(Generic[T, R]):
    """Records concurrently arriving items in one transaction: one commit answers every caller
    that arrived meanwhile, so throughput scales with concurrent callers instead of queueing
    each one behind the disk. Runs on the event loop; the writes in a thread, one at a time.

    Every caller gets its own answer whatever the others do: a caller that stops waiting (its
    SMTP client hung up, or its time ran out) while its item is being written does not take the
    answers of the rest of the batch with it, and an item whose caller left before its write
    began is not written at all."""

    def __init__(self, record_many: Callable[[list[T]], list[R]], what: str = "items") -> None:
        self._record_many = record_many
        self._what = what
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def record(self, item: T) -> R:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._pending.append((item, future))
        if self._flusher is None:
            self._flusher = loop.create_task(self._flush())
        return await future  # cancelled with the caller

    async def _flush(self) -> None:
        try:
            while self._pending:
                batch = [(item, future) for item, future in self._pending if not future.done()]
                self._pending = []
                if batch:
                    await self._write(batch)
        finally:
            self._flusher = None

    async def _write(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        try:
            results = await asyncio.to_thread(self._record_many, [item for item, _ in batch])
        except Exception as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        late = 0
        for (_, future), result in zip(batch, results, strict=True):
            if future.done():  # its caller left or gave up meanwhile
                late += 1
            else:
                future.set_result(result)
        if late:
            log.warning("%d of %d %s were committed after their callers stopped waiting",
                        late, len(batch), self._what)
