"""The team console at /team: a thin, server-rendered way in for agents, on the same workflow
and rules as the API (gateway.team).

Its own login and cookie (``helpdesk_team``, path /team, SameSite=Strict), server-side sessions
(``agent_session``: logout and deactivation end them) and throttle, as the customer area's.
Views New / Mine / Unassigned / Awaiting customer / All with counts; a ticket's page with its
thread (internal notes marked), files, history and mails, and forms to answer (with files),
note, change status, assign and prioritise. Each form carries the ticket's version: if another
agent changed the ticket while it was open, nothing is done and the page says so, with the
ticket as it is now and the text typed kept. Admins manage agents.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlmodel import Session, col, select
from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response

from gateway import team
from gateway.accounts import guessable_for
from gateway.inbound.sender_auth import Verdict
from gateway.sla_clocks import Plans, ahead, ticket_clocks
from gateway.team import Actor, StaleTicket, TeamError
from gateway.uploads import MAX_FILES, Upload, check_and_store
from gateway.workflow import TRANSITIONS, TransitionError
from storage import sessions
from storage.agents import add_agent, agent_by_email, set_active
from storage.db import transaction
from storage.directory import DirectoryError
from storage.models import (
    AGENT_ROLES,
    PRIORITIES,
    Agent,
    AgentSession,
    Application,
    InboundMessage,
    aware,
    utcnow,
)
from storage.passwords import verify_password
from storage.team import TicketFilter, count_tickets, find_tickets, ticket_record
from web import csrf
from web.auth import RENEW_AFTER, client_address
from web.forms import posted
from web.metrics import LOGIN_FAILURES, THROTTLED
from web.throttle import login_keys, seconds_shown
from web.tickets import note_code

COOKIE = "helpdesk_team"
PATH = "/team"
OPEN = ("new", "qualified", "in_progress", "pending", "planned", "awaiting_customer")
VIEWS: dict[str, dict[str, Any]] = {
    "new": {"statuses": ("new",)},
    "mine": {"statuses": OPEN},  # and assigned to the agent looking
    "unassigned": {"statuses": OPEN, "assignee": "none"},
    "awaiting": {"statuses": ("awaiting_customer",)},
    "all": {},
}
PAGE = 50


# ---------------------------------------------------------------------- who is signed in


def current_agent(request: Request) -> Agent | None:
    """The agent whose console session the cookie names (active, session open), or None."""
    token = request.cookies.get(COOKIE)
    agent = None
    if token:
        key, now = sessions.key_of(token), utcnow()
        engine = request.app.state.engine
        with Session(engine) as session:
            found = session.exec(
                select(Agent, AgentSession.expires_at)
                .join(AgentSession, col(AgentSession.agent_id) == Agent.id)
                .where(AgentSession.id == key, col(AgentSession.revoked_at).is_(None),
                       col(AgentSession.expires_at) > now, col(Agent.active))).first()
        if found is not None:
            agent, expires_at = found
            lifetime = request.app.state.settings.session_lifetime
            if aware(expires_at) - now <= lifetime - RENEW_AFTER:
                sessions.renew(engine, key, now + lifetime, AgentSession)
    request.state.agent = agent
    return agent


def _signed_in(request: Request) -> Agent | Response:
    agent = current_agent(request)
    if agent is None:
        return RedirectResponse(f"{PATH}/login", status_code=303)
    return agent


def _render(request: Request, name: str, agent: Agent | None, context: dict[str, Any],
            status_code: int = 200) -> Response:
    return request.app.state.pages.render(
        request, f"team/{name}", {"agent": agent, **context}, status_code=status_code,
        lang=agent.language if agent is not None else None)


# ---------------------------------------------------------------------- login


def login_page(request: Request) -> Response:
    if current_agent(request) is not None:
        return RedirectResponse(f"{PATH}/tickets", status_code=303)
    return _render(request, "login.html", None, {"email": ""})


@posted
def login_submit(request: Request, form: FormData) -> Response:
    email = str(form.get("email", "")).strip().lower()
    password = str(form.get("password", ""))
    throttle, known = request.app.state.team_throttle, request.app.state.known_agent_browsers
    browser, browser_agents = known.read(request.cookies.get(known.COOKIE))

    def again(error: str, status_code: int, wait: float = 0) -> Response:
        response = _render(request, "login.html", None,
                           {"email": email, "error": error, "wait": seconds_shown(wait)},
                           status_code)
        if wait:
            response.headers["Retry-After"] = str(seconds_shown(wait))
        return response

    if not csrf.valid(request, form.get(csrf.FIELD)):
        return again("csrf", 400)
    with Session(request.app.state.engine) as session:
        agent = agent_by_email(session, email) if email else None
    keys = login_keys(browser, browser_agents, agent.id if agent else None, email,
                      client_address(request))
    wait = throttle.wait(*keys)
    if wait:
        THROTTLED.labels("team_login").inc()
        return again("throttled", 429, wait)
    if not verify_password(agent.password_hash if agent else None, password) \
            or agent is None or not agent.active:
        throttle.failed(*keys)
        LOGIN_FAILURES.inc()
        return again("credentials", 401)
    throttle.succeeded(f"email:{email}", f"browser:{browser}")
    assert agent.id is not None
    token = sessions.start(request.app.state.engine, agent.id,
                           request.app.state.settings.session_lifetime,
                           address=client_address(request),
                           user_agent=request.headers.get("user-agent", ""), kind=AgentSession)
    response = RedirectResponse(f"{PATH}/tickets", status_code=303)
    response.set_cookie(COOKIE, token, path=PATH, httponly=True, samesite="strict",
                        secure=request.app.https)
    response.set_cookie(known.COOKIE, known.with_contact(browser, browser_agents, agent.id),
                        max_age=known.MAX_AGE, path=PATH, httponly=True, samesite="strict",
                        secure=request.app.https)
    return response


@posted
def logout(request: Request, form: FormData) -> Response:
    token = request.cookies.get(COOKIE)
    if csrf.valid(request, form.get(csrf.FIELD)) and token:
        sessions.end(request.app.state.engine, token, AgentSession)
    response = RedirectResponse(f"{PATH}/login", status_code=303)
    response.delete_cookie(COOKIE, path=PATH)
    return response


# ---------------------------------------------------------------------- tickets


def home(request: Request) -> Response:
    return RedirectResponse(f"{PATH}/tickets", status_code=303)


def _filter(view: str, agent: Agent, text: str = "") -> TicketFilter:
    options = dict(VIEWS[view])
    if view == "mine":
        options["assignee"] = agent.email
    return TicketFilter(text=text, **options)


def list_page(request: Request) -> Response:
    agent = _signed_in(request)
    if not isinstance(agent, Agent):
        return agent
    view = request.query_params.get("view", "new")
    if view not in VIEWS:
        view = "new"
    text = request.query_params.get("q", "")[:200]
    sort = "due" if request.query_params.get("sort") == "due" else "updated"
    with Session(request.app.state.engine) as session:
        counts = {name: count_tickets(session, _filter(name, agent)) for name in VIEWS}
        found = find_tickets(session, _filter(view, agent, text), limit=PAGE, sort=sort)
        assignees = {a.id: a for a in session.exec(select(Agent))}
    return _render(request, "tickets.html", agent, {
        "view": view, "views": list(VIEWS), "counts": counts, "found": found, "q": text,
        "sort": sort,
        "assignees": assignees})


def ticket_page(request: Request) -> Response:
    agent = _signed_in(request)
    if not isinstance(agent, Agent):
        return agent
    return _ticket(request, agent, request.path_params["number"])


def _ticket(request: Request, agent: Agent, number: int, *, notice: str | None = None,
            error: str | None = None, typed: dict[str, str] | None = None,
            status_code: int = 200) -> Response:
    with Session(request.app.state.engine) as session:
        record = ticket_record(session, number)
        if record is None:
            return _render(request, "error.html", agent, {"error": "not_found"}, 404)
        agents = list(session.exec(select(Agent).where(col(Agent.active))
                                   .order_by(col(Agent.name))))
        applications = list(session.exec(select(Application).where(col(Application.active))
                                         .order_by(col(Application.name))))
        everyone = {a.id: a for a in session.exec(select(Agent))}
        plans, now = Plans(session), utcnow()
        sla = ticket_clocks(session, record.ticket, plans, now)
        plan = plans.get_for(record.ticket, session) if sla else None
    return _render(request, "ticket.html", agent, {
        "sla": sla, "plan": plan, "note_code": note_code,
        "senders": {message_id: _sender(row) for message_id, row in record.inbound.items()
                    if row.sender_auth or row.released_by},
        "ahead": {clock.target: ahead(clock, plan, now) for clock in sla},
        "record": record, "ticket": record.ticket, "agents": agents,
        "everyone": everyone, "applications": applications, "priorities": PRIORITIES,
        "next_statuses": sorted(TRANSITIONS.get(record.ticket.status, ())),
        "notice": notice, "error": error, "typed": typed or {}}, status_code)


@dataclass(frozen=True)
class _SenderShown:
    authenticated: bool | None
    summary: str
    released_by: str | None


def _sender(row: InboundMessage) -> _SenderShown:
    """A mail's sender authentication as the ticket page shows it (gateway.inbound.sender_auth)."""
    verdict = Verdict.from_json(row.sender_auth)
    return _SenderShown(row.authenticated, verdict.summary() if verdict else "",
                        row.released_by)


