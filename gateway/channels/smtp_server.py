"""The SMTP edge (aiosmtpd): check recipients, store the mail durably, then answer 250.

It does as little as possible: no parsing, no ticket logic. A mail is acknowledged only after its
raw bytes are on disk and its queue row is committed; if that fails, or does not finish within
HELPDESK_SMTP_STORE_TIMEOUT, the client gets a 451 and retries later (RFC 5321 §4.2.5), so an
accepted mail is never lost and no client waits for an answer that does not come.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable

from aiosmtpd.smtp import SMTP, Envelope, Session

from storage.faults import describe, is_unavailable

log = logging.getLogger("gateway.smtp")

OK_250 = "250 2.1.5 OK"
ERR_451_STORE = "451 4.3.0 Temporary failure storing the message, try again later"
ERR_550_RELAY = "550 5.7.1 Relaying denied: this server only accepts mail for its own domains"
ERR_554_NO_RCPT = "554 5.5.1 No valid recipients"

# store(raw, mail_from, rcpt_tos, peer, helo) -> inbound queue id, once durably stored.
StoreFunction = Callable[[bytes, str, tuple[str, ...], str, str], Awaitable[int]]


class GatewayHandler:
    def __init__(
        self,
        accepts_recipient: Callable[[str], bool],
        store: StoreFunction,
        on_stored: Callable[[], None] = lambda: None,
        store_timeout: float = 30.0,
    ) -> None:
        self.accepts_recipient = accepts_recipient
        self.store = store
        self.on_stored = on_stored
        # A store that takes longer (a database or disk that hangs) is answered 451, so that
        # the client retries instead of waiting for an answer that may never come.
        self.store_timeout = store_timeout

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
            inbound_id = await asyncio.wait_for(
                self.store(raw, envelope.mail_from or "", tuple(envelope.rcpt_tos), peer,
                           str(session.host_name or "")),
                self.store_timeout)
        except TimeoutError:
            log.warning("storing a %d-byte mail from %s took too long; answered 451", len(raw),
                        envelope.mail_from)
            return ERR_451_STORE
        except Exception as exc:
            if is_unavailable(exc):  # a full disk, a database away: one line, no traceback
                log.warning("could not store a %d-byte mail from %s: %s", len(raw),
                         envelope.mail_from, describe(exc))
            else:
                log.exception("could not store a %d-byte mail from %s", len(raw),
                              envelope.mail_from)
            return ERR_451_STORE
        self.on_stored()
        return f"250 2.0.0 OK: queued as {inbound_id}"


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


def bind(host: str, port: int, *, listen: bool = True, share: bool = False) -> socket.socket:
    """A listening TCP socket. Named IPPROTO_TCP, not 0: asyncio turns Nagle's algorithm off
    (TCP_NODELAY) only on connections of such a socket, and with it on, a reply written in two
    pieces (headers then body, or a multi-line SMTP answer) waits ~40 ms for the peer's delayed
    ACK.

    ``share``: with SO_REUSEPORT, so that several processes each listen on a socket of their
    own bound to the same port and the kernel spreads new connections evenly among them (one
    socket shared by all would let whichever process wakes first accept a whole burst).
    ``listen=False`` only reserves the port (such a socket is given no connections)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if share:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    if listen:
        sock.listen(128)
    sock.setblocking(False)
    return sock
