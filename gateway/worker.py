"""The ingest loop: lease queued mails in batches, prepare them in a process pool, apply them.

Two stages run side by side: while one batch is written to the database (in a thread of this
process), the next is being parsed in the pool (other processes, other cores). A batch is small
(a few dozen mails) so that a lease never sits long and one slow mail delays few others.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
from concurrent.futures import Executor, ProcessPoolExecutor

from gateway.ingest import Ingestor
from gateway.prepare import Prepared, prepare

log = logging.getLogger("gateway.worker")


def make_pool(processes: int) -> Executor:
    # "spawn": the children start clean, without this process's threads, sockets or engine.
    return ProcessPoolExecutor(max_workers=processes,
                               mp_context=multiprocessing.get_context("spawn"))


class IngestWorker:
    def __init__(self, ingestor: Ingestor, pool: Executor, *, batch: int = 32,
                 poll_seconds: float = 1.0) -> None:
        self.ingestor = ingestor
        self.pool = pool
        self.batch = batch
        self.poll_seconds = poll_seconds
        self.processed = asyncio.Event()  # set after each applied batch (wakes the sender)

    async def run(self, ready: asyncio.Event) -> None:
        """Lease and prepare in one task, apply in another, one batch apart."""
        prepared: asyncio.Queue[list[tuple[int, Prepared | BaseException]]] = asyncio.Queue(1)
        applier = asyncio.create_task(self._apply(prepared))
        try:
            await self._lease_and_prepare(ready, prepared)
        finally:
            applier.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await applier

    async def _lease_and_prepare(
        self, ready: asyncio.Event,
        out: asyncio.Queue[list[tuple[int, Prepared | BaseException]]],
    ) -> None:
        loop = asyncio.get_running_loop()
        ing = self.ingestor
        while True:
            ready.clear()
            try:
                leased = await asyncio.to_thread(ing.lease, self.batch)
            except Exception:  # the database is away: wait, then try again
                log.exception("could not lease queued mail")
                leased = []
            if not leased:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(ready.wait(), self.poll_seconds)
                continue
            futures = [loop.run_in_executor(self.pool, prepare, key, ing.blobs.root,
                                            ing.policy.max_attachment_size)
                       for _queue_id, key in leased]
            results = await asyncio.gather(*futures, return_exceptions=True)
            await out.put([(queue_id, result) for (queue_id, _key), result
                           in zip(leased, results, strict=True)])

    async def _apply(self, batches: asyncio.Queue[list[tuple[int, Prepared | BaseException]]],
                     ) -> None:
        while True:
            batch = await batches.get()
            try:
                await asyncio.to_thread(self.ingestor.apply, batch)
            except Exception:  # leases run out and the mails are taken again later
                log.exception("could not apply a batch of %d mails", len(batch))
            self.processed.set()
