"""SLA benchmark (`make bench`): due times of 100,000 tickets on one calendar, as after a
calendar change every open ticket's due times are computed again.

    python -m bench.sla [--tickets 100000] [--stored 20000] [--db sqlite,postgresql] [--seed 42]

The calendar is a realistic one (split shift 9:00-14:00 and 15:30-18:30, summer hours 8:00-15:00
from 15 June to 15 September, Spain's and Aragón's holidays, a local one, Europe/Madrid); the
tickets arrive at random moments over two years and each gets four targets (1 h, 8 h, 2 days,
5 days of working time), a quarter of them with a pause (awaiting the customer). Target: under
10 seconds.

Then the same work as `serve` does it, through the database: ``--stored`` open tickets that
came in over the last two weeks, their clocks worked out and stored a first time, then the
calendar changed (``save_calendar``) and every one worked out again by ``refresh_changed``,
batch after batch, as serve's SLA loop does.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from sqlalchemy import distinct, func, insert
from sqlmodel import Session, col, select

from bench.databases import fresh_database
from gateway.business_time import Calendar, Season, week
from gateway.sla_clocks import refresh_changed, save_calendar
from storage.db import make_engine
from storage.directory import add_contact, add_organization
from storage.migrate import upgrade
from storage.models import SlaClock, Ticket, utcnow

TARGETS = (60, 480, 2 * 600, 5 * 600)  # minutes


def calendar() -> Calendar:
    return Calendar(week([("09:00", "14:00"), ("15:30", "18:30")]),
                    seasons=(Season((6, 15), (9, 15), week([("08:00", "15:00")])),),
                    subdivision="AR", extra_holidays=frozenset({date(2026, 1, 29),
                                                                date(2027, 1, 29)}))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tickets", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--stored", type=int, default=20_000,
                        help="open tickets reworked through the database (0: none)")
    parser.add_argument("--db", default="sqlite,postgresql")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    base = datetime(2026, 1, 1, tzinfo=UTC)
    arrivals = [base + timedelta(minutes=rng.randrange(2 * 365 * 24 * 60))
                for _ in range(args.tickets)]
    pauses = [[(a + timedelta(hours=1), a + timedelta(hours=1 + rng.randrange(1, 72)))]
              if rng.random() < 0.25 else [] for a in arrivals]
    work = calendar()
    started = time.perf_counter()
    computed = 0
    for arrival, paused in zip(arrivals, pauses, strict=True):
        for minutes in TARGETS:
            work.add(arrival, minutes, paused)
            computed += 1
    seconds = time.perf_counter() - started
    print(f"SLA due times: {args.tickets} tickets x {len(TARGETS)} targets = {computed} due "
          f"times in {seconds:.2f} s ({computed / seconds:,.0f}/s; "
          f"{seconds / args.tickets * 1e6:.0f} µs a ticket); target: 100,000 tickets under 10 s: "
          f"{'met' if seconds * 100_000 / args.tickets < 10 else 'NOT met'}")
    for kind in [k.strip() for k in args.db.split(",") if k.strip()] if args.stored else []:
        first, again = through_the_database(kind, args.stored, rng)
        print(f"  stored ({kind}): {args.stored} open tickets' clocks worked out and stored in "
              f"{first:.2f} s ({args.stored / first:,.0f} tickets/s); after a calendar change, "
              f"again in {again:.2f} s ({args.stored / again:,.0f} tickets/s)")
    return 0


def through_the_database(kind: str, tickets: int, rng: random.Random) -> tuple[float, float]:
    """Seconds to work out and store the clocks of ``tickets`` open tickets, then again after
    a change of their calendar (serve's loop: refresh_changed, 500 tickets a transaction)."""
    with tempfile.TemporaryDirectory() as workdir, fresh_database(kind, Path(workdir)) as url:
        upgrade(url)
        engine = make_engine(url)
        try:
            organization = add_organization(engine, code="C0001", tax_id="B12345678",
                                            name="Ferretería López S.L.", domains=[])
            person = add_contact(engine, organization_code="C0001", name="María García",
                                 email="maria.garcia@ferreteria-lopez.es")
            now = utcnow()
            rows = []
            for n in range(tickets):
                arrived = now - timedelta(minutes=rng.randrange(14 * 24 * 60))
                rows.append({"number": 1001 + n, "organization_id": organization.id,
                             "requester_id": person.id, "subject": f"Incidencia {n}",
                             "status": "new", "channel": "email", "priority": "normal",
                             "created_at": arrived, "updated_at": arrived, "version": 1})
            with engine.begin() as connection:
                connection.execute(insert(Ticket.__table__), rows)
            first = _rework(engine, tickets)
            save_calendar(engine, "spain", hours="08:00-14:00,15:00-18:00",
                          seasons=[("06-15", "09-15", "08:00-15:00")], subdivision="AR")
            return first, _rework(engine, tickets)
        finally:
            engine.dispose()


def _rework(engine, tickets: int) -> float:  # noqa: ANN001
    """Seconds until every ticket's clocks are worked out and stored, as serve's loop does. A
    ticket may be worked out twice: one whose warning or due moment comes while the run lasts
    (its next look is then due) is worked out again, rightly."""
    since, started, done = utcnow(), time.perf_counter(), 0
    while (count := refresh_changed(engine, limit=500)) == 500:
        done += count
    done += count
    seconds = time.perf_counter() - started
    with Session(engine) as session:
        fresh = session.exec(select(func.count(distinct(SlaClock.ticket_id)))
                             .where(col(SlaClock.computed_at) >= since)).one()
    assert fresh == tickets <= done, f"{fresh} tickets' clocks worked out, expected {tickets}"
    return seconds


if __name__ == "__main__":
    raise SystemExit(main())
