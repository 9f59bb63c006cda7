"""Form posts: the body is read on the event loop, the handler then runs in the thread pool.

Every handler here does blocking database work (and argon2). On the event loop it would stall
everything else served there: other pages, and the SMTP server that shares the loop, whose
clients would then wait for their 250 behind a slow page. Pages without a form are plain ``def``
endpoints, which Starlette runs in its thread pool by itself.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import wraps

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response

FormHandler = Callable[[Request, FormData], Response]


def posted(handler: FormHandler) -> Callable[[Request], Awaitable[Response]]:
    """An endpoint that reads the posted form, then calls ``handler(request, form)`` in the
    thread pool."""

    @wraps(handler)
    async def endpoint(request: Request) -> Response:
        form = await request.form()
        return await run_in_threadpool(handler, request, form)

    return endpoint
