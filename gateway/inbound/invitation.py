"""A calendar invitation (text/calendar, RFC 5545 / iTIP RFC 5546) → a readable summary. Pure.

An Outlook or Teams meeting request often says in its text only "join the meeting": what, when
and where are in the VCALENDAR part, which no agent reads. The summary keeps them in the
message text. Its labels are Spanish, the team's language, like the rest of the stored text.
"""

from __future__ import annotations

import logging
from datetime import date, datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import icalendar

log = logging.getLogger("gateway.parse")

# iTIP methods (RFC 5546 §1.4) → what the mail asks.
_METHODS = {"REQUEST": "Convocatoria", "CANCEL": "Convocatoria cancelada",
            "REPLY": "Respuesta a una convocatoria", "COUNTER": "Propuesta de nueva hora"}


def summary(payload: bytes) -> str | None:
    """What, when, where and who of each event; None when the part is not a readable calendar."""
    import icalendar  # here: ~0.1 s to import, and most mails carry no invitation

    try:
        calendar = icalendar.Calendar.from_ical(payload)
        method = str(calendar.get("METHOD", "")).upper()
        blocks = [_event(event, _METHODS.get(method, "Evento"))
                  for event in calendar.walk("VEVENT")]
    except Exception as exc:  # a damaged calendar costs its summary, never the mail
        log.info("calendar part unreadable: %s", exc)
        return None
    return "\n\n".join(blocks) or None


def _event(event: icalendar.Event, label: str) -> str:
    lines = [f"{label}: {_text(event.get('SUMMARY')) or '(sin título)'}"]
    when = _when(event)
    if when:
        lines.append(f"Cuándo: {when}")
    if event.get("LOCATION"):
        lines.append(f"Dónde: {_text(event.get('LOCATION'))}")
    organizer = event.get("ORGANIZER")
    if organizer:
        address = str(organizer).removeprefix("mailto:").removeprefix("MAILTO:")
        name = organizer.params.get("CN", "")
        lines.append(f"Organiza: {name} <{address}>" if name else f"Organiza: {address}")
    return "\n".join(lines)


def _when(event: icalendar.Event) -> str:
    start = event.get("DTSTART")
    if start is None:
        return ""
    end = event.get("DTEND")
    begins, ends = start.dt, end.dt if end is not None else None
    if not isinstance(begins, datetime):  # an all-day event
        return _day(begins)
    text = f"{_day(begins)} {begins:%H:%M}"
    if isinstance(ends, datetime):
        text += f"–{ends:%H:%M}" if ends.date() == begins.date() \
            else f" – {_day(ends)} {ends:%H:%M}"
    zone = start.params.get("TZID") or (begins.tzname() if begins.tzinfo else "")
    return f"{text} ({zone})" if zone else text


def _day(value: date) -> str:
    return f"{value:%d/%m/%Y}"


def _text(value: object) -> str:
    return " ".join(str(value or "").split())