def download(request: Request) -> Response:
    agent = _signed_in(request)
    if not isinstance(agent, Agent):
        return agent
    with Session(request.app.state.engine) as session:
        record = ticket_record(session, request.path_params["number"])
    item = next((f for f in record.attachments if f.id == request.path_params["file_id"]),
                None) if record else None
    if item is None or not item.accepted or not item.storage_key:
        return _render(request, "error.html", agent, {"error": "not_found"}, 404)
    path = request.app.state.blobs.path(item.storage_key)
    if not path.exists():
        return _render(request, "error.html", agent, {"error": "not_found"}, 404)
    return FileResponse(path, media_type=item.content_type, filename=item.filename,
                        content_disposition_type="attachment",
                        headers={"X-Content-Type-Options": "nosniff",
                                 "Content-Security-Policy": "default-src 'none'; sandbox"})


@posted
def act(request: Request, form: FormData) -> Response:
    """One of the ticket page's forms: ``action`` says which (status, reply, note, update)."""
    agent = _signed_in(request)
    if not isinstance(agent, Agent):
        return agent
    number = request.path_params["number"]
    action = str(form.get("action", ""))
    typed = {name: str(form.get(name, "")) for name in ("text", "note", "request")}
    if not csrf.valid(request, form.get(csrf.FIELD)):
        return _ticket(request, agent, number, error="csrf", typed=typed, status_code=400)
    version = str(form.get("version", ""))
    files = []
    if action == "reply":
        limit = request.app.state.settings.max_attachment_size
        files = check_and_store(request.app.state.blobs, [
            Upload(item.filename or "", item.file.read(limit + 1))
            for item in form.getlist("files")[:MAX_FILES] if isinstance(item, UploadFile)],
            limit)
    actor = Actor(agent)
    workflow = request.app.state.workflow
    try:
        with transaction(request.app.state.engine) as session:
            ticket = team.ticket_for_change(session, number)
            if ticket is None:
                return _render(request, "error.html", agent, {"error": "not_found"}, 404)
            team.expect_version(ticket, int(version) if version.isdigit() else -1)
            if action == "status":
                planned = str(form.get("planned_for", ""))
                team.move(session, workflow, ticket, actor, str(form.get("status", "")),
                          note=typed["note"], request=typed["request"] or None,
                          planned_for=date.fromisoformat(planned) if planned else None)
            elif action == "reply":
                team.reply(session, workflow, ticket, actor, typed["text"], files)
            elif action == "note":
                team.note(session, ticket, actor, typed["text"])
            elif action == "update":
                assignee = str(form.get("assignee", ""))
                application = str(form.get("application", ""))
                team.update(session, ticket, actor,
                            priority=str(form.get("priority", "")) or None,
                            assignee=assignee or None, application=application or None)
            else:
                raise TeamError(f"unknown action {action!r}")
    except StaleTicket:
        return _ticket(request, agent, number, notice="stale", typed=typed, status_code=409)
    except (TransitionError, TeamError, ValueError) as exc:
        return _ticket(request, agent, number, error=str(exc), typed=typed, status_code=422)
    return RedirectResponse(f"{PATH}/tickets/{number}#{action}", status_code=303)


