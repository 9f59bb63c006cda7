"""Ticket ratings: who may rate, when a rating is final, the star links, and reminders.

Rules (README "Ratings"): a resolved or closed ticket may be rated by a contact of its
organization. The rating may be changed, and a comment added, until it is final: when the ticket
is closed, or ``FINAL_AFTER`` after it was first given. ``rated_at`` keeps that first moment;
``rating_source`` says how the latest value came (``email_link`` or ``web``).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from gateway.links import STARS, RatingChoice, RatingLinks
from storage.db import transaction
from storage.models import Contact, Ticket, aware, utcnow
from storage.ratings import (
    distinct_stars_opened_since,
    forget_openings_before,
    record_opening,
    tickets_due_a_reminder,
)

if TYPE_CHECKING:
    from gateway.workflow import Workflow

log = logging.getLogger("gateway.ratings")

RATEABLE_STATUSES = ("resolved", "closed")
FINAL_AFTER = timedelta(days=14)
# The scanner rules (README "Ratings"). Openings of different stars of one ticket within this
# window are a burst; a star link's automatic rating stays provisional for as long, and a burst
# meanwhile cancels it. Scanners open the links of a mail together, or a few seconds apart;
# a person who changes their mind confirms with a click.
BURST_WINDOW = timedelta(minutes=2)
BURST_DISTINCT_STARS = 2
COMMENT_LIMIT = 2000
OPENINGS_KEPT = timedelta(days=1)


def rating_links(links: RatingLinks, ticket_number: int, contact_id: int) -> list[dict[str, Any]]:
    """The ``rating_links`` context of a mail: one signed URL per star value."""
    return [{"stars": n, "url": links.url(ticket_number, contact_id, n)} for n in STARS]


def may_rate(ticket: Ticket, contact: Contact) -> bool:
    """A contact of the ticket's organization, on a resolved or closed ticket."""
    return (
        ticket.status in RATEABLE_STATUSES
        and contact.active
        and contact.organization_id == ticket.organization_id
    )


def is_final(ticket: Ticket, now: datetime | None = None) -> bool:
    """A given rating can no longer change: the ticket is closed, or it was given long ago."""
    if ticket.rating is None or ticket.rated_at is None:
        return False
    if ticket.status == "closed":
        return True
    return (now or utcnow()) - aware(ticket.rated_at) >= FINAL_AFTER


def record(ticket: Ticket, stars: int, comment: str | None, source: str,
           now: datetime | None = None) -> bool:
    """Set the rating (and the comment, if one is given); False if the rating is final."""
    now = now or utcnow()
    if stars not in STARS or is_final(ticket, now):
        return False
    if ticket.rated_at is None:
        ticket.rated_at = now
    ticket.pending_rating = ticket.pending_rating_at = None  # a rating given stands for itself
    ticket.rating = stars
    ticket.rating_source = source
    if comment is not None:
        ticket.rating_comment = comment.strip()[:COMMENT_LIMIT] or None
    return True


def opened(session: Session, ticket: Ticket, stars: int, now: datetime | None = None) -> bool:
    """Record that a star link was opened; True if this looks like a scanner's burst, in
    which case a provisional rating of the ticket is cancelled too."""
    now = now or utcnow()
    assert ticket.id is not None
    record_opening(session, ticket.id, stars, now)
    session.flush()
    burst = is_burst(session, ticket, now)
    if burst and ticket.pending_rating is not None:
        ticket.pending_rating = ticket.pending_rating_at = None
        session.add(ticket)
    return burst


def is_early(choice: RatingChoice, confirm_minutes: float, now: datetime | None = None) -> bool:
    """A link opened so soon after its mail was written that a mail security scanner, not a
    person, is the likely visitor: it must be confirmed with a click."""
    if choice.made_at is None:
        return False
    return (now or utcnow()) - aware(choice.made_at) < timedelta(minutes=confirm_minutes)


def propose(ticket: Ticket, stars: int, now: datetime | None = None) -> bool:
    """The automatic rating of a star link's page: provisional until BURST_WINDOW has passed
    without a burst (``promote_pending``); False if the rating is final."""
    if stars not in STARS or is_final(ticket, now):
        return False
    ticket.pending_rating, ticket.pending_rating_at = stars, now or utcnow()
    return True


def promote_pending(engine: Engine, workflow: Workflow, now: datetime | None = None) -> int:
    """Provisional ratings that stood BURST_WINDOW without a burst become the ratings."""
    now = now or utcnow()
    with transaction(engine) as session:
        due = session.exec(select(Ticket).where(
            col(Ticket.pending_rating).is_not(None),
            col(Ticket.pending_rating_at) <= now - BURST_WINDOW)).all()
        for ticket in due:
            assert ticket.pending_rating is not None
            record(ticket, ticket.pending_rating, None, "email_link", now)
            ticket.pending_rating = ticket.pending_rating_at = None
            session.add(ticket)
            workflow.rating_received(session, ticket)
            log.info("ticket %s rated %d through a star link (stood %s without a burst)",
                     ticket.number, ticket.rating, BURST_WINDOW)
        return len(due)


def is_burst(session: Session, ticket: Ticket, now: datetime | None = None) -> bool:
    assert ticket.id is not None
    since = (now or utcnow()) - BURST_WINDOW
    return distinct_stars_opened_since(session, ticket.id, since) >= BURST_DISTINCT_STARS


def queue_reminders(engine: Engine, workflow: Workflow, links: RatingLinks, after_days: int,
                    now: datetime | None = None) -> int:
    """Queue one "rating_reminder" per unrated ticket resolved ``after_days`` ago; never twice."""
    now = now or utcnow()
    with transaction(engine) as session:
        tickets = tickets_due_a_reminder(session, now - timedelta(days=after_days))
        ids = {t.requester_id for t in tickets}
        contacts = {c.id: c for c in session.exec(select(Contact).where(col(Contact.id).in_(ids)))}
        queued = 0
        for ticket in tickets:
            ticket.rating_reminded_at = now
            session.add(ticket)
            contact = contacts[ticket.requester_id]
            if not contact.active:
                continue
            assert contact.id is not None
            workflow.queue(session, event="rating_reminder", ticket=ticket, contact=contact,
                           extra={"rating_links": rating_links(links, ticket.number, contact.id)})
            queued += 1
        return queued


def forget_old_openings(engine: Engine, now: datetime | None = None) -> int:
    """Star-link openings are kept only as long as the scanner rule could use them (a day)."""
    with transaction(engine) as session:
        return forget_openings_before(session, (now or utcnow()) - OPENINGS_KEPT)

