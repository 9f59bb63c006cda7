"""The open-ticket form ("Abrir ticket", customer guide §2): email (a contact of the organization,
or one added here), application, description, files (picker, drag-and-drop, pasted screenshots)
and the consent to the privacy policy. A field that is wrong sends the form back with everything
else kept (files too); files refused by the rules do not stop the ticket, each is named with
its reason."""

from __future__ import annotations

from sqlmodel import Session, col, select
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from gateway import contacts, customer_requests
from gateway.contacts import ContactForm
from gateway.inbound.prepare import PreparedFile
from storage.db import transaction
from storage.models import Application, Contact
from web import csrf
from web.auth import signed_in
from web.forms import posted
from web.uploads import kept_tokens, received_files

DESCRIPTION_LIMIT = 20000
NEW = "new"  # the contact choice that adds a person


def form_page(request: Request) -> Response:
    contact = signed_in(request)
    if not isinstance(contact, Contact):
        return contact
    return _form(request, contact, {"contact": str(contact.id)})


@posted
def submit(request: Request, form: FormData) -> Response:
    contact = signed_in(request)
    if not isinstance(contact, Contact):
        return contact
    values = {name: str(form.get(name, "")).strip() for name in
              ("contact", "application", "description", "new_name", "new_email")}
    values["description"] = values["description"][:DESCRIPTION_LIMIT]
    values["consent"] = "yes" if form.get("consent") == "yes" else ""
    files = received_files(request, form)
    errors: dict[str, str] = {}
    if not csrf.valid(request, form.get(csrf.FIELD)):
        errors["form"] = "csrf"
    with Session(request.app.state.engine) as session:
        requester = _requester(session, contact, values, errors)
        application = _application(session, values["application"])
    if application is None:
        errors["application"] = "missing"
    if not values["description"]:
        errors["description"] = "missing"
    if not values["consent"]:
        errors["consent"] = "missing"
    if errors:
        return _form(request, contact, values, errors, files, status_code=400)
    with transaction(request.app.state.engine) as session:
        if requester is None:  # a person added in the form
            person = ContactForm.clean(name=values["new_name"], email=values["new_email"],
                                       language=contact.language)
            if contact.is_manager:
                requester = contacts.add(session, contact, person)
            else:
                requester = contacts.propose(session, contact, person)
        ticket = customer_requests.open_ticket(
            session, request.app.state.workflow, submitter=contact, requester=requester,
            application=application, description=values["description"], files=files)
        number, held = ticket.number, ticket.status == "held"
    if held:  # the new person waits for a manager: the ticket is not theirs to see yet
        return _form(request, contact, {"contact": str(contact.id)}, held_for=values["new_name"])
    return RedirectResponse(f"/tickets/{number}?opened=1", status_code=303)


def _requester(session: Session, contact: Contact, values: dict[str, str],
               errors: dict[str, str]) -> Contact | None:
    """The chosen contact (of the submitter's organization), or None when a person is added
    in the form; problems go to ``errors``."""
    if values["contact"] == NEW:
        person = ContactForm.clean(name=values["new_name"], email=values["new_email"])
        found = contacts.problems(session, person).fields
        for field in ("name", "email"):
            if field in found:
                errors[f"new_{field}"] = found[field]
        return None
    chosen = session.get(Contact, int(values["contact"])) if values["contact"].isdigit() \
        and len(values["contact"]) < 10 else None
    if (chosen is None or chosen.organization_id != contact.organization_id
            or not chosen.active or chosen.state != "verified"):
        errors["contact"] = "missing"
        return None
    return chosen


def _application(session: Session, value: str) -> Application | None:
    if not value.isdigit() or len(value) > 9:
        return None
    found = session.get(Application, int(value))
    return found if found is not None and found.active else None


def _form(request: Request, contact: Contact, values: dict[str, str],
          errors: dict[str, str] | None = None, files: list[PreparedFile] | None = None, *,
          held_for: str = "", status_code: int = 200) -> Response:
    with Session(request.app.state.engine) as session:
        people = session.exec(select(Contact).where(
            Contact.organization_id == contact.organization_id, col(Contact.active),
            Contact.state == "verified").order_by(col(Contact.name))).all()
        applications = session.exec(select(Application).where(col(Application.active))
                                    .order_by(col(Application.name))).all()
    files = files or []
    context = {
        "values": values, "errors": errors or {}, "people": people,
        "applications": applications, "kept": kept_tokens(request, files),
        "refused": [f for f in files if not f.accepted], "held_for": held_for,
        "max_size": request.app.state.settings.max_attachment_size,
    }
    return request.app.state.pages.render(request, "new_ticket.html", context,
                                          status_code=status_code)