# ---------------------------------------------------------------------- admins: agents


def agents_page(request: Request) -> Response:
    agent = _signed_in(request)
    if not isinstance(agent, Agent):
        return agent
    if agent.role != "admin":
        return _render(request, "error.html", agent, {"error": "not_found"}, 404)
    return _agents(request, agent)


def _agents(request: Request, agent: Agent, error: str | None = None,
            status_code: int = 200) -> Response:
    with Session(request.app.state.engine) as session:
        everyone = list(session.exec(select(Agent).order_by(col(Agent.name))))
    return _render(request, "agents.html", agent, {"everyone": everyone, "roles": AGENT_ROLES,
                                                   "error": error}, status_code)


@posted
def agents_submit(request: Request, form: FormData) -> Response:
    agent = _signed_in(request)
    if not isinstance(agent, Agent):
        return agent
    if agent.role != "admin":
        return _render(request, "error.html", agent, {"error": "not_found"}, 404)
    if not csrf.valid(request, form.get(csrf.FIELD)):
        return _agents(request, agent, "csrf", 400)
    engine = request.app.state.engine
    try:
        if form.get("action") == "add":
            name, email = str(form.get("name", "")), str(form.get("email", ""))
            password = str(form.get("password", "")) or None
            if password and guessable_for(password, name, email):
                raise DirectoryError("password: too easy to guess; use a longer phrase of "
                                     "unrelated words")
            add_agent(engine, name=name, email=email, role=str(form.get("role", "agent")),
                      language=str(form.get("language", "es")), password=password)
        else:
            email = str(form.get("email", ""))
            if email.strip().lower() == agent.email:
                raise DirectoryError("you cannot deactivate yourself")
            set_active(engine, email, form.get("action") == "activate")
    except DirectoryError as exc:
        return _agents(request, agent, str(exc), 422)
    return RedirectResponse(f"{PATH}/agents", status_code=303)
