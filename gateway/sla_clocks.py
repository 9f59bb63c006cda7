"""SLA clocks in the database: plans and calendars read into gateway.sla's terms, a ticket's history
as its clocks see it, and the clocks stored (``sla_clock``) for lists, the API and warnings.

Clocks are worked out from the history, so storing them is a cache kept in step by
``refresh_changed`` (serve runs it every few seconds): a ticket whose version moved since its
clocks were stored is worked out again, and so is every open ticket now and then (a clock
runs on with time, a breach comes without any change to the ticket).
"""

from __future__ import annotations

import json
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, or_, select

from gateway import events
from gateway.business_time import Calendar, Season, Window
from gateway.sla import FINAL, Change, Clock, Plan, clocks
from gateway.sla import TARGETS as TARGET_NAMES
from gateway.workflow import Workflow
from storage.db import transaction
from storage.models import (
    Message,
    Organization,
    SlaCalendar,
    SlaClock,
    SlaPlan,
    SlaWarning,
    StatusChange,
    Ticket,
    aware,
    utcnow,
)

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
REFRESH_OPEN_EVERY = timedelta(minutes=1)  # open tickets' clocks are worked out again this often


def calendar_of(row: SlaCalendar) -> Calendar:
    def week(hours: dict[str, list[list[str]]]) -> tuple[tuple[Window, ...], ...]:
        return tuple(tuple(Window(time.fromisoformat(a), time.fromisoformat(b))
                           for a, b in hours.get(day, [])) for day in DAYS)

    seasons = tuple(Season(_month_day(s["from"]), _month_day(s["to"]), week(s["hours"]))
                    for s in json.loads(row.seasons))
    return Calendar(week(json.loads(row.hours)), timezone=row.timezone, seasons=seasons,
                    country=row.country, subdivision=row.subdivision,
                    extra_holidays=frozenset(date.fromisoformat(d)
                                             for d in json.loads(row.extra_holidays)),
                    name=row.name)


def _month_day(value: str) -> tuple[int, int]:
    month, day = value.split("-")
    return int(month), int(day)


class Plans:
    """Plans by name, with their calendars, read once per use (a calendar keeps its days)."""

    def __init__(self, session: Session) -> None:
        self._session = session
        self._plans: dict[str, Plan | None] = {}
        self._calendars: dict[int, Calendar] = {}

    def get_for(self, ticket: Ticket, session: Session) -> Plan | None:
        organization = session.get(Organization, ticket.organization_id)
        return self.get(organization.sla_plan) if organization is not None else None

    def get(self, name: str) -> Plan | None:
        if name not in self._plans:
            row = self._session.exec(select(SlaPlan).where(SlaPlan.name == name)).first()
            self._plans[name] = None if row is None else Plan(
                row.name, self._calendar(row.calendar_id), json.loads(row.targets),
                row.default_priority, tuple(json.loads(row.warn_at)))
        return self._plans[name]

    def _calendar(self, calendar_id: int) -> Calendar:
        if calendar_id not in self._calendars:
            row = self._session.get(SlaCalendar, calendar_id)
            assert row is not None
            self._calendars[calendar_id] = calendar_of(row)
        return self._calendars[calendar_id]


def history(session: Session, ticket: Ticket) -> list[Change]:
    """The status changes and the agents' answers of a ticket, as its clocks see them."""
    changes = [Change(aware(c.created_at), c.to_status) for c in session.exec(
        select(StatusChange).where(StatusChange.ticket_id == ticket.id,
                                   col(StatusChange.from_status).is_not(None)))]
    changes += [Change(aware(m.created_at), answered=True) for m in session.exec(
        select(Message).where(Message.ticket_id == ticket.id, Message.channel == "agent",
                              Message.direction == "out"))]
    return sorted(changes, key=lambda c: c.at)


