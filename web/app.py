"""The web application, assembled in one place: routes, middleware, shared state."""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.convertors import Convertor, register_url_convertor
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp

from gateway.links import PasswordLinks
from gateway.settings import Settings
from gateway.uploads import KeptFiles
from gateway.workflow import Workflow
from storage.blobs import BlobStore
from storage.db import LoopReads
from storage.faults import is_unavailable
from web import (
    accounts,
    auth,
    console,
    contacts,
    health,
    metrics,
    new_ticket,
    ratings,
    site,
    tickets,
    verification,
)
from web.api import create_api
from web.fragments import Fragments
from web.headers import SecurityHeaders
from web.known_sessions import ForgetOnWrite, KnownSessions
from web.pages import Brand, Pages
from web.throttle import FORGOT_RULES, LOGIN_RULES, KnownBrowsers, Throttle

log = logging.getLogger("gateway.web")

STATIC = Path(__file__).resolve().parent / "static"


class IdConvertor(Convertor[int]):
    """A ticket number or a row id in a path: at most nine digits, so that a number no column
    can hold is a page that does not exist (404), not a database error."""

    regex = "[0-9]{1,9}"

    def convert(self, value: str) -> int:
        return int(value)

    def to_string(self, value: int) -> str:
        return str(value)


register_url_convertor("id", IdConvertor())


def on_loop(page: Callable[[Request], Response]) -> Callable[[Request], Awaitable[Response]]:
    """A page that asks the database only who is signed in, run on its web process's event
    loop instead of Starlette's thread pool: the hop to a thread and back, and threads taking
    the interpreter lock from each other, cost more than such a page. Who is signed in is
    asked first (``auth.identify``, which never waits for PostgreSQL on the loop); the page
    then renders without touching the database."""

    @functools.wraps(page)
    async def endpoint(request: Request) -> Response:
        await auth.identify(request)
        return page(request)

    return endpoint


def in_pool(page: Callable[[Request], Response]) -> Callable[[Request], Awaitable[Response]]:
    """A page that reads more (a ticket, a file, the contacts), run in the thread pool so that
    a slow query never holds up the other requests of its process; who is signed in is known
    before, from the loop (``auth.identify``: kept between changes on PostgreSQL)."""

    @functools.wraps(page)
    async def endpoint(request: Request) -> Response:
        await auth.identify(request)
        return await run_in_threadpool(page, request)

    return endpoint


async def home(request: Request) -> Response:
    return RedirectResponse("/tickets", status_code=303)


def not_found(request: Request, exc: Exception) -> Response:  # plain def: it reads the database
    auth.current_contact(request)
    return request.app.state.pages.render(request, "error.html", {"error": "not_found"}, 404)


async def server_error(request: Request, exc: Exception) -> Response:
    # Never a stack trace to a user: the details go to the log (uvicorn logs the exception).
    pages = getattr(request.app.state, "pages", None)
    if pages is None:  # the API's (web.api) own handler has answered already
        return Response("Internal error", status_code=500, media_type="text/plain")
    return pages.render(request, "error.html", {"error": "server"}, 500)


async def database_error(request: Request, exc: Exception) -> Response:
    """The database is away (or too slow): 503 with a page that says so, and one log line for
    the whole outage (storage.faults) instead of a traceback per request."""
    if not is_unavailable(exc):
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return await server_error(request, exc)
    response = request.app.state.pages.render(request, "error.html", {"error": "unavailable"},
                                              503)
    response.headers["Retry-After"] = "30"
    return response


class Site(Starlette):
    """The Starlette application with the security headers outside everything else, so that
    the error pages Starlette's outermost middleware makes get them too."""

    https = False  # HSTS too: set from the public URL before the first request

    def build_middleware_stack(self) -> ASGIApp:
        return SecurityHeaders(super().build_middleware_stack(), https=self.https)


@contextlib.asynccontextmanager
async def _lifespan(app: Starlette) -> AsyncIterator[None]:
    """Listen for session changes on the loop that serves (web.known_sessions), and close the
    loop's own database connection at the end (web.server runs without lifespan events:
    gateway.worker does both itself)."""
    app.state.known_sessions.start()
    try:
        yield
    finally:
        await app.state.known_sessions.stop()
        app.state.loop_reads.close()


