"""The page of a manager's approve / reject link for an unknown sender of their organization.

Opening the link (GET or HEAD, what mail scanners do) decides nothing: the page shows who wrote,
what, and the decision the link is for; the manager confirms it with a button (POST, CSRF).
"""

from __future__ import annotations

import logging
from typing import Any

from sqlmodel import Session
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response

from gateway import verification
from gateway.links import BadLink, VerificationChoice
from storage.db import transaction
from storage.models import Contact, Organization, Ticket, VerificationRequest
from web import csrf
from web.auth import current_contact
from web.forms import posted
from web.pages import link_refusal

log = logging.getLogger("gateway.web.verification")

def link_page(request: Request) -> Response:
    current_contact(request)
    token = request.path_params["token"]
    with Session(request.app.state.engine) as session:  # reading only: a GET decides nothing
        try:
            choice, pending, manager = _checked(request, session, token)
        except BadLink as refused:
            return link_refusal(request, "verification.html", refused.reason)
        state = "confirm" if pending.state == "pending" else "decided"
        return _page(request, session, state, choice, pending, manager, token)


@posted
def link_submit(request: Request, form: FormData) -> Response:
    current_contact(request)
    token = request.path_params["token"]
    with transaction(request.app.state.engine) as session:
        try:
            choice, pending, manager = _checked(request, session, token)
        except BadLink as refused:
            return link_refusal(request, "verification.html", refused.reason)
        if pending.state != "pending":
            return _page(request, session, "decided", choice, pending, manager, token)
        if not csrf.valid(request, form.get(csrf.FIELD)):
            return _page(request, session, "confirm", choice, pending, manager, token,
                         error="csrf", status_code=400)
        verification.decide(session, request.app.state.workflow, pending,
                            approve=choice.decision == "approve", actor=manager.email)
        session.flush()
        return _page(request, session, "done", choice, pending, manager, token)


def _checked(request: Request, session: Session,
             token: str) -> tuple[VerificationChoice, VerificationRequest, Contact]:
    choice = request.app.state.verification_links.read(token)
    pending = session.get(VerificationRequest, choice.request_id)
    manager = session.get(Contact, choice.manager_id)
    if pending is None or manager is None or not verification.may_decide(manager, pending):
        raise BadLink("not_found")
    return choice, pending, manager


def _page(request: Request, session: Session, state: str, choice: VerificationChoice,
          pending: VerificationRequest, manager: Contact, token: str, *,
          error: str | None = None, status_code: int = 200) -> Response:
    sender = session.get(Contact, pending.contact_id)
    ticket = session.get(Ticket, pending.ticket_id) if pending.ticket_id else None
    organization = session.get(Organization, pending.organization_id)
    context: dict[str, Any] = {
        "state": state, "token": token, "decision": choice.decision, "error": error,
        "sender_name": sender.name if sender else "",
        "sender_email": sender.email if sender else "",
        "ticket_subject": ticket.subject if ticket else "",
        "organization_name": organization.name if organization else "",
        "request_state": pending.state, "decided_by": pending.decided_by,
        "decided_at": pending.decided_at,
    }
    return request.app.state.pages.render(request, "verification.html", context,
                                          status_code=status_code, lang=manager.language)

