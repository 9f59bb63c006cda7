"""Queries for ratings: star-link openings (the scanner rule) and tickets due a reminder."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Session, col, delete, func, select

from storage.db import supports_skip_locked
from storage.models import RatingOpening, Ticket


def record_opening(session: Session, ticket_id: int, stars: int, at: datetime) -> None:
    session.add(RatingOpening(ticket_id=ticket_id, stars=stars, opened_at=at))


def distinct_stars_opened_since(session: Session, ticket_id: int, since: datetime) -> int:
    """How many different star values of a ticket were opened since a moment."""
    query = select(func.count(func.distinct(RatingOpening.stars))).where(
        col(RatingOpening.ticket_id) == ticket_id, col(RatingOpening.opened_at) >= since
    )
    return int(session.exec(query).one())


def tickets_due_a_reminder(session: Session, resolved_before: datetime,
                           limit: int = 500) -> list[Ticket]:
    """Resolved, unrated, never reminded tickets resolved before a moment, locked for this run."""
    query = (
        select(Ticket)
        .where(
            col(Ticket.status) == "resolved",
            col(Ticket.rating).is_(None),
            col(Ticket.rating_reminded_at).is_(None),
            col(Ticket.resolved_at) <= resolved_before,
        )
        .order_by(col(Ticket.id))
        .limit(limit)
    )
    if session.bind is not None and supports_skip_locked(session.get_bind()):  # type: ignore[arg-type]
        query = query.with_for_update(skip_locked=True)
    return list(session.exec(query).all())


def forget_openings_before(session: Session, moment: datetime) -> int:
    """Delete star-link openings older than a moment (the scanner rule only looks a minute back)."""
    result = session.exec(delete(RatingOpening).where(col(RatingOpening.opened_at) < moment))
    return int(result.rowcount or 0)