def ticket_clocks(session: Session, ticket: Ticket, plans: Plans,
                  now: datetime | None = None) -> list[Clock]:
    plan = plans.get_for(ticket, session)
    if plan is None or ticket.status == "held":
        return []
    changes = history(session, ticket)
    closed_at = next((c.at for c in reversed(changes) if c.to_status in FINAL), None) \
        if ticket.status in FINAL else None
    return clocks(plan, created_at=aware(ticket.created_at), priority=ticket.priority,
                  history=changes, now=now or utcnow(), closed_at=closed_at)


def refresh(session: Session, ticket: Ticket, plans: Plans, now: datetime | None = None,
            workflow: Workflow | None = None) -> list[SlaClock]:
    """Work the ticket's clocks out again and store them (in the caller's transaction); with
    ``workflow``, give the warnings that are due (warn)."""
    assert ticket.id is not None
    now = now or utcnow()
    stored = {row.target: row for row in session.exec(
        select(SlaClock).where(SlaClock.ticket_id == ticket.id))}
    rows = []
    plan = plans.get_for(ticket, session)
    for clock in ticket_clocks(session, ticket, plans, now):
        row = stored.pop(clock.target, None) or SlaClock(
            ticket_id=ticket.id, target=clock.target, contractual=clock.contractual,
            minutes=clock.minutes, state=clock.state)
        row.contractual, row.minutes, row.state = clock.contractual, clock.minutes, clock.state
        row.due_at, row.met_at, row.breached = clock.due_at, clock.met_at, clock.breached
        row.over_minutes, row.used = clock.over_minutes, clock.used
        row.segments = json.dumps([[s.kind, s.start.isoformat(), s.end.isoformat()]
                                   for s in clock.segments])
        row.ticket_version, row.computed_at = ticket.version, now
        session.add(row)
        rows.append(row)
        if workflow is not None:
            warn(session, workflow, ticket, clock, plan)
    for gone in stored.values():  # a target the plan no longer has
        session.delete(gone)
    return rows


def warn(session: Session, workflow: Workflow, ticket: Ticket, clock: Clock,
         plan: Plan | None) -> list[str]:
    """The warnings this clock has earned and not yet given: each share of its target used
    (``plan.warn_at``) while it runs, and its breach; each once, to the team only (a mail to
    the assignee or every agent, and a webhook event). Levels skipped while nobody looked
    (a clock found past 90 % is warned at 90 % only, and a breached one only as breached)."""
    if plan is None or clock.state == "met":
        return []
    levels = [f"{share:.0%}" for share in plan.warn_at if clock.used >= share]
    if clock.breached:
        levels = ["breached"]
    elif clock.state != "running":
        return []
    wanted = levels[-1:]
    given = []
    for level in wanted:
        if _first_time(session, ticket, clock.target, level):
            due = clock.due_at.isoformat() if clock.due_at else None
            events.sla_warning(session, ticket, clock.target, level, due, clock.used,
                               clock.over_minutes)
            zone = ZoneInfo(plan.calendar.timezone)
            workflow.alert_team(session, ticket, "team_sla_warning", {
                "target": clock.target, "level": level, "contractual": clock.contractual,
                "due_at": clock.due_at.astimezone(zone).strftime("%d/%m/%Y %H:%M")
                if clock.due_at else "", "over_minutes": round(clock.over_minutes)})
            given.append(level)
    return given


def _first_time(session: Session, ticket: Ticket, target: str, level: str) -> bool:
    """Record the warning; False if it was given before (here or by another gateway)."""
    assert ticket.id is not None
    try:
        with session.begin_nested():
            session.add(SlaWarning(ticket_id=ticket.id, target=target, level=level))
            session.flush()
    except IntegrityError:
        return False
    return True


