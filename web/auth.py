"""Login and logout of contacts (email + password, argon2, throttled; "remember user")."""

from __future__ import annotations

import asyncio
import functools
import logging
from datetime import datetime, timedelta
from urllib.parse import urlencode

from sqlalchemy import bindparam
from sqlmodel import Session, col, select
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from storage import sessions
from storage.faults import describe
from storage.models import Contact, Organization, WebSession, utcnow
from storage.passwords import verify_password
from storage.tickets import contact_by_email, unrated_count
from web import csrf
from web.forms import posted
from web.metrics import LOGIN_FAILURES, THROTTLED
from web.throttle import login_keys, seconds_shown

log = logging.getLogger("gateway.web.auth")

REMEMBER_COOKIE = "remembered_email"
REMEMBER_SECONDS = 180 * 24 * 3600
RATING_REMINDER = "rating_reminder"  # session key: unrated tickets to mention once after login


SESSION_KEY = "sid"  # the cookie session's key for the token of the database session
RENEW_AFTER = timedelta(minutes=10)  # a session in use is renewed at most this often

# Who is signed in: the contact's row, their organization's ticket version and when the session
# expires, in one query. Only an open session of an active, verified contact signs in.
_SIGNED_IN = (select(Contact.__table__, Organization.ticket_version,  # type: ignore[attr-defined]
                     WebSession.expires_at.label("session_expires_at"))  # type: ignore[attr-defined]
              .join(Contact, col(Contact.id) == WebSession.contact_id)
              .join(Organization, col(Organization.id) == Contact.organization_id)
              .where(col(WebSession.id) == bindparam("key"),
                     col(WebSession.revoked_at).is_(None),
                     col(WebSession.expires_at) > bindparam("now"),
                     col(Contact.active), Contact.state == "verified"))


def current_contact(request: Request) -> Contact | None:
    """The signed-in contact, also kept on ``request.state`` for the page templates, with their
    organization's ticket version on ``request.state.ticket_version`` (what the ticket lists
    are cached by, web.fragments).

    The cookie names a session kept in the database (storage.sessions), so that logging out,
    setting a password, a deactivation or ``helpdesk contact signout`` end it everywhere, a
    copied cookie included. Every page asks this first, so it is one Core query
    (storage.db.LoopReads), not an ORM load: the contact is a read-only snapshot
    (``model_construct`` from the row), attached to no database session; a handler that
    changes the contact loads it (site.language_submit). The pages of the event loop have
    asked already (``identify``), and this gives their answer."""
    if getattr(request.state, "identified", False):
        return request.state.contact
    token = request.session.get(SESSION_KEY)
    row, now = None, utcnow()
    if isinstance(token, str):
        row = request.app.state.loop_reads.first(
            _SIGNED_IN, {"key": sessions.key_of(token), "now": now})
    return _signed_in_as(request, token, row, now)


async def identify(request: Request) -> Contact | None:
    """``current_contact`` for a page of the event loop, which never waits there for
    PostgreSQL: the answer is the one this process keeps (web.known_sessions) or is read in
    the thread pool. SQLite's read by key, a look-up in the process's memory map of the file,
    is made on the loop."""
    token = request.session.get(SESSION_KEY)
    row, now = None, utcnow()
    if isinstance(token, str):
        key = sessions.key_of(token)
        known = request.app.state.known_sessions
        row = known.get(key, now)
        if row is None:
            generation, reads = known.generation, request.app.state.loop_reads
            params = {"key": key, "now": now}
            row = (await run_in_threadpool(reads.first, _SIGNED_IN, params) if known.remote
                   else reads.first(_SIGNED_IN, params))
            if row is not None:
                known.put(key, row, generation)
    return _signed_in_as(request, token, row, now)


def _signed_in_as(request: Request, token: object, row: dict | None,
                  now: datetime) -> Contact | None:
    contact, version = None, None
    if row is not None:
        assert isinstance(token, str)
        version = row.pop("ticket_version")
        _renew_if_due(request, sessions.key_of(token), row.pop("session_expires_at"), now)
        contact = Contact.model_construct(**row)
    if contact is None and token is not None:
        request.session.clear()  # ended, expired, or the contact deactivated: signed out
    request.state.contact = contact
    request.state.ticket_version = version
    request.state.identified = True
    return contact


