"""Throttling of logins and password requests: progressive waits that slow an attacker down,
per account *and* per address, without locking the account's owner out.

Each kind of key has a rule: so many failures within the window are free; after that each
further attempt must wait, twice as long after every failure, up to a most. A browser the
account's owner has signed in from before (``KnownBrowsers``, a signed cookie) is judged by
its own key instead of the account's and the address's: a guesser elsewhere, or a colleague's
typos behind the same office address, cannot keep the owner out. Attempts are rows in the
database, so every gateway process counts the same ones.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass
from datetime import timedelta

from itsdangerous import BadSignature, URLSafeTimedSerializer
from sqlalchemy.engine import Engine

from storage import throttle
from storage.models import utcnow

KEPT = timedelta(days=1)  # housekeeping forgets attempts older than this (longer than any window)


@dataclass(frozen=True)
class Rule:
    free: int  # failures within the window that cost no wait
    first_wait: float  # seconds the next attempt waits after them; doubles with each failure
    most_wait: float


class Throttle:
    """Failures per key in a sliding window; ``name`` keeps two throttles' keys apart. Keys
    are ``kind:value``, judged by the rule of their kind."""

    def __init__(self, engine: Engine, name: str, rules: dict[str, Rule],
                 window_seconds: float = 3600) -> None:
        self.engine = engine
        self.name = name
        self.rules = rules
        self.window = timedelta(seconds=window_seconds)

    def wait(self, *keys: str) -> float:
        """Seconds before another attempt with these keys is looked at (0: now)."""
        now = utcnow()
        recent = throttle.recent(self.engine, self._keys(keys), now - self.window)
        longest = 0.0
        for key in keys:
            count, last = recent.get(self._key(key), (0, None))
            rule = self.rules[key.split(":", 1)[0]]
            if last is None or count < rule.free:
                continue
            delay = min(rule.first_wait * 2 ** (count - rule.free), rule.most_wait)
            longest = max(longest, delay - (now - last).total_seconds())
        return max(0.0, longest)

    def failed(self, *keys: str) -> None:
        throttle.record(self.engine, self._keys(keys), utcnow())

    def succeeded(self, *keys: str) -> None:
        for key in keys:
            throttle.clear(self.engine, self._key(key))

    def _key(self, key: str) -> str:
        return f"{self.name}:{key}"

    def _keys(self, keys: tuple[str, ...] | list[str]) -> list[str]:
        return [self._key(key) for key in keys]


def seconds_shown(wait: float) -> int:
    return max(1, math.ceil(wait))


# The login: an account gets 3 failures an hour without a wait, then waits of 2 s, 4 s, 8 s...
# up to 15 minutes (some 15 guesses an hour); an address, shared by an office, 10, then waits of
# 1 s doubling up to a minute; a known browser 5, then as an account.
LOGIN_RULES = {"email": Rule(3, 2, 900), "ip": Rule(10, 1, 60), "browser": Rule(5, 2, 900)}
# The forgotten-password form, per address: 5 free requests an hour, then 10 s doubling to 10
# minutes (each manager gets at most a few mails an hour anyway: gateway.accounts).
FORGOT_RULES = {"ip": Rule(5, 10, 600)}


class KnownBrowsers:
    """The signed cookie that tells a browser the account's owner signed in from before:
    a random id for the browser, and the contacts who signed in with it (the last few)."""

    COOKIE = "known_browser"
    MAX_AGE = 180 * 24 * 3600
    KEPT = 5

    def __init__(self, secret_key: str, cookie: str = COOKIE,
                 salt: str = "known-browser") -> None:
        """``cookie`` and ``salt``: the team console keeps its agents apart from contacts."""
        self.COOKIE = cookie
        self._serializer = URLSafeTimedSerializer(secret_key, salt=salt)

    def read(self, value: str | None) -> tuple[str, list[int]]:
        """The browser's id (a new one if it has none) and its contacts."""
        if value:
            try:
                browser, contacts = self._serializer.loads(value, max_age=self.MAX_AGE)
                if isinstance(browser, str) and all(type(c) is int for c in contacts):
                    return browser, list(contacts)
            except (BadSignature, ValueError, TypeError):
                pass
        return secrets.token_urlsafe(16), []

    def with_contact(self, browser: str, contacts: list[int], contact_id: int) -> str:
        kept = [c for c in contacts if c != contact_id][-(self.KEPT - 1):] + [contact_id]
        return self._serializer.dumps([browser, kept])


def login_keys(browser: str, known_owners: list[int], owner_id: int | None, email: str,
               address: str) -> tuple[str, ...]:
    """What a login attempt is counted under: the owner's own browser (one they signed in
    with before) is judged on its own, so neither a guesser elsewhere nor an office's shared
    address keeps them out; any other attempt counts for the account and the address."""
    if owner_id is not None and owner_id in known_owners:
        return (f"browser:{browser}",)
    return (f"email:{email}", f"ip:{address}")
