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

from gateway.uploads import MAX_FILES

FormHandler = Callable[[Request, FormData], Response]

# The largest form accepted: MAX_FILES files of the attachment limit and the text, with room
# for the encoding. Files above the limit are refused one by one, not the whole form.
MAX_BODY = 128 * 1024 * 1024


def posted(handler: FormHandler) -> Callable[[Request], Awaitable[Response]]:
    """An endpoint that reads the posted form, then calls ``handler(request, form)`` in the
    thread pool."""

    @wraps(handler)
    async def endpoint(request: Request) -> Response:
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_BODY:
            return request.app.state.pages.render(request, "error.html",
                                                  {"error": "too_large"}, status_code=413)
        async with request.form(max_files=MAX_FILES + 5, max_fields=200) as form:
            return await run_in_threadpool(handler, request, form)

    return endpoint
