"""SLA benchmark (`make bench`): due times of 100,000 tickets on one calendar, as after a
calendar change every open ticket's due times are computed again.

    python -m bench.sla [--tickets 100000] [--seed 42]

The calendar is a realistic one (split shift 9:00-14:00 and 15:30-18:30, summer hours 8:00-15:00
from 15 June to 15 September, Spain's and Aragón's holidays, a local one, Europe/Madrid); the
tickets arrive at random moments over two years and each gets four targets (1 h, 8 h, 2 days,
5 days of working time), a quarter of them with a pause (awaiting the customer). Target: under
10 seconds.
"""

from __future__ import annotations

import argparse
import random
import time
from datetime import UTC, date, datetime, timedelta

from gateway.business_time import Calendar, Season, week

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
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
