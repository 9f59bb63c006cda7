"""SLA clocks in the database: plans and calendars read into gateway.sla's terms, a ticket's history
as its clocks see it, and the clocks stored (``sla_clock``) for lists, the API and warnings.

Clocks are worked out from the history, so storing them is a cache kept in step by
``refresh_changed`` (serve's sender process runs it every few seconds): a ticket whose version
moved since its clocks were stored is worked out again, and so is a running clock when it
reaches its ``recheck_at``, the next moment it has something to say without any change to the
ticket (a warning share of its target used, its due time): warnings come on time and idle
tickets cost nothing. A change of calendar, plan or an organization's plan sets
``recheck_at`` of the open tickets concerned to now, so their due times follow.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import bindparam
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, delete, insert, or_, select, update

from gateway import events
from gateway.business_time import Calendar, Season, Segment, Window
from gateway.sla import FINAL, PRIORITIES, Change, Clock, Plan, clocks
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
BREACHED_EVERY = timedelta(hours=1)  # a breached running clock's overrun is brought up to date
_CLOCKS = SlaClock.__table__  # type: ignore[attr-defined]
_UPDATE_CLOCK = update(_CLOCKS).where(_CLOCKS.c.id == bindparam("clock_id")).values(
    {column.key: bindparam(column.key) for column in _CLOCKS.c if column.key != "id"})
STORED_AT_ONCE = 50  # tickets whose clocks refresh_changed stores per write transaction


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
    month, _, day = value.partition("-")
    try:
        return int(month), int(day)
    except ValueError:
        raise ValueError(f"not a day of the year (MM-DD): {value!r}") from None


class Plans:
    """Plans by name, with their calendars, read once per use (a calendar keeps its days)."""

    def __init__(self, session: Session) -> None:
        self._session = session
        self._plans: dict[str, Plan | None] = {}
        self._calendars: dict[int, Calendar] = {}
        self._by_organization: dict[int, Plan | None] = {}

    def get_for(self, ticket: Ticket, session: Session) -> Plan | None:
        if ticket.organization_id not in self._by_organization:
            organization = session.get(Organization, ticket.organization_id)
            self._by_organization[ticket.organization_id] = (
                self.get(organization.sla_plan) if organization is not None else None)
        return self._by_organization[ticket.organization_id]

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


def histories(session: Session, ticket_ids: list[int]) -> dict[int, list[Change]]:
    """The status changes and the agents' answers of tickets, as their clocks see them (two
    queries for any number of tickets)."""
    found: dict[int, list[Change]] = {ticket_id: [] for ticket_id in ticket_ids}
    for ticket_id, at, to_status in session.exec(
            select(StatusChange.ticket_id, StatusChange.created_at, StatusChange.to_status)
            .where(col(StatusChange.ticket_id).in_(ticket_ids),
                   col(StatusChange.from_status).is_not(None))):
        found[ticket_id].append(Change(aware(at), to_status))
    for ticket_id, at in session.exec(
            select(Message.ticket_id, Message.created_at)
            .where(col(Message.ticket_id).in_(ticket_ids), Message.channel == "agent",
                   Message.direction == "out")):
        found[ticket_id].append(Change(aware(at), answered=True))
    return {ticket_id: sorted(changes, key=lambda c: c.at)
            for ticket_id, changes in found.items()}


def history(session: Session, ticket: Ticket) -> list[Change]:
    """The status changes and the agents' answers of one ticket."""
    assert ticket.id is not None
    return histories(session, [ticket.id])[ticket.id]


def ticket_clocks(session: Session, ticket: Ticket, plans: Plans,
                  now: datetime | None = None,
                  changes: list[Change] | None = None) -> list[Clock]:
    plan = plans.get_for(ticket, session)
    if plan is None or ticket.status == "held":
        return []
    changes = history(session, ticket) if changes is None else changes
    closed_at = next((c.at for c in reversed(changes) if c.to_status in FINAL), None) \
        if ticket.status in FINAL else None
    return clocks(plan, created_at=aware(ticket.created_at), priority=ticket.priority,
                  history=changes, now=now or utcnow(), closed_at=closed_at)


