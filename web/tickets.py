"""Ticket lists (Open / Completed / To rate) and the ticket page, for the contact's organization."""

from __future__ import annotations

from sqlmodel import Session, col, select
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from gateway.ratings import RATEABLE_STATUSES, is_final
from storage.models import Attachment, Message, StatusChange
from storage.tickets import ticket_by_number, tickets_of_organization
from web.auth import RATING_REMINDER, current_contact

GROUPS = ("open", "completed", "to_rate")


def list_page(request: Request) -> Response:
    contact = current_contact(request)
    if contact is None:
        return RedirectResponse("/login", status_code=303)
    group = request.query_params.get("group", "open")
    if group not in GROUPS:
        group = "open"
    with Session(request.app.state.engine) as session:
        tickets = tickets_of_organization(session, contact.organization_id, group)
    unrated = request.session.pop(RATING_REMINDER, 0)
    return request.app.state.pages.render(
        request, "tickets.html",
        {"tickets": tickets, "group": group, "groups": GROUPS, "unrated": unrated},
    )


def detail_page(request: Request) -> Response:
    contact = current_contact(request)
    if contact is None:
        return RedirectResponse("/login", status_code=303)
    pages = request.app.state.pages
    with Session(request.app.state.engine) as session:
        ticket = ticket_by_number(session, request.path_params["number"])
        # Another organization's ticket is answered exactly like a missing one.
        if ticket is None or ticket.organization_id != contact.organization_id:
            return pages.render(request, "error.html", {"error": "not_found"}, status_code=404)
        messages = session.exec(
            select(Message).where(Message.ticket_id == ticket.id).order_by(col(Message.id))
        ).all()
        files = session.exec(
            select(Attachment).where(Attachment.ticket_id == ticket.id).order_by(col(Attachment.id))
        ).all()
        history = session.exec(
            select(StatusChange).where(StatusChange.ticket_id == ticket.id)
            .order_by(col(StatusChange.id))
        ).all()
    return pages.render(
        request, "ticket.html",
        {"ticket": ticket, "messages": messages, "files": files, "history": history,
         "rateable": ticket.status in RATEABLE_STATUSES, "rating_final": is_final(ticket)},
    )
