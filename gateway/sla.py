"""SLA clocks: for a ticket's history and its organization's plan, each target's due time,
when it was met, whether and by how much it was breached, and the segments that explain it.

Targets (business minutes by priority, per plan):

- ``first_response`` (contractual): from the ticket's creation to the first thing the team does
  that the customer sees: an agent's answer, or a status whose change mails the customer
  (every status but pending and closed; the "received" mail is not an answer);
- ``resolution`` (contractual): from creation to resolved; a ticket reopened (resolved → back
  to work) is unmet again and its clock goes on, the time it spent resolved not counted;
- ``qualify`` (internal): from creation to the first change out of "new";
- ``plan`` (internal): from creation to planned, or to resolved for a ticket never planned.

Every clock stands still while the ticket awaits the customer or is pending. The plan's target
for the ticket's current priority applies: a priority changed mid-way moves the due times.
The clocks are worked out from the history each time (a pure function of it), so a due time
can always be explained again and a calendar change applies to every open ticket alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from gateway.business_time import MINUTE, Calendar, Segment

TARGETS = ("first_response", "resolution", "qualify", "plan")
CONTRACTUAL = frozenset({"first_response", "resolution"})
PRIORITIES = ("low", "normal", "high", "urgent")
PAUSING = frozenset({"awaiting_customer", "pending"})
# A change into one of these mails the customer (gateway.workflow.STATUS_EVENTS, and resolved).
ANSWERING = frozenset({"qualified", "in_progress", "planned", "awaiting_customer", "resolved",
                       "cancelled"})
FINAL = frozenset({"closed", "cancelled"})
Span = tuple[datetime, datetime | None]  # from, until (None: still)


@dataclass(frozen=True)
class Plan:
    name: str
    calendar: Calendar
    # target -> priority -> business minutes; a target a plan leaves out is not measured
    targets: dict[str, dict[str, int]]
    default_priority: str = "normal"
    warn_at: tuple[float, ...] = (0.75, 0.9)  # shares of a target used, warned once each

    def minutes(self, target: str, priority: str) -> int | None:
        by_priority = self.targets.get(target) or {}
        return by_priority.get(priority, by_priority.get(self.default_priority))


@dataclass(frozen=True)
class Change:
    """One thing in a ticket's history that a clock cares about."""

    at: datetime
    to_status: str | None = None  # a status change
    answered: bool = False  # an agent's answer to the customer


@dataclass(frozen=True)
class Clock:
    target: str
    contractual: bool
    minutes: int
    started_at: datetime
    due_at: datetime | None  # None while paused before the target was met
    met_at: datetime | None
    breached: bool
    over_minutes: float  # business minutes past the due time (0 if not breached)
    used: float  # share of the target used so far (or until met)
    segments: list[Segment] = field(default_factory=list)

    @property
    def state(self) -> str:
        if self.met_at is not None:
            return "breached" if self.breached else "met"
        if self.breached:
            return "breached"
        return "paused" if self.due_at is None else "running"


def clocks(plan: Plan, *, created_at: datetime, priority: str, history: Sequence[Change],
           now: datetime, closed_at: datetime | None = None) -> list[Clock]:
    """Every target of the plan for one ticket, as of ``now``."""
    changes = sorted(history, key=lambda c: c.at)
    pauses = _pauses(created_at, changes)
    found = []
    for target in TARGETS:
        minutes = plan.minutes(target, priority)
        if minutes is None:
            continue
        met_at = _met(target, changes)
        end = met_at or closed_at or now  # a ticket closed or cancelled unmet stops there
        # The resolution clock does not run while the ticket is resolved (before a reopening).
        # Only what happened before the clock ended counts: a question asked after the first
        # answer does not move the first answer's due time.
        target_pauses = [(a, end if b is None or b > end else b) for a, b in
                         pauses + (_resolved_spans(changes) if target == "resolution" else [])
                         if a < end]
        if met_at is None and closed_at is None:
            target_pauses = [(a, None if b == end and _open(pauses, a) else b)
                             for a, b in target_pauses]
        due = plan.calendar.add(created_at, minutes, target_pauses)
        # One walk over the clock's time gives its explanation, the minutes used and those
        # past the due time.
        segments = plan.calendar.segments(created_at, end, target_pauses)
        running = [(s.start, s.end) for s in segments if s.kind == "running"]
        used_minutes = sum((b - a) / MINUTE for a, b in running)
        breached = due is not None and end > due
        over = sum((b - max(a, due)) / MINUTE for a, b in running if b > due) \
            if breached and due is not None else 0.0
        found.append(Clock(
            target=target, contractual=target in CONTRACTUAL, minutes=minutes,
            started_at=created_at, due_at=due, met_at=met_at, breached=breached,
            over_minutes=over, used=used_minutes / minutes if minutes else 1.0,
            segments=segments))
    return found


def _open(pauses: Sequence[tuple[datetime, datetime | None]], start: datetime) -> bool:
    return any(a == start and b is None for a, b in pauses)


def _met(target: str, changes: Sequence[Change]) -> datetime | None:
    if target == "first_response":
        return next((c.at for c in changes if c.answered or c.to_status in ANSWERING), None)
    if target == "qualify":
        return next((c.at for c in changes if c.to_status is not None and c.to_status != "new"
                     and c.to_status not in ("held",)), None)
    if target == "plan":
        return next((c.at for c in changes if c.to_status in ("planned", "resolved")), None)
    # resolution: the last resolution that was not undone by a reopening
    met = None
    for change in changes:
        if change.to_status == "resolved":
            met = change.at
        elif change.to_status is not None and change.to_status not in FINAL and met is not None:
            met = None  # reopened: unmet again
    return met


def _pauses(created_at: datetime, changes: Sequence[Change]) -> list[Span]:
    """The spans the ticket spent awaiting the customer or pending (the last may be open)."""
    spans: list[tuple[datetime, datetime | None]] = []
    since: datetime | None = None
    for change in changes:
        if change.to_status is None:
            continue
        if change.to_status in PAUSING and since is None:
            since = change.at
        elif change.to_status not in PAUSING and since is not None:
            spans.append((since, change.at))
            since = None
    if since is not None:
        spans.append((since, None))
    return spans


def _resolved_spans(changes: Sequence[Change]) -> list[tuple[datetime, datetime | None]]:
    """Spans between a resolution and the reopening that followed it (closed ones end the
    clock instead, so only reopenings make a span)."""
    spans: list[tuple[datetime, datetime | None]] = []
    since = None
    for change in changes:
        if change.to_status == "resolved":
            since = change.at
        elif change.to_status is not None and since is not None and change.to_status not in FINAL:
            spans.append((since, change.at))
            since = None
    return spans