def refresh(session: Session, ticket: Ticket, plans: Plans, now: datetime | None = None,
            workflow: Workflow | None = None) -> None:
    """Work one ticket's clocks out again and store them (refresh_many)."""
    refresh_many(session, [ticket], plans, now or utcnow(), workflow)


def refresh_many(session: Session, tickets: list[Ticket], plans: Plans, now: datetime,
                 workflow: Workflow | None = None) -> None:
    """Work the tickets' clocks out again and store them, in the caller's transaction; with
    ``workflow``, give the warnings that are due (warn). Read in three queries and written in
    at most three statements for the whole batch (serve's loop works 500 tickets at a time,
    and a calendar change may touch every open ticket)."""
    store(session, work_out(session, tickets, plans, now), workflow)


@dataclass(frozen=True)
class Worked:
    """One ticket's clocks as worked out at its ``version``, and their rows as stored."""

    ticket: Ticket
    plan: Plan | None
    clocks: list[Clock]
    rows: list[dict]


def work_out(session: Session, tickets: list[Ticket], plans: Plans,
             now: datetime) -> list[Worked]:
    """The tickets' clocks (reads only: two queries for the batch, and the plans)."""
    changes = histories(session, [ticket.id for ticket in tickets if ticket.id is not None])
    worked = []
    for ticket in tickets:
        if ticket.id is None:
            continue
        plan = plans.get_for(ticket, session)
        found = ticket_clocks(session, ticket, plans, now, changes[ticket.id])
        worked.append(Worked(ticket, plan, found, [{
            "ticket_id": ticket.id, "target": clock.target,
            "contractual": clock.contractual, "minutes": clock.minutes,
            "state": clock.state, "due_at": clock.due_at, "met_at": clock.met_at,
            "breached": clock.breached, "over_minutes": clock.over_minutes,
            "used": clock.used, "ticket_version": ticket.version, "computed_at": now,
            "recheck_at": recheck_at(clock, plan, now),
            "segments": json.dumps([[s.kind, s.start.isoformat(), s.end.isoformat()]
                                    for s in clock.segments]),
        } for clock in found]))
    return worked


def store(session: Session, worked: list[Worked], workflow: Workflow | None = None) -> None:
    """Store worked-out clocks over the ones stored, and give the warnings due (with
    ``workflow``): one read and at most three statements."""
    ids = [item.ticket.id for item in worked]
    stored: dict[int | None, dict[str, int]] = {ticket_id: {} for ticket_id in ids}
    for clock_id, ticket_id, target in session.exec(
            select(SlaClock.id, SlaClock.ticket_id, SlaClock.target)
            .where(col(SlaClock.ticket_id).in_(ids))):
        stored[ticket_id][target] = clock_id
    inserts: list[dict] = []
    updates: list[dict] = []
    gone: list[int] = []
    for item in worked:
        mine = stored[item.ticket.id]
        for clock, values in zip(item.clocks, item.rows, strict=True):
            clock_id = mine.pop(clock.target, None)
            if clock_id is None:
                inserts.append(values)
            else:
                updates.append({"id": clock_id, **values})
            if workflow is not None and warning_levels(clock, item.plan):
                # The ticket as this session has it (the clocks may have been worked out in
                # another one).
                here = session.get(Ticket, item.ticket.id)
                if here is not None:
                    warn(session, workflow, here, clock, item.plan)
        gone += mine.values()  # targets the plan no longer has
    # Core statements, one executemany each (the ORM's bulk paths cost several times more).
    connection = session.connection()
    if inserts:
        connection.execute(insert(_CLOCKS), inserts)
    if updates:
        connection.execute(_UPDATE_CLOCK, [{"clock_id": row.pop("id"), **row}
                                           for row in updates])
    if gone:
        session.execute(delete(SlaClock).where(col(SlaClock.id).in_(gone)))


