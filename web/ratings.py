"""Star ratings on the web: the one-click page of the mail's star links, and the ticket page form.

Opening a star link (GET, or a scanner's HEAD) records nothing but the opening; the page then
sends the choice by POST itself (static/rate.js), which records a provisional rating: it stands
after two minutes unless another star of the ticket is opened meanwhile (a scanner opening every
link). A page opened within minutes of the mail, or after different stars were opened, does not
send itself and asks the person to confirm with a click; a click's rating stands at once. Rules
in ``gateway.ratings``.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from gateway import ratings
from gateway.links import STARS, BadLink, RatingChoice
from storage.db import transaction
from storage.models import Contact, Ticket
from storage.tickets import ticket_by_number
from web import csrf
from web.auth import current_contact
from web.forms import posted
from web.pages import link_refusal

log = logging.getLogger("gateway.web.ratings")

def link_page(request: Request) -> Response:
    """GET/HEAD of a star link: show the choice; the page posts it unless this is a burst."""
    token = request.path_params["token"]
    with transaction(request.app.state.engine) as session:
        try:
            choice, ticket, contact = _checked(request, session, token)
        except BadLink as refused:
            return _refusal(request, refused.reason)
        if ratings.is_final(ticket):
            return _page(request, "final", ticket, contact, token)
        burst = ratings.opened(session, ticket, choice.stars)
        early = ratings.is_early(choice, request.app.state.settings.rating_confirm_minutes)
    if burst:
        log.info("ticket %s: star links opened in a burst, asking for a confirmation",
                 ticket.number)
    return _page(request, "confirm" if burst or early else "choose", ticket, contact, token,
                 stars=choice.stars, reason="burst" if burst else "early")


@posted
def link_submit(request: Request, form: FormData) -> Response:
    """POST from the star-link page: record the rating (or the change, or the comment)."""
    token = request.path_params["token"]
    with transaction(request.app.state.engine) as session:
        try:
            choice, ticket, contact = _checked(request, session, token)
        except BadLink as refused:
            return _refusal(request, refused.reason)
        stars = _stars(form, choice.stars)
        if not csrf.valid(request, form.get(csrf.FIELD)):
            return _page(request, "confirm", ticket, contact, token, stars=stars, error="csrf",
                         status_code=400)
        if ratings.is_final(ticket):
            return _page(request, "final", ticket, contact, token)
        if form.get("confirm") == "1":  # a person pressed a button: the rating stands
            if ratings.record(ticket, stars, _comment(form), "email_link"):
                request.app.state.workflow.rating_received(session, ticket)
            how = "confirmed"
        else:  # the page sent itself: a scanner's page does too
            early = ratings.is_early(choice, request.app.state.settings.rating_confirm_minutes)
            if early or ratings.is_burst(session, ticket):
                return _page(request, "confirm", ticket, contact, token, stars=stars,
                             reason="early" if early else "burst")
            ratings.propose(ticket, stars)
            how = "provisional"
        session.add(ticket)
    log.info("ticket %s rated %d by contact %s through a star link (%s)", ticket.number, stars,
             contact.id, how)
    return _page(request, "thanks", ticket, contact, token)


@posted
def ticket_submit(request: Request, form: FormData) -> Response:
    """POST of the "Rate" form on the ticket page, by a contact of the ticket's organization."""
    contact = current_contact(request)
    if contact is None:
        return RedirectResponse("/login", status_code=303)
    number = request.path_params["number"]
    with transaction(request.app.state.engine) as session:
        ticket = ticket_by_number(session, number)
        if ticket is None or ticket.organization_id != contact.organization_id:
            return request.app.state.pages.render(request, "error.html", {"error": "not_found"},
                                                  status_code=404)
        # An expired form or a ticket that cannot take a rating just shows the ticket again.
        if csrf.valid(request, form.get(csrf.FIELD)) and ratings.may_rate(ticket, contact):
            stars = _stars(form, 0)
            if ratings.record(ticket, stars, _comment(form), "web"):
                session.add(ticket)
                request.app.state.workflow.rating_received(session, ticket)
                log.info("ticket %s rated %d by contact %s on the web", number, stars, contact.id)
    return RedirectResponse(f"/tickets/{number}#rating", status_code=303)


def _checked(request: Request, session: Any, token: str) -> tuple[RatingChoice, Ticket, Contact]:
    """The choice a token carries, its ticket and contact, if that contact may rate it now."""
    choice = request.app.state.rating_links.read(token)
    ticket = ticket_by_number(session, choice.ticket_number)
    contact = session.get(Contact, choice.contact_id)
    if (ticket is None or contact is None or not contact.active
            or contact.organization_id != ticket.organization_id):
        raise BadLink("not_found")
    if not ratings.may_rate(ticket, contact):
        raise BadLink("not_rateable")
    return choice, ticket, contact


def _stars(form: FormData, default: int) -> int:
    value = form.get("stars")
    if isinstance(value, str) and value.isdigit() and int(value) in STARS:
        return int(value)
    return default


def _comment(form: FormData) -> str | None:
    value = form.get("comment")
    return value if isinstance(value, str) else None


def _page(request: Request, state: str, ticket: Ticket, contact: Contact, token: str, *,
          stars: int = 0, error: str | None = None, reason: str = "",
          status_code: int = 200) -> Response:
    final_on: datetime | None = None
    given = ticket.rated_at or ticket.pending_rating_at  # a provisional rating counts for it
    if given is not None:
        final_on = given + ratings.FINAL_AFTER
    context = {
        "state": state, "token": token, "stars": stars, "error": error, "reason": reason,
        "ticket_number": ticket.number, "ticket_subject": ticket.subject,
        "rating": ticket.pending_rating or ticket.rating, "comment": ticket.rating_comment,
        "final_on": final_on,
    }
    return request.app.state.pages.render(request, "rating.html", context,
                                          status_code=status_code, lang=contact.language)


def _refusal(request: Request, reason: str) -> Response:
    current_contact(request)
    return link_refusal(request, "rating.html", reason)
