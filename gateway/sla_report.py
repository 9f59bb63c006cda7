"""The SLA report of a period (`helpdesk sla report`, the API's /v1/sla/report): per
organization and target, the tickets opened in the period, how many met and breached, the
median and 90th percentile of the business minutes they took (those met), and the ratings
given in the period (count, average, one to five stars)."""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime

from sqlmodel import Session, col, select

from gateway.sla import TARGETS
from gateway.sla_clocks import Plans, ticket_clocks
from storage.models import Organization, Ticket


@dataclass
class TargetFigures:
    organization: str
    target: str
    contractual: bool
    tickets: int = 0
    met: int = 0
    breached: int = 0
    taken: list[float] = field(default_factory=list)  # business minutes, of those met

    @property
    def median(self) -> float | None:
        return _percentile(self.taken, 50)

    @property
    def p90(self) -> float | None:
        return _percentile(self.taken, 90)


@dataclass
class Ratings:
    organization: str
    count: int = 0
    stars: dict[int, int] = field(default_factory=lambda: dict.fromkeys(range(1, 6), 0))

    @property
    def average(self) -> float | None:
        total = sum(n * times for n, times in self.stars.items())
        return round(total / self.count, 2) if self.count else None


@dataclass
class Report:
    since: datetime
    until: datetime
    targets: list[TargetFigures]
    ratings: list[Ratings]


def report(session: Session, since: datetime, until: datetime, organization: str | None = None,
           now: datetime | None = None) -> Report:
    query = (select(Ticket, Organization).join(Organization,
                                               col(Organization.id) == Ticket.organization_id)
             .where(col(Ticket.created_at) >= since, col(Ticket.created_at) < until,
                    col(Ticket.status) != "held"))
    if organization:
        query = query.where(Organization.code == organization)
    plans = Plans(session)
    figures: dict[tuple[str, str], TargetFigures] = {}
    for ticket, org in session.exec(query.order_by(col(Ticket.id))):
        for clock in ticket_clocks(session, ticket, plans, now):
            row = figures.setdefault((org.code, clock.target),
                                     TargetFigures(org.code, clock.target, clock.contractual))
            row.tickets += 1
            if clock.breached:
                row.breached += 1
            elif clock.met_at is not None:
                row.met += 1
            if clock.met_at is not None:
                row.taken.append(clock.used * clock.minutes)
    rated = (select(Ticket.rating, Organization.code)
             .join(Organization, col(Organization.id) == Ticket.organization_id)
             .where(col(Ticket.rated_at) >= since, col(Ticket.rated_at) < until,
                    col(Ticket.rating).is_not(None)))
    if organization:
        rated = rated.where(Organization.code == organization)
    ratings: dict[str, Ratings] = defaultdict(lambda: Ratings(""))
    for stars, code in session.exec(rated):
        entry = ratings[code]
        entry.organization = code
        entry.count += 1
        entry.stars[int(stars)] += 1
    order = {target: n for n, target in enumerate(TARGETS)}
    return Report(since, until,
                  sorted(figures.values(), key=lambda f: (f.organization, order[f.target])),
                  [ratings[code] for code in sorted(ratings)])


def _percentile(values: list[float], share: int) -> float | None:
    """Nearest-rank percentile (the value below which ``share`` % of them lie)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(share / 100 * len(ordered)))
    return round(ordered[rank - 1], 1)
