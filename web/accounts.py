"""Forgotten password (client code + CIF) and the set-password page of the mailed link."""

from __future__ import annotations

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response

from gateway import accounts
from gateway.links import BadLink
from storage.db import transaction
from web import csrf
from web.auth import client_address, current_contact
from web.forms import posted
from web.metrics import THROTTLED
from web.pages import link_refusal
from web.throttle import seconds_shown


def forgot_page(request: Request) -> Response:
    current_contact(request)
    return request.app.state.pages.render(request, "password_forgot.html", {"state": "ask"})


@posted
def forgot_submit(request: Request, form: FormData) -> Response:
    """The same answer whether or not the code and CIF match, so the form tells nobody which
    client codes exist; throttled per address, matched or not."""
    current_contact(request)
    code = str(form.get("code", "")).strip()[:32]
    tax_id = str(form.get("tax_id", "")).strip()[:32]
    pages, throttle = request.app.state.pages, request.app.state.forgot_throttle
    client = client_address(request)

    def again(error: str, status_code: int, wait: float = 0) -> Response:
        response = pages.render(request, "password_forgot.html",
                                {"state": "ask", "error": error, "code": code,
                                 "tax_id": tax_id, "wait": seconds_shown(wait)},
                                status_code=status_code)
        if wait:
            response.headers["Retry-After"] = str(seconds_shown(wait))
        return response

    if not csrf.valid(request, form.get(csrf.FIELD)):
        return again("csrf", 400)
    missing = [name for name, value in (("code", code), ("tax_id", tax_id)) if not value]
    if missing:
        return again(f"missing_{missing[0]}", 400)
    wait = throttle.wait(f"ip:{client}")
    if wait:
        THROTTLED.labels("forgot").inc()
        return again("throttled", 429, wait)
    throttle.failed(f"ip:{client}")
    with transaction(request.app.state.engine) as session:
        accounts.request_password_links(session, request.app.state.workflow,
                                        request.app.state.password_links, code=code,
                                        tax_id=tax_id)
    return pages.render(request, "password_forgot.html", {"state": "sent"})


def set_page(request: Request) -> Response:
    current_contact(request)
    token = request.path_params["token"]
    with transaction(request.app.state.engine) as session:
        try:
            contact = accounts.contact_for_link(session, request.app.state.password_links, token)
        except BadLink as bad:
            return link_refusal(request, "password_set.html", bad.reason)
    return _form(request, token, contact.email, contact.language)


@posted
def set_submit(request: Request, form: FormData) -> Response:
    current_contact(request)
    token = request.path_params["token"]
    password = str(form.get("password", ""))
    repeated = str(form.get("password_repeat", ""))
    with transaction(request.app.state.engine) as session:
        try:
            contact = accounts.contact_for_link(session, request.app.state.password_links, token)
        except BadLink as bad:
            return link_refusal(request, "password_set.html", bad.reason)
        if not csrf.valid(request, form.get(csrf.FIELD)):
            return _form(request, token, contact.email, contact.language, "csrf", 400)
        problem = accounts.password_problem(password, repeated, contact)
        if problem is not None:
            return _form(request, token, contact.email, contact.language, problem, 400)
        accounts.set_password(session, contact, password)
        email, language = contact.email, contact.language
    request.app.state.login_throttle.succeeded(f"email:{email}")
    return request.app.state.pages.render(request, "password_set.html",
                                          {"state": "done", "email": email}, lang=language)


def _form(request: Request, token: str, email: str, language: str, error: str | None = None,
          status_code: int = 200) -> Response:
    context = {"state": "form", "token": token, "email": email, "error": error,
               "min_length": accounts.MIN_PASSWORD}
    return request.app.state.pages.render(request, "password_set.html", context,
                                          status_code=status_code, lang=language)