def refresh_changed(engine: Engine, now: datetime | None = None, limit: int = 500,
                    workflow: Workflow | None = None) -> int:
    """Clocks of the tickets that changed since they were worked out (or never were), and of
    open tickets not worked out for REFRESH_OPEN_EVERY; how many tickets."""
    now = now or utcnow()
    with transaction(engine) as session:
        stale = (select(SlaClock.ticket_id).where(
            SlaClock.ticket_id == Ticket.id,
            or_(col(SlaClock.ticket_version) != Ticket.version,
                (col(SlaClock.computed_at) < now - REFRESH_OPEN_EVERY)
                & col(SlaClock.state).in_(["running", "paused"]))).exists())
        unworked = ~select(SlaClock.id).where(SlaClock.ticket_id == Ticket.id).exists()
        due = session.exec(select(Ticket).where(
            col(Ticket.status) != "held",
            or_(stale, unworked & col(Ticket.status).not_in(list(FINAL))))
            .order_by(col(Ticket.id)).limit(limit)).all()
        plans = Plans(session)
        for ticket in due:
            refresh(session, ticket, plans, now, workflow)
        return len(due)


# ---------------------------------------------------------------------- set-up (the CLI)


def parse_hours(spec: str) -> list[list[str]]:
    """``"09:00-14:00,15:30-18:30"`` → ``[["09:00", "14:00"], ["15:30", "18:30"]]``
    (checked: each window must end after it starts)."""
    windows = []
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        start, _, end = part.partition("-")
        window = Window(time.fromisoformat(start.strip()), time.fromisoformat(end.strip()))
        windows.append([window.start.strftime("%H:%M"), window.end.strftime("%H:%M")])
    return windows


def save_calendar(engine: Engine, name: str, *, hours: str, days: str = "mon-fri",
                  seasons: list[tuple[str, str, str]] = (), timezone: str = "Europe/Madrid",
                  country: str | None = "ES", subdivision: str | None = None,
                  extra: list[str] = ()) -> SlaCalendar:
    """Add or replace a calendar: the same ``hours`` on ``days`` ("mon-fri", "mon-sat" or a
    list "mon,tue,thu"), ``seasons`` as (from "MM-DD", to "MM-DD", hours), holidays of a
    country and region, extra dates. Checked by building it (an error says what is wrong)."""
    chosen = _days(days)
    week = {day: parse_hours(hours) for day in chosen}
    season_rows = [{"from": a, "to": b, "hours": {day: parse_hours(h) for day in chosen}}
                   for a, b, h in seasons]
    row = SlaCalendar(name=name, timezone=timezone, country=country, subdivision=subdivision,
                      hours=json.dumps(week), seasons=json.dumps(season_rows),
                      extra_holidays=json.dumps(sorted(date.fromisoformat(d).isoformat()
                                                       for d in extra)))
    calendar_of(row).is_holiday(date.today())  # the zone, country and region exist
    with transaction(engine) as session:
        existing = session.exec(select(SlaCalendar).where(SlaCalendar.name == name)).first()
        if existing is not None:
            for column in ("timezone", "country", "subdivision", "hours", "seasons",
                           "extra_holidays"):
                setattr(existing, column, getattr(row, column))
            row = existing
        session.add(row)
        return row


def save_plan(engine: Engine, name: str, *, calendar: str, targets: dict[str, dict[str, int]],
              default_priority: str = "normal", warn_at: list[float] = (0.75, 0.9)) -> SlaPlan:
    """Add or replace a plan on a calendar (by name)."""
    unknown = set(targets) - set(TARGET_NAMES)
    if unknown:
        raise ValueError(f"unknown target {sorted(unknown)[0]!r}: {', '.join(TARGET_NAMES)}")
    with transaction(engine) as session:
        found = session.exec(select(SlaCalendar).where(SlaCalendar.name == calendar)).first()
        if found is None or found.id is None:
            raise ValueError(f"no calendar {calendar!r}")
        row = session.exec(select(SlaPlan).where(SlaPlan.name == name)).first() or SlaPlan(
            name=name, calendar_id=found.id, targets="{}")
        row.calendar_id, row.default_priority = found.id, default_priority
        row.targets, row.warn_at = json.dumps(targets), json.dumps(sorted(warn_at))
        session.add(row)
        return row


def _days(spec: str) -> list[str]:
    if "-" in spec and "," not in spec:
        first, _, last = spec.partition("-")
        return list(DAYS[DAYS.index(first.strip()):DAYS.index(last.strip()) + 1])
    return [d.strip() for d in spec.split(",") if d.strip() in DAYS]
