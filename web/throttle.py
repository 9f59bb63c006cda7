"""Throttling of logins and password requests: after a few failures within a window, an email or
an address must wait. Attempts are rows in the database, so every gateway process behind a load
balancer counts the same ones (in process memory, N processes would allow N times the attempts).
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.engine import Engine

from storage import throttle
from storage.models import utcnow

KEPT = timedelta(days=1)  # housekeeping forgets attempts older than this (longer than any window)


class Throttle:
    """Failures per key in a sliding window; ``name`` keeps the keys of two throttles apart."""

    def __init__(self, engine: Engine, name: str, max_failures: int = 5,
                 window_seconds: float = 900) -> None:
        self.engine = engine
        self.name = name
        self.max_failures = max_failures
        self.window = timedelta(seconds=window_seconds)

    def blocked(self, *keys: str) -> bool:
        counts = throttle.counts_since(self.engine, self._keys(keys), utcnow() - self.window)
        return any(count >= self.max_failures for count in counts.values())

    def failed(self, *keys: str) -> None:
        throttle.record(self.engine, self._keys(keys), utcnow())

    def succeeded(self, key: str) -> None:
        throttle.clear(self.engine, *self._keys([key]))

    def _keys(self, keys: tuple[str, ...] | list[str]) -> list[str]:
        return [f"{self.name}:{key}" for key in keys]
