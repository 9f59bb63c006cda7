"""Page rendering: a Jinja2 environment per language, the visitor's language chosen per request."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from jinja2 import Environment
from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import HTMLResponse

from gateway.i18n import LANGUAGES, ROOT, environment, pick_language
from storage.models import STATUS_GROUPS
from web import csrf

WEB_TEMPLATES = Path(__file__).resolve().parent / "templates"
# Status labels are shared with the mails, so a status reads the same everywhere.
EMAIL_TEMPLATES = ROOT / "templates" / "email"


LANGUAGE_COOKIE = "lang"


@dataclass(frozen=True)
class Brand:
    """Who the customer area belongs to, as every page shows it (settings)."""

    company: str = "Soporte"
    logo_url: str = "/static/logo.svg"
    privacy_url: str = "/privacy"
    support_address: str = "soporte@example.com"


class Pages:
    def __init__(self, timezone: str = "Europe/Madrid", brand: Brand = Brand()) -> None:
        zone = ZoneInfo(timezone)
        self._envs: dict[str, Environment] = {}
        for lang in LANGUAGES:
            env = environment([WEB_TEMPLATES, EMAIL_TEMPLATES], lang)
            env.filters["local"] = lambda moment, zone=zone: _local(moment, zone)
            env.filters["filesize"] = lambda size, lang=lang: filesize(size, lang)
            env.filters["status_group"] = lambda status: STATUS_GROUPS.get(status, "open")
            env.globals["brand"] = brand
            # Status words are looked up for every row of a list: worked out once here, from
            # the same macro the mails use, instead of a macro call per row.
            labels = env.get_template("_labels.j2").module
            env.globals["status_names"] = {status: str(labels.status_label(status))
                                           for status in STATUS_GROUPS}
            self._envs[lang] = env

    def render(
        self, request: Request, name: str, context: dict[str, Any] | None = None,
        status_code: int = 200, lang: str | None = None,
    ) -> HTMLResponse:
        """Render a page in ``lang`` if given (say, the language of a star link's contact)."""
        lang = pick_language(lang) if lang else language_of(request)
        contact = getattr(request.state, "contact", None)
        path, query = request.scope["path"], request.scope["query_string"]
        page = self._envs[lang].get_template(name).render(
            request=request, contact=contact, csrf_token=csrf.token(request),
            here=f"{path}?{query.decode('latin-1')}" if query else path,
            section=section_of(path), **(context or {})
        )
        return HTMLResponse(page, status_code=status_code,
                            headers={"Content-Language": lang, "Cache-Control": "no-store"})

    def fragment(self, name: str, lang: str, context: dict[str, Any]) -> Markup:
        """A part of a page, rendered on its own from ``context`` alone (web.fragments)."""
        return Markup(self._envs[lang].get_template(name).render(**context))  # noqa: S704 (autoescaped template)


def section_of(path: str) -> str:
    """The part of the site a path belongs to, for the main menu's current item."""
    if path == "/tickets/new":
        return "new_ticket"
    if path == "/tickets" or path.startswith("/tickets/"):
        return "tickets"
    if path.startswith("/contacts"):
        return "contacts"
    return ""


# The HTTP status of a signed link we cannot use, by reason (gateway.links.BadLink): a broken
# link is a bad request, one for something that is not there 404, an outdated one gone.
LINK_STATUS = {"invalid": 400, "not_found": 404, "not_rateable": 409, "expired": 410,
               "used": 410}


def link_refusal(request: Request, template: str, reason: str) -> HTMLResponse:
    """The page of a signed link we cannot use: its template in state "refused", the reason."""
    return request.app.state.pages.render(request, template,
                                          {"state": "refused", "reason": reason},
                                          status_code=LINK_STATUS.get(reason, 400))


def _local(moment: datetime, zone: ZoneInfo) -> str:
    """A stored UTC time as the customer reads it: day/month/year and hour in their zone."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(zone).strftime("%d/%m/%Y %H:%M")


def filesize(size: int, lang: str = "es") -> str:
    """A size as people read it: "512 bytes", "12 KB", "1,5 MB" (never "0.0 KB")."""
    if size < 1024:
        return f"{size} bytes"
    for unit, scale in (("KB", 1024), ("MB", 1024**2), ("GB", 1024**3)):
        value = size / scale
        if value < 1024 or unit == "GB":
            shown = f"{value:.0f}" if value >= 10 else f"{value:.1f}"
            return f"{shown.replace('.', ',') if lang == 'es' else shown} {unit}"
    raise AssertionError("unreachable")


def language_of(request: Request) -> str:
    """The logged-in contact's language; else the one chosen with the switch; else the
    browser's first known one; else Spanish."""
    contact = getattr(request.state, "contact", None)
    if contact is not None:
        return pick_language(contact.language)
    chosen = request.cookies.get(LANGUAGE_COOKIE)
    if chosen in LANGUAGES:
        return chosen
    for part in request.headers.get("accept-language", "").split(","):
        tag = part.split(";")[0].strip().lower()[:2]
        if tag in LANGUAGES:
            return tag
    return pick_language(None)
