"""The inbound queue table: record an accepted mail, claim the next one, find earlier copies."""

from __future__ import annotations

from sqlalchemy import or_
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from storage.blobs import BlobStore
from storage.db import supports_skip_locked, transaction
from storage.models import InboundMessage


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
    row = InboundMessage(
        channel=channel,
        source=source[:255],
        source_ref=source_ref,
        mail_from=mail_from[:320],
        rcpt_to=",".join(rcpt_to),
        raw_key=key,
        raw_sha256=key,
        size=len(raw),
    )
    with transaction(engine) as session:
        session.add(row)
        session.flush()
        assert row.id is not None
        return row.id


def claim_next(session: Session, inbound_id: int | None = None) -> InboundMessage | None:
    """Lock the oldest queued mail (or the one named) for this transaction.

    On PostgreSQL other gateway processes skip a locked row; on SQLite the write transaction
    (BEGIN IMMEDIATE) already makes the claim exclusive.
    """
    query = select(InboundMessage).where(InboundMessage.state == "queued")
    if inbound_id is not None:
        query = query.where(InboundMessage.id == inbound_id)
    query = query.order_by(InboundMessage.id).limit(1)  # type: ignore[arg-type]
    if supports_skip_locked(session.get_bind()):  # type: ignore[arg-type]
        query = query.with_for_update(skip_locked=True)
    return session.exec(query).first()


def earlier_copy(session: Session, row: InboundMessage) -> InboundMessage | None:
    """An already processed mail with the same raw bytes or the same Message-ID."""
    same = InboundMessage.raw_sha256 == row.raw_sha256
    if row.header_message_id:
        same = or_(same, InboundMessage.header_message_id == row.header_message_id)
    query = (
        select(InboundMessage)
        .where(same, InboundMessage.id != row.id, InboundMessage.state == "done")
        .order_by(InboundMessage.id)  # type: ignore[arg-type]
        .limit(1)
    )
    return session.exec(query).first()


def mark_failed(engine: Engine, inbound_id: int, error: str) -> None:
    """Keep a mail that could not be processed, with its error, for `helpdesk inbound retry`."""
    with transaction(engine) as session:
        row = session.get(InboundMessage, inbound_id)
        if row is not None:
            row.state = "failed"
            row.outcome = "failed"
            row.attempts += 1
            row.error = error[:4000]
            session.add(row)


def requeue_failed(engine: Engine, ids: list[int] | None = None) -> int:
    with transaction(engine) as session:
        query = select(InboundMessage).where(InboundMessage.state == "failed")
        if ids:
            query = query.where(InboundMessage.id.in_(ids))  # type: ignore[union-attr]
        rows = session.exec(query).all()
        for row in rows:
            row.state = "queued"
            session.add(row)
        return len(rows)
