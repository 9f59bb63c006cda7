"""The SMTP edge (aiosmtpd): check recipients, store the mail durably, then answer 250.

It does as little as possible: no parsing, no ticket logic. A mail is acknowledged only after its
raw bytes are on disk and its queue row is committed; if that fails, the client gets a 451 and
retries later (RFC 5321 §4.2.5), so an accepted mail is never lost.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from aiosmtpd.smtp import SMTP, Envelope, Session

log = logging.getLogger("gateway.smtp")

T = TypeVar("T")

OK_250 = "250 2.1.5 OK"
ERR_451_STORE = "451 4.3.0 Temporary failure storing the message, try again later"
ERR_550_RELAY = "550 5.7.1 Relaying denied: this server only accepts mail for its own domains"
ERR_554_NO_RCPT = "554 5.5.1 No valid recipients"

# store(raw, mail_from, rcpt_tos, peer) -> inbound queue id, once durably stored.
StoreFunction = Callable[[bytes, str, tuple[str, ...], str], Awaitable[int]]


class GatewayHandler:
    def __init__(
        self,
        accepts_recipient: Callable[[str], bool],
        store: StoreFunction,
        on_stored: Callable[[], None] = lambda: None,
    ) -> None:
        self.accepts_recipient = accepts_recipient
        self.store = store
        self.on_stored = on_stored

    async def handle_RCPT(  # noqa: N802 (aiosmtpd's hook name)
        self, server: SMTP, session: Session, envelope: Envelope, address: str,
        rcpt_options: list[str],
    ) -> str:
        if not self.accepts_recipient(address):
            log.info("refused recipient %s from %s", address, session.peer)
            return ERR_550_RELAY
        envelope.rcpt_tos.append(address)
        return OK_250

    async def handle_DATA(  # noqa: N802 (aiosmtpd's hook name)
        self, server: SMTP, session: Session, envelope: Envelope,
    ) -> str:
        if not envelope.rcpt_tos:
            return ERR_554_NO_RCPT
        raw = envelope.original_content or envelope.content
        assert isinstance(raw, bytes)
        peer = str(session.peer[0]) if isinstance(session.peer, tuple) else str(session.peer)
        try:
            inbound_id = await self.store(raw, envelope.mail_from or "",
                                          tuple(envelope.rcpt_tos), peer)
        except Exception:
            log.exception("could not store a %d-byte mail from %s", len(raw), envelope.mail_from)
            return ERR_451_STORE
        self.on_stored()
        return f"250 2.0.0 OK: queued as {inbound_id}"


class GroupCommit(Generic[T]):
    """Records concurrently arriving mails in one transaction: one commit (one fsync) answers
    every client that finished DATA meanwhile, so acceptance scales with concurrent clients
    instead of queueing each one behind the disk. Runs on the event loop; the writes in a
    thread."""

    def __init__(self, record_many: Callable[[list[T]], list[int]]) -> None:
        self._record_many = record_many
        self._pending: list[tuple[T, asyncio.Future[int]]] = []
        self._flushing = False

    async def record(self, item: T) -> int:
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if not self._flushing:
            self._flushing = True
            asyncio.get_running_loop().create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                try:
                    ids = await asyncio.to_thread(self._record_many, [item for item, _ in batch])
                except Exception as exc:
                    for _, future in batch:
                        future.set_exception(exc)
                else:
                    for (_, future), inbound_id in zip(batch, ids, strict=True):
                        future.set_result(inbound_id)
        finally:
            self._flushing = False


async def start_server(
    handler: GatewayHandler, sock: socket.socket, *, hostname: str, max_size: int,
) -> asyncio.Server:
    """Serve SMTP on an already bound socket (so callers may bind port 0 and read the port)."""
    loop = asyncio.get_running_loop()

    def factory() -> SMTP:
        return SMTP(
            handler,
            hostname=hostname,
            ident="helpdesk-gateway ESMTP",
            data_size_limit=max_size,
            enable_SMTPUTF8=True,
            decode_data=False,
        )

    return await loop.create_server(factory, sock=sock)


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.setblocking(False)
    return sock