def ahead(clock: Clock, plan: Plan | None, now: datetime) -> list[Segment]:
    """The stretches between now and a running clock's due time, if nothing changes: the rest
    of the explanation of its due time (its ``segments`` end now)."""
    if plan is None or clock.met_at is not None or clock.due_at is None or clock.breached:
        return []
    return plan.calendar.segments(now, clock.due_at, [])


def recheck_at(clock: Clock, plan: Plan | None, now: datetime) -> datetime | None:
    """When a clock next has something to say if nothing happens to its ticket: a running one
    at the next warning share of its target and at its due time (the calendar decides when
    these business minutes are over); a breached one still running every BREACHED_EVERY (its
    overrun grows); a paused, met or closed one never (only a change moves it)."""
    if clock.met_at is not None or clock.due_at is None or plan is None:
        return None
    if clock.breached:
        return now + BREACHED_EVERY
    moments = [plan.calendar.add(now, (share - clock.used) * clock.minutes)
               for share in plan.warn_at if share > clock.used]
    return min([m for m in moments if m is not None] + [clock.due_at])


def warn(session: Session, workflow: Workflow, ticket: Ticket, clock: Clock,
         plan: Plan | None) -> list[str]:
    """The warnings this clock has earned and not yet given: each share of its target used
    (``plan.warn_at``) while it runs, and its breach; each once, to the team only (a mail to
    the assignee or every agent, and a webhook event). Levels skipped while nobody looked
    (a clock found past 90 % is warned at 90 % only, and a breached one only as breached)."""
    given = []
    for level in warning_levels(clock, plan):
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


