"""CSRF tokens: one random token per session, required in every form that changes something."""

from __future__ import annotations

import hmac
import secrets

from starlette.requests import Request

FIELD = "csrf_token"


def token(request: Request) -> str:
    value = request.session.get(FIELD)
    if not value:
        value = secrets.token_urlsafe(32)
        request.session[FIELD] = value
    return str(value)


def valid(request: Request, submitted: object) -> bool:
    expected = request.session.get(FIELD)
    return (
        isinstance(submitted, str)
        and bool(expected)
        and hmac.compare_digest(str(expected), submitted)
    )
