"""The inbound queue table: record an accepted mail, lease the next ones, claim a mail's bytes and
Message-ID against copies, put back what met a temporary error."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import NamedTuple

from sqlalchemy import and_, bindparam, delete, insert, or_, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from storage.blobs import BlobStore
from storage.db import supports_skip_locked, transaction
from storage.models import InboundClaim, InboundMessage, utcnow


@dataclass(frozen=True)
class Arrival:
    """A mail whose raw bytes are already in the blob store, to be queued."""

    key: str
    size: int
    channel: str
    source: str = ""
    source_ref: str | None = None
    mail_from: str = ""
    rcpt_to: tuple[str, ...] = ()
    helo: str = ""


class Leased(NamedTuple):
    """A queued mail taken by a worker: what it needs to prepare it outside any transaction."""

    id: int
    raw_key: str
    channel: str
    source: str
    mail_from: str
    helo: str
    released: bool  # let through sender authentication by an agent


def enqueue(
    engine: Engine,
    blobs: BlobStore,
    raw: bytes,
    *,
    channel: str,
    source: str = "",
    source_ref: str | None = None,
    mail_from: str = "",
    rcpt_to: tuple[str, ...] = (),
) -> int:
    """Store the raw mail durably and queue it; return the queue id. Raises if it cannot."""
    key = blobs.put(raw)
    return record(engine, [Arrival(key, len(raw), channel, source, source_ref, mail_from,
                                   rcpt_to)])[0]


def record(engine: Engine, arrivals: list[Arrival], lock_wait: float | None = None,
           leased_by: str | None = None, urgent: bool = False) -> list[int]:
    """Queue mails already in the blob store, all in one transaction (one commit, one fsync);
    ``lock_wait`` bounds the wait for the database's locks (a temporary error after it).
    ``leased_by``: queued already leased to this worker, which applies them next (as if it had
    leased them: another worker takes them only once the lease runs out). ``urgent``: a client
    waits for this commit (storage.db.transaction)."""
    lease = {} if leased_by is None else {
        "state": "processing", "claimed_by": leased_by, "claimed_at": utcnow(), "attempts": 1}
    rows = [
        {"channel": a.channel, "source": a.source[:255], "source_ref": a.source_ref,
         "mail_from": a.mail_from[:320], "helo": a.helo[:255], "rcpt_to": ",".join(a.rcpt_to),
         "raw_key": a.key, "raw_sha256": a.key, "size": a.size, **lease}
        for a in arrivals
    ]
    with transaction(engine, lock_wait=lock_wait, urgent=urgent) as session:
        # One multi-row INSERT (plain rows: the SMTP process records each group commit here).
        inserted = session.connection().execute(
            insert(InboundMessage).returning(InboundMessage.id, sort_by_parameter_order=True),
            rows)
        return list(inserted.scalars())


# A lease older than ``stale`` is taken to belong to a worker that died mid-mail (taking it again
# is safe: a late worker's result is discarded, see leased_rows). After MAX_ATTEMPTS leases a mail
# is kept as failed instead: a mail that kills its worker must not loop forever.
STALE_LEASE = timedelta(seconds=30)
MAX_ATTEMPTS = 5


def lease(
    engine: Engine, worker: str, limit: int, inbound_id: int | None = None,
    stale: timedelta = STALE_LEASE, now: datetime | None = None,
) -> list[Leased]:
    """Take up to ``limit`` queued mails (oldest first, or the one named) for ``worker``.
    Committed at once, so parsing happens outside any transaction; PostgreSQL workers skip
    rows that another is leasing right now.

    A mail whose last lease ended without an outcome (its worker died, maybe because of it) is
    leased alone, so that a mail that kills its worker takes no other mail down with it."""
    now = now or utcnow()
    takeable = or_(
        and_(col(InboundMessage.state) == "queued",
             or_(col(InboundMessage.next_attempt_at).is_(None),
                 col(InboundMessage.next_attempt_at) <= now)),
        and_(col(InboundMessage.state) == "processing",
             col(InboundMessage.claimed_at) < now - stale),
    )
    m = InboundMessage
    # Plain rows and one UPDATE for the batch: the write lock (SQLite's, held from the start
    # of the transaction) is held for two statements, not for an ORM object per mail.
    query = select(m.id, m.attempts, m.raw_key, m.channel, m.source, m.mail_from,  # type: ignore[call-overload]
                   m.helo, m.released_by).where(takeable)
    if inbound_id is not None:
        query = query.where(m.id == inbound_id)
    query = query.order_by(col(m.id)).limit(limit)
    if supports_skip_locked(engine):
        query = query.with_for_update(skip_locked=True)
    leased: list[Leased] = []
    given_up: list[tuple[int, int]] = []
    with transaction(engine) as session:
        for row in session.connection().execute(query):
            if row.attempts >= MAX_ATTEMPTS:
                given_up.append((row.id, row.attempts))
                continue
            if row.attempts and leased:
                break  # a suspect: taken alone by the next lease
            leased.append(Leased(row.id, row.raw_key, row.channel, row.source, row.mail_from,
                                 row.helo, row.released_by is not None))
            if row.attempts:
                break
        for row_id, attempts in given_up:
            session.connection().execute(update(m).where(col(m.id) == row_id).values(
                state="failed", outcome="failed", processed_at=now,
                error=f"gave up after {attempts} attempts (the worker kept dying)"))
        if leased:
            session.connection().execute(
                update(m).where(col(m.id).in_([mail.id for mail in leased])).values(
                    state="processing", claimed_by=worker, claimed_at=now,
                    attempts=m.attempts + 1))
    return leased


def release(engine: Engine, worker: str, *, died: bool = True) -> int:
    """Put back the mails leased by ``worker``: they are taken again now instead of when their
    leases run out. ``died``: the worker is known to be dead (its supervisor saw it exit), and
    its mails count that lease as one that ended without an outcome; else the worker gives them
    back itself after an error that was not theirs, and the lease does not count."""
    values: dict[str, object] = {"state": "queued", "claimed_by": None, "claimed_at": None}
    if not died:
        values["attempts"] = InboundMessage.attempts - 1
    with transaction(engine) as session:
        result = session.execute(
            update(InboundMessage)
            .where(col(InboundMessage.state) == "processing",
                   col(InboundMessage.claimed_by) == worker)
            .values(**values))
        return result.rowcount  # type: ignore[attr-defined,no-any-return]


def leased_rows(session: Session, inbound_ids: list[int], worker: str) -> dict[int, InboundMessage]:
    """The mails of ``inbound_ids`` that ``worker`` still holds the lease of, by id, locked for
    this transaction (one query for a worker's whole batch)."""
    query = select(InboundMessage).where(
        col(InboundMessage.id).in_(inbound_ids),
        InboundMessage.state == "processing",
        InboundMessage.claimed_by == worker,
    )
    if supports_skip_locked(session.get_bind()):  # type: ignore[arg-type]
        query = query.with_for_update()
    return {row.id: row for row in session.exec(query)}  # type: ignore[misc]


def claim_keys(row: InboundMessage, message_id: str | None) -> list[str]:
    """The keys a mail claims: its raw bytes, and its Message-ID if it has one."""
    keys = [f"raw:{row.raw_sha256}"]
    if message_id:
        digest = hashlib.sha256(message_id.encode("utf-8", "surrogateescape"))
        keys.append(f"mid:{digest.hexdigest()}")
    return keys


# Built once (ingest claims for every mail): SQLite's and PostgreSQL's ON CONFLICT insert.
_CLAIM = {postgres: insert(InboundClaim).on_conflict_do_nothing(index_elements=["key"])
          .returning(InboundClaim.key)
          for postgres, insert in ((False, sqlite_insert), (True, postgresql_insert))}
_CLAIM_HOLDER = select(InboundClaim.inbound_id).where(InboundClaim.key == bindparam("key"))


def claim(session: Session, row: InboundMessage, message_id: str | None) -> InboundMessage | None:
    """Claim the mail's bytes and Message-ID for it, inside the caller's transaction; if an
    earlier mail holds either, claim nothing and return that mail (this one is its copy).

    The insert is refused by the database (``ON CONFLICT DO NOTHING`` on the primary key): on
    PostgreSQL an insert of a key that a concurrent transaction has just inserted waits for that
    transaction, and finds the key once it commits, so two copies applied at the same moment by
    two workers cannot both become tickets. Both keys go in one statement; if either was taken,
    the one inserted is deleted again (the caller's transaction never shows it to anybody)."""
    connection = session.connection()
    keys = claim_keys(row, message_id)
    claimed = set(connection.execute(
        _CLAIM[connection.dialect.name == "postgresql"],
        [{"key": key, "inbound_id": row.id} for key in keys]).scalars())
    if len(claimed) == len(keys):
        return None
    if claimed:
        connection.execute(delete(InboundClaim).where(col(InboundClaim.key).in_(claimed)))
    taken = next(key for key in keys if key not in claimed)
    holder = connection.execute(_CLAIM_HOLDER, {"key": taken}).scalar()
    # Read again even if the session holds it: an earlier mail of the same batch has its
    # outcome written by a plain UPDATE that its object does not show.
    return session.get(InboundMessage, holder, populate_existing=True) \
        if holder is not None else None


RETRY_BASE = timedelta(seconds=1)
RETRY_MAX = timedelta(minutes=5)


def retry_later(row: InboundMessage, reason: str, retry_for: timedelta,
                now: datetime | None = None) -> bool:
    """A temporary error: the mail goes back to the queue, to be tried again after waiting as
    long as it has been failing (at least 1 s, at most 5 minutes: the waits double). False once
    it has been failing for longer than ``retry_for``: the caller keeps it as failed."""
    now = now or utcnow()
    since = row.failing_since or now
    if now - since > retry_for:
        return False
    delay = min(max(now - since, RETRY_BASE), RETRY_MAX)
    row.state, row.claimed_by, row.claimed_at = "queued", None, None
    row.attempts = 0  # this lease ended with a result: the worker did not die
    row.failing_since, row.next_attempt_at, row.error = since, now + delay, reason
    return True


def requeue_failed(engine: Engine, ids: list[int] | None = None) -> int:
    """Queue again mails kept as failed (all, or those named), and try now those waiting after
    a temporary error."""
    with transaction(engine) as session:
        query = select(InboundMessage).where(or_(
            col(InboundMessage.state) == "failed",
            and_(col(InboundMessage.state) == "queued",
                 col(InboundMessage.next_attempt_at).is_not(None))))
        if ids:
            query = query.where(col(InboundMessage.id).in_(ids))
        rows = session.exec(query).all()
        for row in rows:
            row.state, row.attempts = "queued", 0
            row.next_attempt_at = row.failing_since = None
            session.add(row)
        return len(rows)


def enqueue_once(
    engine: Engine,
    blobs: BlobStore,
    raw: bytes,
    *,
    channel: str,
    source: str,
    source_ref: str,
    mail_from: str = "",
    rcpt_to: tuple[str, ...] = (),
) -> tuple[int, bool]:
    """Like :func:`enqueue` for a channel that may hand over the same mail again; returns
    ``(queue id, created)``.

    An IMAP poller that stopped between storing a mail and flagging it on the server fetches it
    again: the unique (channel, source, source_ref) then names the row already queued, and the
    mail is not queued twice. The blob store is content-addressed, so its second write is a no-op.
    """
    try:
        return enqueue(engine, blobs, raw, channel=channel, source=source,
                       source_ref=source_ref, mail_from=mail_from, rcpt_to=rcpt_to), True
    except IntegrityError:
        existing = queued_from(engine, channel, source, source_ref)
        if existing is None:  # some other constraint: not ours to hide
            raise
        return existing, False


def queued_from(engine: Engine, channel: str, source: str, source_ref: str) -> int | None:
    """The queue id of the mail a channel already handed over under this reference, if any."""
    with transaction(engine, write=False) as session:
        query = select(InboundMessage.id).where(
            InboundMessage.channel == channel,
            InboundMessage.source == source[:255],
            InboundMessage.source_ref == source_ref,
        )
        return session.exec(query).first()


def quarantined(session: Session, limit: int = 100) -> list[InboundMessage]:
    """Mails held because their sender was not authenticated, the newest first."""
    return list(session.exec(select(InboundMessage).where(
        InboundMessage.outcome == "quarantined").order_by(col(InboundMessage.id).desc())
        .limit(limit)))


def release_quarantined(engine: Engine, inbound_id: int, by: str) -> InboundMessage:
    """Let a quarantined mail through: queued again, and judged as if its sender were
    authenticated (an agent vouched for it: ``by``). LookupError if it is not quarantined."""
    with transaction(engine) as session:
        row = session.get(InboundMessage, inbound_id)
        if row is None or row.outcome != "quarantined":
            raise LookupError(f"no quarantined mail {inbound_id}")
        row.state, row.outcome, row.reason = "queued", None, None
        row.released_by, row.processed_at = by[:200], None
        row.claimed_by = row.claimed_at = None
        session.add(row)
        session.flush()
        session.expunge(row)
        return row
