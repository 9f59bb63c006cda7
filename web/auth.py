"""Login and logout of contacts (email + password, argon2, throttled; "remember user")."""

from __future__ import annotations

from urllib.parse import urlencode

from sqlalchemy import bindparam
from sqlmodel import Session, col, select
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from storage.models import Contact, Organization
from storage.passwords import verify_password
from storage.tickets import contact_by_email, unrated_count
from web import csrf
from web.forms import posted

REMEMBER_COOKIE = "remembered_email"
REMEMBER_SECONDS = 180 * 24 * 3600
RATING_REMINDER = "rating_reminder"  # session key: unrated tickets to mention once after login


# Who is signed in: the contact's row and their organization's ticket version, in one query.
# Only an active, verified contact is signed in.
_SIGNED_IN = (select(Contact.__table__, Organization.ticket_version)  # type: ignore[attr-defined]
              .join(Organization, col(Organization.id) == Contact.organization_id)
              .where(col(Contact.id) == bindparam("contact_id"), col(Contact.active),
                     Contact.state == "verified"))


def current_contact(request: Request) -> Contact | None:
    """The signed-in contact, also kept on ``request.state`` for the page templates, with their
    organization's ticket version on ``request.state.ticket_version`` (what the ticket lists
    are cached by, web.fragments).

    Every page asks this first, so it is one Core query (storage.db.LoopReads), not an ORM
    load: the contact is a read-only snapshot (``model_construct`` from the row), attached
    to no database session; a handler that changes the contact loads it (site.language_submit)."""
    contact_id = request.session.get("contact_id")
    contact, version = None, None
    if isinstance(contact_id, int):
        row = request.app.state.loop_reads.first(_SIGNED_IN, {"contact_id": contact_id})
        if row is not None:
            version = row.pop("ticket_version")
            contact = Contact.model_construct(**row)
    if contact is None and contact_id is not None:
        request.session.clear()  # deactivated, rejected or gone meanwhile: signed out
    request.state.contact = contact
    request.state.ticket_version = version
    return contact


def signed_in(request: Request) -> Contact | Response:
    """The signed-in contact, or the way to the login page, which brings the visitor back
    here afterwards."""
    contact = current_contact(request)
    if contact is not None:
        return contact
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/login?{urlencode({'next': here})}", status_code=303)


def safe_next(value: object) -> str:
    """Where to go after logging in: a path of this site only (never ``//host`` or a URL)."""
    if (isinstance(value, str) and value.startswith("/") and not value.startswith("//")
            and "\\" not in value and len(value) < 2000
            and all(ord(c) > 31 and c != "\x7f" for c in value)):
        return value
    return "/tickets"


def login_page(request: Request) -> Response:
    next_path = safe_next(request.query_params.get("next"))
    if current_contact(request) is not None:
        return RedirectResponse(next_path, status_code=303)
    email = request.cookies.get(REMEMBER_COOKIE, "")
    return request.app.state.pages.render(
        request, "login.html", {"email": email, "remember": bool(email), "next": next_path}
    )


@posted
def login_submit(request: Request, form: FormData) -> Response:
    email = str(form.get("email", "")).strip().lower()
    password = str(form.get("password", ""))
    remember = form.get("remember") == "on"
    next_path = safe_next(form.get("next"))
    pages = request.app.state.pages
    throttle = request.app.state.login_throttle
    client = request.client.host if request.client else "unknown"

    def again(error: str, status_code: int) -> Response:
        context = {"email": email, "remember": remember, "error": error, "next": next_path}
        return pages.render(request, "login.html", context, status_code=status_code)

    if not csrf.valid(request, form.get(csrf.FIELD)):
        return again("csrf", 400)
    if throttle.blocked(f"email:{email}", f"ip:{client}"):
        return again("throttled", 429)
    with Session(request.app.state.engine) as session:
        contact = contact_by_email(session, email) if email else None
    # argon2 takes some 100 ms: no database connection is held meanwhile.
    ok = verify_password(contact.password_hash if contact else None, password)
    if not ok or contact is None or not contact.active or contact.state != "verified":
        throttle.failed(f"email:{email}", f"ip:{client}")
        return again("credentials", 401)
    with Session(request.app.state.engine) as session:
        unrated = unrated_count(session, contact.organization_id)
    throttle.succeeded(f"email:{email}")
    request.session.clear()  # a new session on login: no fixation
    request.session["contact_id"] = contact.id
    if unrated:  # DESIGN: at each login, a reminder of the tickets still to rate
        request.session[RATING_REMINDER] = unrated
    response = RedirectResponse(next_path, status_code=303)
    if remember:
        response.set_cookie(REMEMBER_COOKIE, email, max_age=REMEMBER_SECONDS, httponly=True,
                            samesite="lax", secure=request.url.scheme == "https")
    else:
        response.delete_cookie(REMEMBER_COOKIE)
    return response


@posted
def logout(request: Request, form: FormData) -> Response:
    if csrf.valid(request, form.get(csrf.FIELD)):
        request.session.clear()
    return RedirectResponse("/login", status_code=303)