def _renew_if_due(request: Request, key: str, expires_at: datetime, now: datetime) -> None:
    """A session expires after HELPDESK_SESSION_HOURS without use: while it is used, its end
    moves on, written at most every RENEW_AFTER and never by the page's own thread."""
    lifetime = request.app.state.settings.session_lifetime
    if expires_at - now > lifetime - RENEW_AFTER:
        return
    renew = functools.partial(sessions.renew, request.app.state.engine, key, now + lifetime)
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # a page of the thread pool: it may write itself
        renew()
        return
    request.app.state.known_sessions.renewed(key, now + lifetime)
    task = loop.run_in_executor(None, renew)
    _RENEWING.add(task)
    task.add_done_callback(_renewed)


_RENEWING: set[asyncio.Future[None]] = set()


def _renewed(task: asyncio.Future[None]) -> None:
    _RENEWING.discard(task)
    if not task.cancelled() and task.exception() is not None:
        log.warning("a session could not be renewed: %s", describe(task.exception()))


def start_session(request: Request, contact: Contact) -> None:
    """Log the contact in: a new session (no fixation: whatever the cookie held is dropped)."""
    assert contact.id is not None
    request.session.clear()
    request.state.identified = False
    request.session[SESSION_KEY] = sessions.start(
        request.app.state.engine, contact.id, request.app.state.settings.session_lifetime,
        address=client_address(request), user_agent=request.headers.get("user-agent", ""))


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


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
    throttle, known = request.app.state.login_throttle, request.app.state.known_browsers
    browser, browser_contacts = known.read(request.cookies.get(known.COOKIE))

    def again(error: str, status_code: int, wait: float = 0) -> Response:
        context = {"email": email, "remember": remember, "error": error, "next": next_path,
                   "wait": seconds_shown(wait)}
        response = pages.render(request, "login.html", context, status_code=status_code)
        if wait:
            response.headers["Retry-After"] = str(seconds_shown(wait))
        return response

    if not csrf.valid(request, form.get(csrf.FIELD)):
        return again("csrf", 400)
    with Session(request.app.state.engine) as session:
        contact = contact_by_email(session, email) if email else None
    keys = login_keys(browser, browser_contacts, contact.id if contact else None, email,
                      client_address(request))
    wait = throttle.wait(*keys)
    if wait:
        THROTTLED.labels("login").inc()
        log.info("login for %s throttled (%s): %.0f s to wait", email, ", ".join(keys), wait)
        return again("throttled", 429, wait)
    # argon2 takes some 100 ms: no database connection is held meanwhile.
    ok = verify_password(contact.password_hash if contact else None, password)
    if not ok or contact is None or not contact.active or contact.state != "verified":
        throttle.failed(*keys)
        LOGIN_FAILURES.inc()
        return again("credentials", 401)
    with Session(request.app.state.engine) as session:
        unrated = unrated_count(session, contact.organization_id)
    assert contact.id is not None
    throttle.succeeded(f"email:{email}", f"browser:{browser}")
    start_session(request, contact)
    if unrated:  # DESIGN: at each login, a reminder of the tickets still to rate
        request.session[RATING_REMINDER] = unrated
    response = RedirectResponse(next_path, status_code=303)
    response.set_cookie(known.COOKIE, known.with_contact(browser, browser_contacts, contact.id),
                        max_age=known.MAX_AGE, httponly=True, samesite="lax",
                        secure=request.app.https)
    if remember:
        response.set_cookie(REMEMBER_COOKIE, email, max_age=REMEMBER_SECONDS, httponly=True,
                            samesite="lax", secure=request.app.https)
    else:
        response.delete_cookie(REMEMBER_COOKIE)
    return response


@posted
def logout(request: Request, form: FormData) -> Response:
    if csrf.valid(request, form.get(csrf.FIELD)):
        token = request.session.get(SESSION_KEY)
        if isinstance(token, str):
            sessions.end(request.app.state.engine, token)
        request.session.clear()
    return RedirectResponse("/login", status_code=303)
