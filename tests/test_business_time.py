"""Business-time arithmetic (gateway.business_time): worked examples written out by hand, and
properties checked by hypothesis across weekends, holidays, split shifts, the summer hours and
both daylight-saving changes of Europe/Madrid, with pauses of any length."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.business_time import Calendar, Season, Window, week

MADRID = ZoneInfo("Europe/Madrid")
SPLIT = week([("09:00", "14:00"), ("15:30", "18:30")])
SUMMER = Season((6, 15), (9, 15), week([("08:00", "15:00")]))
# Aragón's public holidays, plus a local one (Zaragoza's Pilar, 12 October, is national
# already: 29 January, San Valero, is the city's).
ZARAGOZA = Calendar(SPLIT, seasons=(SUMMER,), subdivision="AR",
                    extra_holidays=frozenset({date(2026, 1, 29), date(2027, 1, 29)}))


def madrid(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=MADRID)


# --------------------------------------------------------------------------- by hand


def test_friday_evening_plus_an_hour_is_monday_morning():
    # Friday 27 November 2026, 17:50: 40 minutes until 18:30, the other 20 on Monday from 9:00.
    due = ZARAGOZA.add(madrid(2026, 11, 27, 17, 50), 60)
    assert due == madrid(2026, 11, 30, 9, 20)
    assert ZARAGOZA.minutes_between(madrid(2026, 11, 27, 17, 50), due) == 60


def test_the_lunch_break_does_not_count():
    assert ZARAGOZA.add(madrid(2026, 11, 25, 13, 30), 60) == madrid(2026, 11, 25, 16, 0)
    assert ZARAGOZA.minutes_between(madrid(2026, 11, 25, 14, 0),
                                    madrid(2026, 11, 25, 15, 30)) == 0


def test_summer_hours_and_the_change_back():
    # Friday 10 July 2026, 14:30, jornada intensiva (8:00-15:00): 30 min, then Monday 8:30.
    assert ZARAGOZA.add(madrid(2026, 7, 10, 14, 30), 60) == madrid(2026, 7, 13, 8, 30)
    # Tuesday 15 September is still summer; Wednesday 16 starts at 9:00 again.
    assert ZARAGOZA.add(madrid(2026, 9, 15, 14, 0), 120) == madrid(2026, 9, 16, 10, 0)


def test_holidays_national_regional_and_local_are_skipped():
    # Friday 4 December 2026 18:00: Monday 7 (Constitution Day moved) and Tuesday 8
    # (Immaculate Conception) are holidays: the hour ends on Wednesday 9 at 9:30.
    assert ZARAGOZA.add(madrid(2026, 12, 4, 18, 0), 60) == madrid(2026, 12, 9, 9, 30)
    # 23 April is Aragón's (San Jorge), not Madrid's; 29 January is the city's own.
    assert ZARAGOZA.is_holiday(date(2026, 4, 23)) and ZARAGOZA.is_holiday(date(2026, 1, 29))
    in_madrid = Calendar(SPLIT, subdivision="MD")
    assert not in_madrid.is_holiday(date(2026, 4, 23))
    assert in_madrid.is_holiday(date(2026, 5, 2))  # Community of Madrid Day (a Saturday)


def test_daylight_saving_changes_keep_the_wall_clock_hours():
    # Last Sunday of October 2026 (the 25th): Friday 18:00 CEST is 16:00 UTC; Monday 9:30 CET
    # is 8:30 UTC. The weekend's extra hour is not working time.
    due = ZARAGOZA.add(madrid(2026, 10, 23, 18, 0), 60)
    assert due == madrid(2026, 10, 26, 9, 30)
    assert due.astimezone(UTC) == datetime(2026, 10, 26, 8, 30, tzinfo=UTC)
    # Last Sunday of March 2026 (the 29th) the other way round: Friday 18:00 CET is 17:00
    # UTC, Monday 9:30 CEST 7:30 UTC.
    start = madrid(2026, 3, 27, 18, 0)
    assert start.astimezone(UTC).hour == 17
    due = ZARAGOZA.add(start, 60)
    assert due.astimezone(UTC) == datetime(2026, 3, 30, 7, 30, tzinfo=UTC)
    assert due == madrid(2026, 3, 30, 9, 30)
    # In 2027 that Friday is Good Friday (and the Thursday before a holiday in Aragón): an
    # hour from then ends on Monday at 10:00.
    assert ZARAGOZA.add(madrid(2027, 3, 26, 18, 0), 60) == madrid(2027, 3, 29, 10, 0)


def test_a_pause_stops_the_clock_and_an_open_one_leaves_no_due_time():
    start = madrid(2026, 11, 23, 9, 0)  # Monday
    pause = (madrid(2026, 11, 23, 10, 0), madrid(2026, 11, 25, 12, 0))  # awaiting customer
    # 8 h of working time: 1 h on Monday, the pause, then from Wednesday 12:00: 2 h before
    # lunch, 3 h after, and the last 2 h on Thursday from 9:00.
    assert ZARAGOZA.add(start, 8 * 60, [pause]) == madrid(2026, 11, 26, 11, 0)
    assert ZARAGOZA.add(start, 30, [(madrid(2026, 11, 23, 9, 10), None)]) is None
    assert ZARAGOZA.add(start, 5, [(madrid(2026, 11, 23, 9, 10), None)]) == \
        madrid(2026, 11, 23, 9, 5)


def test_segments_explain_a_clock():
    start, end = madrid(2026, 11, 27, 17, 50), madrid(2026, 11, 30, 9, 20)
    kinds = [(s.kind, s.start.astimezone(MADRID).strftime("%a %H:%M"),
              s.end.astimezone(MADRID).strftime("%a %H:%M")) for s in
             ZARAGOZA.segments(start, end)]
    assert kinds == [("running", "Fri 17:50", "Fri 18:30"),
                     ("outside_hours", "Fri 18:30", "Mon 09:00"),
                     ("running", "Mon 09:00", "Mon 09:20")]
    paused = ZARAGOZA.segments(madrid(2026, 12, 4, 13, 0), madrid(2026, 12, 9, 10, 0),
                               [(madrid(2026, 12, 4, 13, 30), madrid(2026, 12, 4, 16, 0))])
    assert [s.kind for s in paused] == ["running", "paused", "running", "outside_hours",
                                        "holiday", "outside_hours", "running"]


def test_a_calendar_without_hours_is_refused():
    with pytest.raises(ValueError, match="at least one working window"):
        Calendar(week([]))
    with pytest.raises(ValueError, match="ends after it starts"):
        Window(datetime(2026, 1, 1, 10).time(), datetime(2026, 1, 1, 9).time())


# --------------------------------------------------------------------------- properties

moments = st.datetimes(min_value=datetime(2025, 12, 20), max_value=datetime(2028, 1, 10),
                       timezones=st.just(UTC))
minutes = st.integers(min_value=0, max_value=6000)
pause_lists = st.lists(st.tuples(st.integers(0, 20 * 24 * 60), st.integers(1, 6 * 24 * 60)),
                       max_size=4)


def _pauses(start: datetime, offsets: list[tuple[int, int]]):
    return [(start + timedelta(minutes=a), start + timedelta(minutes=a + b)) for a, b in offsets]


@settings(max_examples=300, deadline=None)
@given(start=moments, amount=minutes)
def test_adding_then_measuring_gives_the_same_minutes(start, amount):
    due = ZARAGOZA.add(start, amount)
    assert due is not None and due >= start
    assert ZARAGOZA.minutes_between(start, due) == pytest.approx(amount, abs=1e-6)


@settings(max_examples=300, deadline=None)
@given(start=moments, amount=st.integers(1, 6000))
def test_a_due_time_is_always_inside_working_hours(start, amount):
    due = ZARAGOZA.add(start, amount)
    local = due.astimezone(MADRID)
    inside = [w for w in ZARAGOZA.windows(local.date())
              if w.start < local.time() <= w.end]
    assert inside, f"{local} is not within the working hours of {local.date()}"


@settings(max_examples=200, deadline=None)
@given(start=moments, first=minutes, second=minutes)
def test_adding_in_two_steps_is_adding_once(start, first, second):
    step = ZARAGOZA.add(start, first)
    assert ZARAGOZA.add(step, second) == ZARAGOZA.add(start, first + second)


@settings(max_examples=200, deadline=None)
@given(start=moments, amount=minutes, offsets=pause_lists)
def test_pauses_of_any_length_stop_the_clock_and_nothing_else(start, amount, offsets):
    pauses = _pauses(start, offsets)
    due = ZARAGOZA.add(start, amount, pauses)
    assert due is not None
    assert ZARAGOZA.minutes_between(start, due, pauses) == pytest.approx(amount, abs=1e-6)
    assert due >= ZARAGOZA.add(start, amount)  # a pause never brings a due time forward
    # The segments cover the whole time, in order, each kind where it belongs.
    parts = ZARAGOZA.segments(start, due, pauses)
    assert all(a.end == b.start for a, b in zip(parts, parts[1:], strict=False))
    if parts:
        assert parts[0].start == start and parts[-1].end == due
    running = sum(p.minutes for p in parts if p.kind == "running")
    assert running == pytest.approx(amount, abs=1e-6)
