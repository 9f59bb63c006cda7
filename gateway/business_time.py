"""Business time: when a number of working minutes from a moment ends, and how many working
minutes lie between two moments, on a calendar of the team's working hours.

A calendar has a time zone (Europe/Madrid by default), one or more working windows per weekday
(split shifts: 9:00-14:00 and 15:30-18:30), seasons with hours of their own (the summer
*jornada intensiva*, 8:00-15:00 from 15 June to 15 September), the public holidays of a country
and region (the ``holidays`` package: Spain and its autonomous communities) and extra dates
(local holidays, company days). Windows are wall-clock times of the zone, so a day keeps its
hours across daylight-saving changes; all arithmetic is on UTC instants.

A clock may be paused (the ticket awaits the customer or is pending): ``due`` skips paused
spans, and ``segments`` tells what each stretch of time was (running, paused, outside hours,
holiday), which is how a due time is explained.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import holidays as holiday_tables

MINUTE = timedelta(minutes=1)
HORIZON_DAYS = 3 * 366  # a target that no working window reaches within this is an error


@dataclass(frozen=True)
class Window:
    """Working hours within one day, wall-clock time of the calendar's zone."""

    start: time
    end: time

    def __post_init__(self) -> None:
        if not self.start < self.end:
            raise ValueError(f"a window ends after it starts: {self.start}-{self.end}")


Week = tuple[tuple[Window, ...], ...]  # seven days, Monday first


def week(*days: Sequence[tuple[str, str]] | None, weekend: bool = False) -> Week:
    """A week from windows written as ("09:00", "14:00"): one entry for Monday to Friday (the
    same hours each day), or seven entries, one per day."""
    def windows(spans: Sequence[tuple[str, str]] | None) -> tuple[Window, ...]:
        return tuple(Window(time.fromisoformat(a), time.fromisoformat(b)) for a, b in spans or ())

    if len(days) == 1:
        workday = windows(days[0])
        return tuple(workday if n < 5 or weekend else () for n in range(7))
    if len(days) != 7:
        raise ValueError("give the windows of one workday, or of each of the seven days")
    return tuple(windows(d) for d in days)


@dataclass(frozen=True)
class Season:
    """Hours of their own between two dates of every year, both included (15 June to 15
    September); a season may run over the new year (1 December to 31 January)."""

    starts: tuple[int, int]  # (month, day)
    ends: tuple[int, int]
    week: Week

    def covers(self, day: date) -> bool:
        here = (day.month, day.day)
        if self.starts <= self.ends:
            return self.starts <= here <= self.ends
        return here >= self.starts or here <= self.ends


@dataclass(frozen=True)
class Segment:
    """A stretch of a clock's time: ``running`` (working hours, counting), ``paused`` (the
    ticket waited for the customer, or was pending), ``outside_hours``, ``holiday``."""

    kind: str
    start: datetime
    end: datetime

    @property
    def minutes(self) -> float:
        return (self.end - self.start) / MINUTE


