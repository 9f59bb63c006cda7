"""Page rendering: a Jinja2 environment per language, the visitor's language chosen per request."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jinja2 import Environment
from starlette.requests import Request
from starlette.responses import HTMLResponse

from gateway.i18n import LANGUAGES, ROOT, environment, pick_language
from web import csrf

WEB_TEMPLATES = Path(__file__).resolve().parent / "templates"
# Status labels are shared with the mails, so a status reads the same everywhere.
EMAIL_TEMPLATES = ROOT / "templates" / "email"


class Pages:
    def __init__(self) -> None:
        self._envs: dict[str, Environment] = {
            lang: environment([WEB_TEMPLATES, EMAIL_TEMPLATES], lang) for lang in LANGUAGES
        }

    def render(
        self, request: Request, name: str, context: dict[str, Any] | None = None,
        status_code: int = 200,
    ) -> HTMLResponse:
        lang = language_of(request)
        contact = getattr(request.state, "contact", None)
        page = self._envs[lang].get_template(name).render(
            request=request, contact=contact, csrf_token=csrf.token(request), **(context or {})
        )
        return HTMLResponse(page, status_code=status_code,
                            headers={"Content-Language": lang, "Cache-Control": "no-store"})


def language_of(request: Request) -> str:
    """The logged-in contact's language; else the browser's first known one; else Spanish."""
    contact = getattr(request.state, "contact", None)
    if contact is not None:
        return pick_language(contact.language)
    for part in request.headers.get("accept-language", "").split(","):
        tag = part.split(";")[0].strip().lower()[:2]
        if tag in LANGUAGES:
            return tag
    return pick_language(None)
