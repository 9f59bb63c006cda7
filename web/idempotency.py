"""``Idempotency-Key`` for the API's POSTs: the same request sent again (a client's retry after
a timeout) gets the first answer again instead of acting twice.

An ASGI middleware of the API (web.api). A POST with the header, from a token that works,
claims its key for its agent in the database (``idempotent_request``, unique per agent and key)
before the request acts, and stores the answer after. Sent again with the same method, path
and body: the stored answer, marked ``Idempotent-Replayed: true``. The same key with another
request: 422. While the first is still running: 409 (try again). An answer of 5xx is not kept
(nothing was done, a retry may act). Keys are forgotten after a day (storage.idempotency,
housekeeping).
"""

from __future__ import annotations

import hashlib
from typing import Any

from sqlalchemy.engine import Engine
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from storage import idempotency
from storage.agents import agent_for_token

REPLAYED_HEADERS = ("content-type", "etag", "location")


class Idempotency:
    HEADER = "idempotency-key"

    def __init__(self, app: ASGIApp, engine: Engine) -> None:
        self.app = app
        self.engine = engine

    @classmethod
    def install(cls, api: Any, engine: Engine) -> None:
        api.add_middleware(cls, engine=engine)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        key = headers.get(self.HEADER)
        if key is None:
            await self.app(scope, receive, send)
            return
        from web.api import problem  # the API's error shape; imported late (it imports us)

        if not 1 <= len(key) <= 200:
            await problem(422, "Invalid request",
                          "Idempotency-Key: 1 to 200 characters")(scope, receive, send)
            return
        scheme, _, secret = headers.get("authorization", "").partition(" ")
        found = (await run_in_threadpool(agent_for_token, self.engine, secret.strip())
                 if scheme.lower() == "bearer" else None)
        if found is None:  # the API itself answers 401
            await self.app(scope, receive, send)
            return
        agent_id = found[0].id
        assert agent_id is not None
        body = await _body(receive)
        fingerprint = hashlib.sha256(b"\0".join([
            scope["method"].encode(), scope["path"].encode(), scope.get("query_string", b""),
            body])).hexdigest()
        claim = await run_in_threadpool(idempotency.claim, self.engine, agent_id, key,
                                        fingerprint)
        if claim.outcome == "replay":
            stored = {**(claim.headers or {}), "idempotent-replayed": "true"}
            await send({"type": "http.response.start", "status": claim.status,
                        "headers": [(k.encode(), v.encode()) for k, v in stored.items()]})
            await send({"type": "http.response.body", "body": claim.body})
            return
        if claim.outcome == "busy":
            await problem(409, "Request in progress", "a request with this Idempotency-Key is "
                          "still running; try again shortly",
                          {"Retry-After": "1"})(scope, receive, send)
            return
        if claim.outcome == "mismatch":
            await problem(422, "Invalid request", "this Idempotency-Key was used for another "
                          "request")(scope, receive, send)
            return
        answer = _Answer()

        async def replay_body() -> Message:
            return {"type": "http.request", "body": body, "more_body": False}

        async def keep(message: Message) -> None:
            answer.take(message)
            await send(message)

        assert claim.row_id is not None
        try:
            await self.app(scope, replay_body, keep)
        except BaseException:
            await run_in_threadpool(idempotency.release, self.engine, claim.row_id)
            raise
        if answer.status >= 500 or answer.status == 0:
            await run_in_threadpool(idempotency.release, self.engine, claim.row_id)
        else:
            await run_in_threadpool(idempotency.store, self.engine, claim.row_id,
                                    answer.status, answer.headers, bytes(answer.body))


class _Answer:
    def __init__(self) -> None:
        self.status = 0
        self.headers: dict[str, str] = {}
        self.body = bytearray()

    def take(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            for name, value in message.get("headers", []):
                if name.decode("latin-1").lower() in REPLAYED_HEADERS:
                    self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")
        elif message["type"] == "http.response.body":
            self.body.extend(message.get("body", b""))


async def _body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)