@dataclass
class Calendar:
    week: Week
    timezone: str = "Europe/Madrid"
    seasons: tuple[Season, ...] = ()
    country: str | None = "ES"
    subdivision: str | None = None  # "AR", "MD", "CT"... (holidays' codes)
    extra_holidays: frozenset[date] = frozenset()
    name: str = ""
    _zone: ZoneInfo = field(init=False, repr=False)
    _holidays: dict[int, frozenset[date]] = field(init=False, repr=False, default_factory=dict)
    _days: dict[date, tuple[tuple[datetime, datetime], ...]] = field(
        init=False, repr=False, default_factory=dict)
    _ends: dict[date, tuple[datetime, str]] = field(init=False, repr=False, default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.week) != 7:
            raise ValueError("a week has seven days")
        self._zone = ZoneInfo(self.timezone)
        if not any(self.week) and not any(any(s.week) for s in self.seasons):
            raise ValueError("a calendar needs at least one working window")

    # ------------------------------------------------------------------ days

    def is_holiday(self, day: date) -> bool:
        if day in self.extra_holidays:
            return True
        if self.country is None:
            return False
        found = self._holidays.get(day.year)
        if found is None:
            found = self._holidays[day.year] = frozenset(holiday_tables.country_holidays(
                self.country, subdiv=self.subdivision, years=day.year))
        return day in found

    def windows(self, day: date) -> tuple[Window, ...]:
        """The day's working windows (none on a holiday)."""
        if self.is_holiday(day):
            return ()
        for season in self.seasons:
            if season.covers(day):
                return season.week[day.weekday()]
        return self.week[day.weekday()]

    def working(self, day: date) -> tuple[tuple[datetime, datetime], ...]:
        """The day's working windows as UTC instants (kept: a calendar is asked for the same
        days over and over)."""
        found = self._days.get(day)
        if found is None:
            spans = []
            for window in self.windows(day):
                start = datetime.combine(day, window.start, self._zone).astimezone(UTC)
                end = datetime.combine(day, window.end, self._zone).astimezone(UTC)
                if start < end:  # a window inside a skipped daylight-saving hour is empty
                    spans.append((start, end))
            found = self._days[day] = tuple(spans)
        return found

    def _day_end(self, day: date) -> tuple[datetime, str]:
        """The UTC instant the day ends (the next local midnight), and what its time outside
        working windows is called: kept, as ``working``."""
        found = self._ends.get(day)
        if found is None:
            midnight = datetime.combine(day + timedelta(days=1), time(0), self._zone)
            found = self._ends[day] = (midnight.astimezone(UTC),
                                       "holiday" if self.is_holiday(day) else "outside_hours")
        return found

    def _intervals(self, start: datetime) -> Iterator[tuple[datetime, datetime]]:
        """Working intervals from ``start`` on (the first one cut at ``start``)."""
        day = start.astimezone(self._zone).date()
        for offset in range(HORIZON_DAYS):
            for a, b in self.working(day + timedelta(days=offset)):
                if b > start:
                    yield max(a, start), b
        raise ValueError(f"no working hours within {HORIZON_DAYS} days of {start}")

    # ------------------------------------------------------------------ arithmetic

    def add(self, start: datetime, minutes: float,
            pauses: Sequence[tuple[datetime, datetime | None]] = ()) -> datetime | None:
        """When ``minutes`` of working time from ``start`` have run, skipping ``pauses`` (from,
        until; until None: paused still). None while paused before the minutes have run."""
        start = _utc(start)
        left = timedelta(minutes=minutes)
        if left <= timedelta(0):
            return start
        spans = sorted((_utc(a), _utc(b) if b is not None else None) for a, b in pauses)
        for a, b in self._intervals(start):
            for piece_start, piece_end in _without(a, b, spans):
                if piece_end is None:  # an open pause: the clock stands from here on
                    return None
                if piece_end - piece_start >= left:
                    return piece_start + left
                left -= piece_end - piece_start
        raise AssertionError("unreachable")  # _intervals raises first

    def minutes_between(self, start: datetime, end: datetime,
                        pauses: Sequence[tuple[datetime, datetime | None]] = ()) -> float:
        """Working minutes from ``start`` to ``end`` (0 if end is not after start), pauses
        left out."""
        return sum(s.minutes for s in self.segments(start, end, pauses) if s.kind == "running")

    def segments(self, start: datetime, end: datetime,
                 pauses: Sequence[tuple[datetime, datetime | None]] = ()) -> list[Segment]:
        """What each stretch from ``start`` to ``end`` was, in order, neighbours of one kind
        merged: why a clock shows what it shows."""
        start, end = _utc(start), _utc(end)
        if end <= start:
            return []
        spans = sorted((_utc(a), _utc(b) if b is not None else end) for a, b in pauses)
        found: list[Segment] = []

        def put(kind: str, a: datetime, b: datetime) -> None:
            if b <= a:
                return
            if found and found[-1].kind == kind and found[-1].end == a:
                found[-1] = Segment(kind, found[-1].start, b)
            else:
                found.append(Segment(kind, a, b))

        day = start.astimezone(self._zone).date()
        last = end.astimezone(self._zone).date()
        cursor = start
        while day <= last:
            midnight, idle = self._day_end(day)
            day_end = min(midnight, end)
            for a, b in self.working(day):
                a, b = max(a, cursor), min(b, day_end)
                if b <= a:
                    continue
                _paused(put, idle, cursor, a, spans)
                for piece_start, piece_end in _without(a, b, spans):
                    assert piece_end is not None
                    _paused(put, idle, a, piece_start, spans)
                    put("running", piece_start, piece_end)
                    a = piece_end
                _paused(put, idle, a, b, spans)
                cursor = b
            _paused(put, idle, cursor, day_end, spans)
            cursor = day_end
            day += timedelta(days=1)
        return found


def _paused(put, idle: str, a: datetime, b: datetime,
            spans: Sequence[tuple[datetime, datetime]]) -> None:
    """Time that is not running from a to b: paused where a pause covers it, else ``idle``."""
    for pause_start, pause_end in spans:
        if pause_end <= a or pause_start >= b:
            continue
        put(idle, a, max(a, pause_start))
        put("paused", max(a, pause_start), min(b, pause_end))
        a = min(b, pause_end)
    put(idle, a, b)


def _without(a: datetime, b: datetime, spans: Sequence[tuple[datetime, datetime | None]],
             ) -> Iterator[tuple[datetime, datetime | None]]:
    """[a, b) less the pauses, in order; an open pause ends it with (its start, None)."""
    for pause_start, pause_end in spans:
        if pause_end is not None and pause_end <= a:
            continue
        if pause_start >= b:
            break
        if pause_start > a:
            yield a, pause_start
        if pause_end is None:
            yield max(a, pause_start), None
            return
        a = max(a, pause_end)
        if a >= b:
            return
    yield a, b


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError("business time needs aware datetimes")
    return moment.astimezone(UTC)
