"""The contacts page ("Gestionar contactos", customer guide §5): managers list, add, edit,
deactivate and reactivate their organization's contacts and decide the pending verification
requests; everybody else sees their colleagues, read-only."""

from __future__ import annotations

from sqlmodel import Session
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from gateway import contacts, verification
from gateway.contacts import TYPES, ContactError, ContactForm
from gateway.verification import VerificationError
from storage.contacts import contact_of, contacts_of, pending_requests, request_of
from storage.db import transaction
from storage.models import Contact
from web import csrf
from web.auth import signed_in
from web.forms import posted


def list_page(request: Request) -> Response:
    contact = signed_in(request)
    if not isinstance(contact, Contact):
        return contact
    return _list(request, contact)


def _list(request: Request, contact: Contact, *, error: str | None = None,
          status_code: int = 200) -> Response:
    with Session(request.app.state.engine) as session:
        people = contacts_of(session, contact.organization_id)
        pending = pending_requests(session, contact.organization_id) \
            if contact.is_manager else []
    if not contact.is_manager:  # colleagues see who is who, not who was deactivated
        people = [p for p in people if p.active]
    done = request.query_params.get("done", "")
    return request.app.state.pages.render(
        request, "contacts.html",
        {"people": people, "pending": pending, "manager": contact.is_manager,
         "done": done if done in DONE else "", "error": error}, status_code=status_code)


DONE = ("added", "changed", "deactivated", "reactivated", "approved", "rejected")


def new_page(request: Request) -> Response:
    manager = _manager(request)
    if not isinstance(manager, Contact):
        return manager
    return _form(request, None, ContactForm(name="", email="", language=manager.language))


@posted
def new_submit(request: Request, form: FormData) -> Response:
    manager = _manager(request)
    if not isinstance(manager, Contact):
        return manager
    values = _values(form)
    with transaction(request.app.state.engine) as session:
        found = _problems(request, session, form, values, None)
        if found:
            return _form(request, None, values, found, status_code=400)
        contacts.add(session, manager, values)
    return RedirectResponse("/contacts?done=added", status_code=303)


def edit_page(request: Request) -> Response:
    manager = _manager(request)
    if not isinstance(manager, Contact):
        return manager
    with Session(request.app.state.engine) as session:
        person = _person(request, session, manager)
    if person is None:
        return _not_found(request)
    values = ContactForm(name=person.name, email=person.email, role=person.role,
                         phone=person.phone, types=tuple(filter(None, person.types.split(","))),
                         language=person.language, is_manager=person.is_manager)
    return _form(request, person, values)


@posted
def edit_submit(request: Request, form: FormData) -> Response:
    manager = _manager(request)
    if not isinstance(manager, Contact):
        return manager
    values = _values(form)
    with transaction(request.app.state.engine) as session:
        person = _person(request, session, manager)
        if person is None:
            return _not_found(request)
        found = _problems(request, session, form, values, person)
        if found:
            return _form(request, person, values, found, status_code=400)
        try:
            contacts.edit(session, manager, person, values)
        except ContactError:
            return _form(request, person, values, {"is_manager": "self"}, status_code=400)
    return RedirectResponse("/contacts?done=changed", status_code=303)


@posted
def active_submit(request: Request, form: FormData) -> Response:
    """Deactivate or reactivate a contact (button on the list)."""
    manager = _manager_with_token(request, form)
    if not isinstance(manager, Contact):
        return manager
    active = form.get("active") == "1"
    with transaction(request.app.state.engine) as session:
        person = _person(request, session, manager)
        if person is None:
            return _not_found(request)
        try:
            contacts.set_active(session, manager, person, active)
        except ContactError:
            return _list(request, manager, error="self", status_code=400)
    return RedirectResponse(f"/contacts?done={'reactivated' if active else 'deactivated'}",
                            status_code=303)


@posted
def decide_submit(request: Request, form: FormData) -> Response:
    """Approve or reject a pending person from the page: the same as the mailed links."""
    manager = _manager_with_token(request, form)
    if not isinstance(manager, Contact):
        return manager
    approve = form.get("decision") == "approve"
    request_id = request.path_params["request_id"]
    with transaction(request.app.state.engine) as session:
        pending = request_of(session, manager.organization_id, request_id)
        if pending is None or not verification.may_decide(manager, pending):
            return _not_found(request)
        try:
            verification.decide(session, request.app.state.workflow, pending, approve=approve,
                                actor=manager.email)
        except VerificationError:  # decided meanwhile, by a link or another manager
            return RedirectResponse("/contacts", status_code=303)
    return RedirectResponse(f"/contacts?done={'approved' if approve else 'rejected'}",
                            status_code=303)


def _manager(request: Request) -> Contact | Response:
    """The signed-in contact if a manager; others get the page's answer for a missing page."""
    contact = signed_in(request)
    if not isinstance(contact, Contact):
        return contact
    if not contact.is_manager:
        return _not_found(request)
    return contact


def _manager_with_token(request: Request, form: FormData) -> Contact | Response:
    """The manager of a list button's post, if its CSRF token is right."""
    manager = _manager(request)
    if isinstance(manager, Contact) and not csrf.valid(request, form.get(csrf.FIELD)):
        return _list(request, manager, error="csrf", status_code=400)
    return manager


def _person(request: Request, session: Session, manager: Contact) -> Contact | None:
    person = contact_of(session, manager.organization_id, request.path_params["contact_id"])
    return person if person is not None and person.state == "verified" else None


def _values(form: FormData) -> ContactForm:
    def text(name: str) -> str:
        value = form.get(name, "")
        return value if isinstance(value, str) else ""

    return ContactForm.clean(
        name=text("name"), email=text("email"), role=text("role"), phone=text("phone"),
        types=[t for t in form.getlist("types") if isinstance(t, str)],
        language=text("language") or "es", is_manager=form.get("is_manager") == "1")


def _problems(request: Request, session: Session, form: FormData, values: ContactForm,
              person: Contact | None) -> dict[str, str]:
    found = dict(contacts.problems(session, values, person).fields)
    if not csrf.valid(request, form.get(csrf.FIELD)):
        found["form"] = "csrf"
    return found


def _form(request: Request, person: Contact | None, values: ContactForm,
          errors: dict[str, str] | None = None, *, status_code: int = 200) -> Response:
    return request.app.state.pages.render(
        request, "contact_form.html",
        {"person": person, "values": values, "errors": errors or {}, "types": TYPES},
        status_code=status_code)


def _not_found(request: Request) -> Response:
    return request.app.state.pages.render(request, "error.html", {"error": "not_found"},
                                          status_code=404)
