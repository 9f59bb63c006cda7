"""Does this sender flood us? Past a limit per sender and window, mail is kept but not acted on."""

from __future__ import annotations


def check(recent_from_sender: int, limit: int, window_minutes: int) -> str | None:
    if limit > 0 and recent_from_sender >= limit:
        return f"flood: {recent_from_sender} mails from this sender in {window_minutes} min"
    return None