def create_app(settings: Settings, engine: Engine, workflow: Workflow | None = None) -> Starlette:
    known_sessions = KnownSessions(engine)
    workflow = workflow or Workflow.from_settings(settings)
    blobs = BlobStore(settings.storage_dir)
    app = Site(
        routes=[
            Route("/", home),
            Route("/login", on_loop(auth.login_page), methods=["GET"]),
            Route("/login", auth.login_submit, methods=["POST"]),
            Route("/logout", auth.logout, methods=["POST"]),
            Route("/tickets", tickets.list_page),
            Route("/tickets/new", in_pool(new_ticket.form_page), methods=["GET"]),
            Route("/tickets/new", new_ticket.submit, methods=["POST"]),
            Route("/tickets/{number:id}", in_pool(tickets.detail_page)),
            Route("/tickets/{number:id}/answer", tickets.answer_submit, methods=["POST"]),
            Route("/tickets/{number:id}/files/{file_id:id}", in_pool(tickets.download)),
            Route("/tickets/{number:id}/rating", ratings.ticket_submit, methods=["POST"]),
            Route("/contacts", in_pool(contacts.list_page)),
            Route("/contacts/new", in_pool(contacts.new_page), methods=["GET"]),
            Route("/contacts/new", contacts.new_submit, methods=["POST"]),
            Route("/contacts/{contact_id:id}", in_pool(contacts.edit_page), methods=["GET"]),
            Route("/contacts/{contact_id:id}", contacts.edit_submit, methods=["POST"]),
            Route("/contacts/{contact_id:id}/active", contacts.active_submit,
                  methods=["POST"]),
            Route("/contacts/requests/{request_id:id}", contacts.decide_submit,
                  methods=["POST"]),
            Route("/privacy", on_loop(site.privacy_page)),
            Route("/language", site.language_submit, methods=["POST"]),
            Route("/rate/{token}", ratings.link_page, methods=["GET"]),
            Route("/rate/{token}", ratings.link_submit, methods=["POST"]),
            Route("/verify/{token}", verification.link_page, methods=["GET"]),
            Route("/verify/{token}", verification.link_submit, methods=["POST"]),
            Route("/password/forgot", accounts.forgot_page, methods=["GET"]),
            Route("/password/forgot", accounts.forgot_submit, methods=["POST"]),
            Route("/password/set/{token}", accounts.set_page, methods=["GET"]),
            Route("/password/set/{token}", accounts.set_submit, methods=["POST"]),
            Route("/team", console.home),
            Route("/team/login", console.login_page, methods=["GET"]),
            Route("/team/login", console.login_submit, methods=["POST"]),
            Route("/team/logout", console.logout, methods=["POST"]),
            Route("/team/tickets", console.list_page),
            Route("/team/tickets/{number:id}", console.ticket_page, methods=["GET"]),
            Route("/team/tickets/{number:id}", console.act, methods=["POST"]),
            Route("/team/tickets/{number:id}/files/{file_id:id}", console.download),
            Route("/team/agents", console.agents_page, methods=["GET"]),
            Route("/team/agents", console.agents_submit, methods=["POST"]),
            Route("/healthz", health.healthz),
            Route("/metrics", metrics.metrics_page),
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
            Mount("/api", app=create_api(engine, workflow, blobs,
                                         settings.max_attachment_size), name="api"),
        ],
        middleware=[
            Middleware(metrics.HttpMetrics),
            Middleware(ForgetOnWrite, known=known_sessions),
            Middleware(
                SessionMiddleware,
                secret_key=str(settings.secret_key),
                session_cookie="helpdesk_session",
                # The browser keeps the cookie for a month; whether it still signs anybody in
                # is the server's to say (web_session: idle expiry, logout, revocation).
                max_age=30 * 24 * 3600,
                same_site="lax",
                https_only=settings.public_url.startswith("https://"),
            )
        ],
        exception_handlers={404: not_found, 500: server_error,
                            SQLAlchemyError: database_error},
        lifespan=_lifespan,
    )
    app.https = settings.public_url.startswith("https://")
    app.state.engine = engine
    app.state.loop_reads = LoopReads(engine)
    app.state.known_sessions = known_sessions
    app.state.settings = settings
    app.state.pages = Pages(settings.timezone, Brand(
        company=settings.company_name, logo_url=settings.logo_url,
        privacy_url=settings.privacy_url, support_address=settings.support_address))
    app.state.fragments = Fragments()
    app.state.blobs = blobs
    app.state.kept_files = KeptFiles(str(settings.secret_key))
    app.state.login_throttle = Throttle(engine, "login", LOGIN_RULES)
    app.state.known_browsers = KnownBrowsers(str(settings.secret_key))
    app.state.workflow = workflow
    app.state.rating_links = workflow.rating_links
    app.state.verification_links = workflow.verification_links
    app.state.password_links = PasswordLinks(str(settings.secret_key), settings.public_url,
                                             settings.password_link_hours)
    app.state.forgot_throttle = Throttle(engine, "forgot", FORGOT_RULES)
    app.state.team_throttle = Throttle(engine, "team_login", LOGIN_RULES)
    app.state.known_agent_browsers = KnownBrowsers(str(settings.secret_key),
                                                   "known_agent_browser", "known-agent-browser")
    return app
