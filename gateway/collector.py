"""The garbage collector and long-lived processes: what start-up made (modules, mappers,
templates, settings) lives as long as the process, so it is kept out of the collector's full
passes. Without that each full pass walks all of it: 80-115 ms, measured in an ingest worker,
while it may hold SQLite's write lock and SMTP clients wait for their 250 (tail latency).
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


def settled() -> None:
    """Start-up is over, for the rest of the process's life."""
    gc.collect()
    gc.freeze()


@contextmanager
def settled_while() -> Iterator[None]:
    """Start-up is over while this lasts (a command run in a process that goes on, as the
    tests run it): what was frozen goes back to the collector afterwards."""
    settled()
    try:
        yield
    finally:
        gc.unfreeze()
