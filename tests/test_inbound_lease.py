"""Leasing queued mail (storage.inbound.lease): oldest first, a lease that ran out taken again,
a mail whose worker died with it taken alone, and one that kept killing its worker given up."""

from __future__ import annotations

from datetime import timedelta

from sqlmodel import Session, col, select

from storage import inbound
from storage.models import InboundMessage, utcnow


def queue(engine, count: int, **values) -> list[int]:
    arrivals = [inbound.Arrival(f"{n:064x}", 10 + n, "smtp", "192.0.2.7", None,
                                f"s{n}@cliente.example", ("soporte@example.com",), "mx")
                for n in range(count)]
    ids = inbound.record(engine, arrivals)
    if values:
        with Session(engine) as session:
            for row in session.exec(select(InboundMessage).where(col(InboundMessage.id).in_(ids))):
                for name, value in values.items():
                    setattr(row, name, value)
                session.add(row)
            session.commit()
    return ids


def rows(engine) -> dict[int, InboundMessage]:
    with Session(engine) as session:
        return {row.id: row for row in session.exec(select(InboundMessage))}


def test_lease_takes_the_oldest_up_to_the_limit_and_marks_them(engine):
    ids = queue(engine, 5)
    before = utcnow()
    leased = inbound.lease(engine, "worker-a", 3)
    assert [mail.id for mail in leased] == ids[:3]
    first = leased[0]
    assert (first.raw_key, first.channel, first.source, first.mail_from, first.helo,
            first.released) == (f"{0:064x}", "smtp", "192.0.2.7", "s0@cliente.example", "mx",
                                False)
    now = rows(engine)
    for row_id in ids[:3]:
        assert (now[row_id].state, now[row_id].claimed_by, now[row_id].attempts) == (
            "processing", "worker-a", 1)
        assert now[row_id].claimed_at >= before.replace(microsecond=0)
    assert {now[i].state for i in ids[3:]} == {"queued"}
    # Another worker gets the rest, not the leased ones.
    assert [mail.id for mail in inbound.lease(engine, "worker-b", 10)] == ids[3:]
    assert inbound.lease(engine, "worker-c", 10) == []


def test_a_lease_that_ran_out_is_taken_again_and_counts_as_an_attempt(engine):
    ids = queue(engine, 2)
    inbound.lease(engine, "dead-worker", 2)
    assert inbound.lease(engine, "worker-b", 2) == []  # still leased
    later = utcnow() + inbound.STALE_LEASE + timedelta(seconds=1)
    # The first was being processed when its worker died: it may be what killed it, so it
    # is taken alone; the other follows with the next lease.
    assert [m.id for m in inbound.lease(engine, "worker-b", 2, now=later)] == ids[:1]
    assert [m.id for m in inbound.lease(engine, "worker-b", 2, now=later)] == ids[1:]
    now = rows(engine)
    assert [(now[i].claimed_by, now[i].attempts) for i in ids] == [("worker-b", 2)] * 2


def test_fresh_mail_is_leased_up_to_a_suspect_but_not_with_it(engine):
    fresh = queue(engine, 2)
    suspect = queue(engine, 1, attempts=2)  # its last two leases ended with no outcome
    newer = queue(engine, 1)
    assert [m.id for m in inbound.lease(engine, "w", 10)] == fresh
    assert [m.id for m in inbound.lease(engine, "w", 10)] == suspect
    assert rows(engine)[suspect[0]].attempts == 3
    assert [m.id for m in inbound.lease(engine, "w", 10)] == newer


def test_a_mail_that_kept_killing_its_worker_is_given_up(engine):
    doomed = queue(engine, 1, attempts=inbound.MAX_ATTEMPTS)
    fine = queue(engine, 1)
    assert [m.id for m in inbound.lease(engine, "w", 10)] == fine
    row = rows(engine)[doomed[0]]
    assert (row.state, row.outcome, row.attempts) == ("failed", "failed", inbound.MAX_ATTEMPTS)
    assert row.error == f"gave up after {inbound.MAX_ATTEMPTS} attempts (the worker kept dying)"
    assert row.processed_at is not None
    assert inbound.lease(engine, "w", 10) == []


def test_lease_of_one_named_mail(engine):
    ids = queue(engine, 3)
    assert [m.id for m in inbound.lease(engine, "w", 10, inbound_id=ids[1])] == [ids[1]]
    assert [r.state for _, r in sorted(rows(engine).items())] == ["queued", "processing",
                                                                   "queued"]
