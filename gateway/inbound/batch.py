"""``helpdesk ingest``: many mails from files, through the same pipeline as SMTP, in batches.

A pool of processes (one per core) reads each mail, stores its bytes durably and prepares it
(parse, file checks and storage, sender verdict: ``Preparer``) while this process writes the
batch before: one transaction queues a batch, already leased to this process (a running
gateway leaves those mails alone unless this process dies), and one applies it as the
gateway's workers do (``Ingestor.apply``). Outcomes come back in the order of the files. A
handful of mails is prepared here: starting the pool would cost more than it saves.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import pickle
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

from gateway.inbound.ingest import RETRY, Ingestor, Preparer
from gateway.inbound.prepare import Prepared
from storage import inbound
from storage.blobs import BlobStore
from storage.faults import Unavailable, describe, is_temporary

BATCH = 32  # mails per transaction: one commit (one fsync) queues them, one applies them
POOL_FROM = 2 * BATCH  # fewer mails than this are prepared in this process
AHEAD = 4 * BATCH  # mails the pool may prepare ahead of the writes (bounds memory)
CHANNEL = "file"

Source = tuple[str, "Path | bytes"]  # a label (the file, or file#n of an mbox) and the mail


@dataclass(frozen=True)
class Staged:
    """A mail read, stored and prepared; ``error``: it could not even be stored."""

    label: str
    key: str = ""
    size: int = 0
    prepared: Prepared | BaseException | None = None
    error: BaseException | None = None


def ingest(ingestor: Ingestor, sources: Iterable[Source],
           processes: int | None = None) -> Iterator[tuple[str, dict[str, object]]]:
    """Each mail's label and its `ingest --json` result, in the order given. ``processes``:
    of the pool, by default one per core (measured on two cores: one fewer leaves this process
    waiting for the pool half the time; parsing is as long as writing); none on one core."""
    if processes is None:
        cores = os.cpu_count() or 1
        processes = cores if cores > 1 else 0
    staged = _staged(ingestor.preparer, iter(sources), processes)
    while chunk := list(islice(staged, BATCH)):
        yield from _apply(ingestor, chunk)


def _apply(ingestor: Ingestor, chunk: list[Staged]) -> Iterator[tuple[str, dict[str, object]]]:
    """Queue and apply one batch; each mail's result by its place (a file may be given twice)."""
    stored = [s for s in chunk if s.error is None]
    try:
        ids = inbound.record(ingestor.engine, [
            inbound.Arrival(s.key, s.size, CHANNEL, source=s.label) for s in stored],
            leased_by=ingestor.worker_id)
    except Exception as exc:  # the database refused even to queue them
        ids, queued = [], _failed(exc)
    else:
        queued = {}
    try:
        outcomes = {o.inbound_id: o for o in ingestor.apply(
            [(queue_id, s.prepared) for queue_id, s in zip(ids, stored, strict=True)])} \
            if ids else {}
    except Exception as exc:  # queued, not applied: a running gateway takes them later
        _put_back(ingestor)
        outcomes, queued = {}, {"outcome": "queued", "ticket": None,
                                "reason": f"temporary error: {describe(exc)}"}
    place = {id(s): queue_id for queue_id, s in zip(ids, stored, strict=True)}
    for s in chunk:
        if s.error is not None:
            yield s.label, _failed(s.error)
            continue
        outcome = outcomes.get(place.get(id(s), -1))
        if outcome is None:  # not queued, not applied, or taken by a gateway once leases ran out
            yield s.label, queued or {"outcome": "queued", "ticket": None}
        elif outcome.outcome == RETRY:  # `serve` tries it again
            yield s.label, {"outcome": "queued", "ticket": None,
                            "reason": f"temporary error: {outcome.reason}"}
        else:
            yield s.label, outcome.as_json()


def _failed(exc: BaseException) -> dict[str, object]:
    return {"outcome": "failed", "ticket": None, "reason": f"{type(exc).__name__}: {exc}"}


def _put_back(ingestor: Ingestor) -> None:
    with contextlib.suppress(Exception):  # the database is still away: the leases run out
        inbound.release(ingestor.engine, ingestor.worker_id, died=False)


# --- preparing, here or in the pool ---------------------------------------------------------

_preparer: Preparer | None = None  # in each pool process: set by _start


def _start(preparer: Preparer) -> None:
    global _preparer  # noqa: PLW0603 (one per pool process, set once when it starts)
    _preparer = preparer


def _staged(preparer: Preparer, sources: Iterator[Source], processes: int) -> Iterator[Staged]:
    first = list(islice(sources, POOL_FROM))
    if len(first) < POOL_FROM or processes < 1:
        for source in (*first, *sources):
            yield stage(preparer, source)
        return
    # Forked: the pool starts at once with everything imported. Forked before any thread is
    # started here; the children never touch the database (its connections are left alone).
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(processes, mp_context=context, initializer=_start,
                             initargs=(preparer,)) as pool:
        pending: deque[Future[Staged]] = deque()
        for source in (*first, *sources):
            pending.append(pool.submit(_stage_in_pool, source))
            if len(pending) >= AHEAD:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def _stage_in_pool(source: Source) -> Staged:
    assert _preparer is not None
    staged = stage(_preparer, source)
    for name in ("prepared", "error"):  # an exception must reach the parent, whatever it is
        value = getattr(staged, name)
        if isinstance(value, BaseException) and not _picklable(value):
            kind = type(value)
            staged = Staged(**{**staged.__dict__, name: (
                Unavailable if is_temporary(value) else RuntimeError)(
                f"{kind.__name__}: {value}")})
    return staged


def _picklable(value: object) -> bool:
    try:
        pickle.loads(pickle.dumps(value))  # noqa: S301 (our own bytes, just made)
    except Exception:
        return False
    return True


def stage(preparer: Preparer, source: Source) -> Staged:
    """Read, store durably, prepare: what a channel and a worker do before the database."""
    label, mail = source
    try:
        raw = mail.read_bytes() if isinstance(mail, Path) else mail
        key = BlobStore(preparer.storage_root).put(raw)
    except Exception as exc:  # unreadable file, disk full: said for this mail, the rest go on
        return Staged(label, error=exc)
    leased = inbound.Leased(0, key, CHANNEL, label, "", "", False)
    try:
        prepared: Prepared | BaseException = preparer.prepare(leased, raw)
    except Exception as exc:  # apply keeps it as failed, or queued for a retry
        prepared = exc
    return Staged(label, key, len(raw), prepared)