def warning_levels(clock: Clock, plan: Plan | None) -> list[str]:
    """The warning this clock has earned by now, if any: the last share of its target used,
    or its breach."""
    if plan is None or clock.state == "met":
        return []
    levels = [f"{share:.0%}" for share in plan.warn_at if clock.used >= share]
    if clock.breached:
        return ["breached"]
    if clock.state != "running":
        return []
    return levels[-1:]


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
    those a clock of which has reached its ``recheck_at``; how many tickets (at most
    ``limit``: call again while it returns ``limit``)."""
    now = now or utcnow()
    # Worked out in a reading transaction and stored STORED_AT_ONCE tickets per short writing
    # one: on SQLite the write lock is the one every accepted mail waits for (500 tickets'
    # business-time arithmetic inside it held SMTP clients' 250s back by a quarter of a
    # second, and storing their 2,000 clocks at once by a tenth).
    with transaction(engine, write=False) as session:
        stale = (select(SlaClock.ticket_id).where(
            SlaClock.ticket_id == Ticket.id,
            or_(col(SlaClock.ticket_version) != Ticket.version,
                col(SlaClock.recheck_at) <= now)).exists())
        unworked = ~select(SlaClock.id).where(SlaClock.ticket_id == Ticket.id).exists()
        due = list(session.exec(select(Ticket).where(
            col(Ticket.status) != "held",
            or_(stale, unworked & col(Ticket.status).not_in(list(FINAL))))
            .order_by(col(Ticket.id)).limit(limit)).all())
        worked = work_out(session, due, Plans(session), now)
    for start in range(0, len(worked), STORED_AT_ONCE):
        chunk = worked[start:start + STORED_AT_ONCE]
        with transaction(engine) as session:
            # A ticket that changed meanwhile is left for the next look (its version moved).
            versions = dict(session.exec(select(Ticket.id, Ticket.version).where(
                col(Ticket.id).in_([item.ticket.id for item in chunk]))).all())
            store(session, [item for item in chunk
                            if versions.get(item.ticket.id) == item.ticket.version], workflow)
    return len(due)


def recheck_plans(session: Session, plans: list[str] | None = None,
                  organization_id: int | None = None) -> int:
    """After a change of calendar or plan (``plans``: those concerned) or of one organization's
    plan: the clocks of the open tickets concerned are worked out again on serve's next look
    (closed tickets keep the clocks they were measured by). How many clocks."""
    tickets = select(Ticket.id).join(Organization, Organization.id == Ticket.organization_id) \
        .where(col(Ticket.status).not_in(list(FINAL)))
    if plans is not None:
        tickets = tickets.where(col(Organization.sla_plan).in_(plans))
    if organization_id is not None:
        tickets = tickets.where(Organization.id == organization_id)
    result = session.execute(update(SlaClock).where(col(SlaClock.ticket_id).in_(tickets))
                             .values(recheck_at=utcnow()))
    return result.rowcount


# ---------------------------------------------------------------------- set-up (CLI and API)


def parse_hours(spec: str) -> list[list[str]]:
    """``"09:00-14:00,15:30-18:30"`` → ``[["09:00", "14:00"], ["15:30", "18:30"]]``
    (checked: each window ends after it starts, and none overlaps another)."""
    windows = []
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        start, _, end = part.partition("-")
        try:
            windows.append(Window(time.fromisoformat(start.strip()),
                                  time.fromisoformat(end.strip())))
        except ValueError as exc:
            raise ValueError(f"not a window of working hours (09:00-14:00): {part!r}: "
                             f"{exc}") from None
    windows.sort(key=lambda w: w.start)
    for before, after in zip(windows, windows[1:], strict=False):
        if after.start < before.end:
            raise ValueError(f"windows overlap: {before.start:%H:%M}-{before.end:%H:%M} and "
                             f"{after.start:%H:%M}-{after.end:%H:%M}")
    return [[w.start.strftime("%H:%M"), w.end.strftime("%H:%M")] for w in windows]


def save_calendar(engine: Engine, name: str, *, hours: str, days: str = "mon-fri",
                  seasons: list[tuple[str, str, str]] = (), timezone: str = "Europe/Madrid",
                  country: str | None = "ES", subdivision: str | None = None,
                  extra: list[str] = ()) -> SlaCalendar:
    """Add or replace a calendar (the CLI's shape): the same ``hours`` on ``days``
    ("mon-fri", "mon-sat" or a list "mon,tue,thu"), ``seasons`` as (from "MM-DD", to "MM-DD",
    hours), holidays of a country and region, extra dates."""
    chosen = _days(days)
    return store_calendar(
        engine, name, hours={day: hours.split(",") for day in chosen},
        seasons=[{"from": a, "to": b, "hours": {day: h.split(",") for day in chosen}}
                 for a, b, h in seasons],
        timezone=timezone, country=country, subdivision=subdivision, extra=extra)


def store_calendar(engine: Engine, name: str, *, hours: dict[str, list[str]],
                   seasons: list[dict] = (), timezone: str = "Europe/Madrid",
                   country: str | None = "ES", subdivision: str | None = None,
                   extra: list[str] = ()) -> SlaCalendar:
    """Add or replace a calendar: windows per day (``{"mon": ["09:00-14:00", "15:30-18:30"],
    ...}``, days left out are not worked), seasons (``{"from": "06-15", "to": "09-15",
    "hours": {...}}``), holidays of a country and region, extra dates ("2026-01-29").
    Checked by building it: a ValueError (or LookupError for an unknown time zone, country
    or region) says what is wrong. The open tickets on plans using it follow."""
    def week(spec: dict[str, list[str]]) -> dict[str, list[list[str]]]:
        unknown = set(spec) - set(DAYS)
        if unknown:
            raise ValueError(f"unknown day {sorted(unknown)[0]!r}: {', '.join(DAYS)}")
        return {day: parse_hours(",".join(spec[day])) for day in DAYS if spec.get(day)}

    season_rows = []
    for season in seasons:
        for edge in ("from", "to"):
            month, day = _month_day(season[edge])
            date(2024, month, day)  # a real day of the year (29 February included)
        season_rows.append({"from": season["from"], "to": season["to"],
                            "hours": week(season["hours"])})
    row = SlaCalendar(name=name, timezone=timezone, country=country, subdivision=subdivision,
                      hours=json.dumps(week(hours)), seasons=json.dumps(season_rows),
                      extra_holidays=json.dumps(sorted({date.fromisoformat(d).isoformat()
                                                        for d in extra})))
    try:
        calendar_of(row).is_holiday(date.today())  # the zone, country and region exist
    except NotImplementedError as exc:
        raise LookupError(f"no holidays known for {country!r} {subdivision or ''}") from exc
    with transaction(engine) as session:
        existing = session.exec(select(SlaCalendar).where(SlaCalendar.name == name)).first()
        if existing is not None:
            for column in ("timezone", "country", "subdivision", "hours", "seasons",
                           "extra_holidays"):
                setattr(existing, column, getattr(row, column))
            row = existing
        session.add(row)
        session.flush()
        recheck_plans(session, list(session.exec(select(SlaPlan.name).where(
            SlaPlan.calendar_id == row.id))))
        return row


def save_plan(engine: Engine, name: str, *, calendar: str, targets: dict[str, dict[str, int]],
              default_priority: str = "normal", warn_at: list[float] = (0.75, 0.9)) -> SlaPlan:
    """Add or replace a plan on a calendar (by name): business minutes per target and
    priority; each target names the default priority's minutes (priorities left out take
    them), so that every ticket has a clock for each target. The open tickets on it follow."""
    unknown = set(targets) - set(TARGET_NAMES)
    if unknown:
        raise ValueError(f"unknown target {sorted(unknown)[0]!r}: {', '.join(TARGET_NAMES)}")
    if not targets:
        raise ValueError("a plan needs at least one target")
    if default_priority not in PRIORITIES:
        raise ValueError(f"unknown priority {default_priority!r}: {', '.join(PRIORITIES)}")
    for target, minutes in targets.items():
        unknown = set(minutes) - set(PRIORITIES)
        if unknown:
            raise ValueError(f"unknown priority {sorted(unknown)[0]!r} in {target}: "
                             f"{', '.join(PRIORITIES)}")
        if default_priority not in minutes:
            raise ValueError(f"{target} needs the minutes of the default priority "
                             f"({default_priority})")
        if any(not 0 < m <= 1_000_000 for m in minutes.values()):
            raise ValueError(f"{target}: business minutes between 1 and 1000000")
    if any(not 0 < share < 1 for share in warn_at):
        raise ValueError("warnings at shares of a target between 0 and 1 (0.75 is 75 %)")
    with transaction(engine) as session:
        found = session.exec(select(SlaCalendar).where(SlaCalendar.name == calendar)).first()
        if found is None or found.id is None:
            raise ValueError(f"no calendar {calendar!r}")
        row = session.exec(select(SlaPlan).where(SlaPlan.name == name)).first() or SlaPlan(
            name=name, calendar_id=found.id, targets="{}")
        row.calendar_id, row.default_priority = found.id, default_priority
        row.targets, row.warn_at = json.dumps(targets), json.dumps(sorted(set(warn_at)))
        session.add(row)
        recheck_plans(session, [name])
        return row


def put_on_plan(engine: Engine, code: str, plan: str) -> Organization:
    """Put an organization on an SLA plan; its open tickets' clocks follow."""
    with transaction(engine) as session:
        found = session.exec(select(Organization).where(Organization.code == code)).first()
        if found is None:
            raise LookupError(f"no organization with code {code}")
        if session.exec(select(SlaPlan).where(SlaPlan.name == plan)).first() is None:
            raise ValueError(f"no SLA plan {plan!r}")
        found.sla_plan = plan
        session.add(found)
        session.flush()
        recheck_plans(session, organization_id=found.id)
        return found


def _days(spec: str) -> list[str]:
    if "-" in spec and "," not in spec:
        first, _, last = spec.partition("-")
        return list(DAYS[DAYS.index(first.strip()):DAYS.index(last.strip()) + 1])
    return [d.strip() for d in spec.split(",") if d.strip() in DAYS]
