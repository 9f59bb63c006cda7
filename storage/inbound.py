"""The inbound queue table: record an accepted mail, claim the next one, find earlier copies."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import and_, or_
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from storage.blobs import BlobStore
from storage.db import supports_skip_locked, transaction
from storage.models import InboundMessage, utcnow


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


def record(engine: Engine, arrivals: list[Arrival]) -> list[int]:
    """Queue mails already in the blob store, all in one transaction (one commit, one fsync)."""
    rows = [
        InboundMessage(
            channel=a.channel, source=a.source[:255], source_ref=a.source_ref,
            mail_from=a.mail_from[:320], rcpt_to=",".join(a.rcpt_to), raw_key=a.key,
            raw_sha256=a.key, size=a.size,
        )
        for a in arrivals
    ]
    with transaction(engine) as session:
        session.add_all(rows)
        session.flush()
        return [row.id for row in rows]  # type: ignore[misc]


# A lease older than ``stale`` is taken to belong to a worker that died mid-mail (taking it again
# is safe: a late worker's result is discarded, see leased_row). After MAX_ATTEMPTS leases a mail
# is kept as failed instead: a mail that kills its worker must not loop forever.
STALE_LEASE = timedelta(seconds=30)
MAX_ATTEMPTS = 5


def lease(
    engine: Engine, worker: str, limit: int, inbound_id: int | None = None,
    stale: timedelta = STALE_LEASE,
) -> list[tuple[int, str]]:
    """Take up to ``limit`` queued mails (oldest first, or the one named) for ``worker``;
    return their (queue id, raw blob key). Committed at once, so parsing happens outside any
    transaction; PostgreSQL workers skip rows that another is leasing right now."""
    now = utcnow()
    takeable = or_(
        col(InboundMessage.state) == "queued",
        and_(col(InboundMessage.state) == "processing",
             col(InboundMessage.claimed_at) < now - stale),
    )
    query = select(InboundMessage).where(takeable)
    if inbound_id is not None:
        query = query.where(InboundMessage.id == inbound_id)
    query = query.order_by(col(InboundMessage.id)).limit(limit)
    if supports_skip_locked(engine):
        query = query.with_for_update(skip_locked=True)
    leased = []
    with transaction(engine) as session:
        for row in session.exec(query).all():
            assert row.id is not None
            if row.attempts >= MAX_ATTEMPTS:
                row.state, row.outcome = "failed", "failed"
                row.error = f"gave up after {row.attempts} attempts (the worker kept dying)"
            else:
                row.state, row.claimed_by, row.claimed_at = "processing", worker, now
                row.attempts += 1
                leased.append((row.id, row.raw_key))
            session.add(row)
    return leased


def leased_row(session: Session, inbound_id: int, worker: str) -> InboundMessage | None:
    """The mail if ``worker`` still holds its lease, locked for this transaction."""
    query = select(InboundMessage).where(
        InboundMessage.id == inbound_id,
        InboundMessage.state == "processing",
        InboundMessage.claimed_by == worker,
    )
    if supports_skip_locked(session.get_bind()):  # type: ignore[arg-type]
        query = query.with_for_update()
    return session.exec(query).first()


def earlier_copy(session: Session, row: InboundMessage) -> InboundMessage | None:
    """An already processed mail with the same raw bytes or the same Message-ID.

    Two queries, each on its own index: an OR of the two lets SQLite fall back to a scan."""
    for same in (
        InboundMessage.raw_sha256 == row.raw_sha256,
        InboundMessage.header_message_id == row.header_message_id
        if row.header_message_id else None,
    ):
        if same is None:
            continue
        query = (
            select(InboundMessage)
            .where(same, InboundMessage.id != row.id, InboundMessage.state == "done")
            .order_by(col(InboundMessage.id))
            .limit(1)
        )
        found = session.exec(query).first()
        if found is not None:
            return found
    return None


def requeue_failed(engine: Engine, ids: list[int] | None = None) -> int:
    with transaction(engine) as session:
        query = select(InboundMessage).where(InboundMessage.state == "failed")
        if ids:
            query = query.where(InboundMessage.id.in_(ids))  # type: ignore[union-attr]
        rows = session.exec(query).all()
        for row in rows:
            row.state, row.attempts = "queued", 0
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
