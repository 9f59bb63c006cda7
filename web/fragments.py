"""Rendered parts of pages, kept while what they show has not changed.

A part is stored under a key that names everything it depends on, including a version the
database raises whenever the data changes (``Organization.ticket_version``): a change makes a new
key, so nothing is ever invalidated by hand, and entries nobody asks for any more fall out as the
least recently used. Each process keeps its own; threads of the web's pool share it.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from threading import Lock

from markupsafe import Markup


class Fragments:
    def __init__(self, size: int = 512) -> None:
        self._size = size
        self._kept: OrderedDict[Hashable, Markup] = OrderedDict()
        self._lock = Lock()
        self.hits = self.misses = 0

    def kept(self, key: Hashable) -> Markup | None:
        """The part kept under ``key``, if there is one (a hit); None is not counted yet."""
        with self._lock:
            kept = self._kept.get(key)
            if kept is not None:
                self._kept.move_to_end(key)
                self.hits += 1
            return kept

    def get(self, key: Hashable, render: Callable[[], Markup]) -> Markup:
        """The part kept under ``key``, rendered (outside the lock) if there is none."""
        kept = self.kept(key)
        if kept is not None:
            return kept
        with self._lock:
            self.misses += 1
        fresh = render()
        with self._lock:
            self._kept[key] = fresh
            self._kept.move_to_end(key)
            while len(self._kept) > self._size:
                self._kept.popitem(last=False)
        return fresh
