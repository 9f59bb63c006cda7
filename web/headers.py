"""Security headers on every response of the site: pages, errors, static files, downloads,
redirects. A header a response sets itself (a download's stricter CSP) is kept."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

# No script but the site's own files (no inline script, no eval), nothing from elsewhere, not
# even images of a mail (a sanitized mail's remote images would tell its sender who read it
# and when), never inside another site's frame, forms posted only here.
CONTENT_SECURITY_POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; "
                           "img-src 'self'; font-src 'self'; connect-src 'self'; "
                           "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")


def security_headers(https: bool) -> list[tuple[str, str]]:
    headers = [
        ("content-security-policy", CONTENT_SECURITY_POLICY),
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        # Star, verification and set-password links carry their token in the path: a page
        # reached from them must not hand it to another site through the Referer.
        ("referrer-policy", "no-referrer"),
        ("cross-origin-opener-policy", "same-origin"),
        ("permissions-policy", "camera=(), microphone=(), geolocation=()"),
    ]
    if https:
        headers.append(("strict-transport-security", "max-age=31536000"))
    return headers


class SecurityHeaders:
    def __init__(self, app: ASGIApp, *, https: bool) -> None:
        self.app = app
        self.headers = [(name.encode(), value.encode()) for name, value in security_headers(https)]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = message.setdefault("headers", [])
                present = {name.lower() for name, _ in headers}
                headers.extend(h for h in self.headers if h[0] not in present)
            await send(message)

        await self.app(scope, receive, send_with_headers)
