"""Pages every visitor may open: the privacy notice the forms link to, and the language switch."""

from __future__ import annotations

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from gateway.i18n import LANGUAGES
from storage.db import transaction
from storage.models import Contact
from web import csrf
from web.auth import current_contact, safe_next
from web.forms import posted
from web.pages import LANGUAGE_COOKIE

YEAR = 365 * 24 * 3600


def privacy_page(request: Request) -> Response:
    """The built-in privacy notice (HELPDESK_PRIVACY_URL points elsewhere to replace it)."""
    current_contact(request)
    return request.app.state.pages.render(request, "privacy.html")


@posted
def language_submit(request: Request, form: FormData) -> Response:
    """Pages (and, for a signed-in contact, mails too) in the language chosen; back to the page
    the switch was pressed on."""
    back = RedirectResponse(safe_next(form.get("next")), status_code=303)
    chosen = form.get("lang")
    if chosen not in LANGUAGES or not csrf.valid(request, form.get(csrf.FIELD)):
        return back
    contact = current_contact(request)
    if contact is not None:  # the contact's own language: their pages and their mails
        with transaction(request.app.state.engine) as session:
            stored = session.get(Contact, contact.id)
            if stored is not None:
                stored.language = str(chosen)
                session.add(stored)
    back.set_cookie(LANGUAGE_COOKIE, str(chosen), max_age=YEAR, httponly=True, samesite="lax",
                    secure=request.app.https)
    return back
