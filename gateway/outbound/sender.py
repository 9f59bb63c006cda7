"""Outbox delivery: render each due notification and send it through the relay, with retries.

Without a relay (the embedded default) mails are written as ``.eml`` files to the outbox folder,
so a newcomer can open exactly what the customer would get. A temporary failure (4xx, connection
refused, timeout) is retried with exponential backoff; a permanent one (5xx) gives up at once with
the reason recorded; a relay outage delays mail, never drops it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import aiosmtplib
from sqlalchemy.engine import Engine

from gateway.i18n import pick_language
from gateway.links import ReplyAddresses
from gateway.outbound.render import Envelope, Renderer, to_wire
from storage import outbox
from storage.models import Notification, utcnow

log = logging.getLogger("gateway.sender")

MAX_ATTEMPTS = 12
PARALLEL_SENDS = 4  # relay connections at once
BASE_DELAY = timedelta(seconds=30)
MAX_DELAY = timedelta(hours=2)


@dataclass(frozen=True)
class RelayConfig:
    host: str
    port: int
    starttls: bool = False
    user: str = ""
    password: str = ""
    timeout: float = 30.0


class PermanentFailure(Exception):
    """The relay refused the mail for good (5xx): retrying would not help."""


class Sender:
    def __init__(
        self,
        engine: Engine,
        renderer: Renderer,
        reply: ReplyAddresses,
        *,
        from_name: str,
        from_address: str,
        relay: RelayConfig | None,
        outbox_dir: Path,
    ) -> None:
        self.engine = engine
        self.renderer = renderer
        self.reply = reply
        self.from_name = from_name
        self.from_address = from_address
        self.relay = relay
        self.outbox_dir = outbox_dir

    async def deliver_due(self) -> int:
        """Deliver every notification that is due now; return how many were attempted.

        A claimed batch is rendered, sent over a few relay connections at once, and its
        outcomes are written in one transaction: one commit for the batch, not two a mail."""
        rows = await asyncio.to_thread(outbox.claim_due, self.engine)
        if not rows:
            return 0
        lanes = asyncio.Semaphore(PARALLEL_SENDS)

        async def one(row: Notification) -> outbox.Result:
            async with lanes:
                return await self._deliver_one(row)

        results = await asyncio.gather(*(one(row) for row in rows))
        await asyncio.to_thread(outbox.record_results, self.engine, list(results))
        return len(rows)

    async def _deliver_one(self, row: Notification) -> outbox.Result:
        assert row.id is not None
        raw, subject = row.raw, row.subject
        try:
            if raw is None:
                try:
                    raw, subject = self.compose(row)
                except ValueError as exc:  # an address or ID that can never be written safely
                    raise PermanentFailure(f"cannot write the mail: {exc}") from exc
            await self._send(raw, row)
        except PermanentFailure as exc:
            log.warning("notification %s to %s refused for good: %s", row.id, row.recipient, exc)
            return outbox.Result(row.id, "failed", raw, subject, str(exc))
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}"
            if row.attempts >= MAX_ATTEMPTS:
                log.error("notification %s gave up after %d attempts: %s", row.id, row.attempts,
                          reason)
                return outbox.Result(row.id, "failed", raw, subject, reason)
            delay = min(BASE_DELAY * 2 ** (row.attempts - 1), MAX_DELAY)
            log.info("notification %s will retry in %s: %s", row.id, delay, reason)
            # The bytes are kept, so the retry sends exactly the same mail (same Message-ID).
            return outbox.Result(row.id, "queued", raw, subject, reason, utcnow() + delay)
        log.info("notification %s %s %s delivered to %s", row.id, row.event, row.message_id,
                 row.recipient)
        return outbox.Result(row.id, "sent", raw, subject)

    def compose(self, row: Notification) -> tuple[bytes, str]:
        """Render the mail of a notification from its template and recorded context: its bytes
        and its subject."""
        context = json.loads(row.context)
        language = pick_language(row.language)  # Content-Language names the text's language
        rendered = self.renderer.render(row.event, language, context)
        number = context.get("ticket_number")
        envelope = Envelope(
            from_name=self.from_name,
            from_address=self.from_address,
            to_name=context.get("contact_name", ""),
            to_address=row.recipient,
            reply_to=self.reply.address(number) if number else self.from_address,
            message_id=row.message_id,
            in_reply_to=row.in_reply_to,
            references=tuple((row.references or "").split()),
            language=language,
        )
        return to_wire(rendered, envelope), rendered.subject

    async def _send(self, raw: bytes, row: Notification) -> None:
        """Send the recorded bytes, so what the customer gets is exactly what we kept."""
        if self.relay is None:
            await asyncio.to_thread(self._write_eml, raw, row)
            return
        try:
            await aiosmtplib.send(
                raw,
                sender=self.from_address,
                recipients=[row.recipient],
                hostname=self.relay.host,
                port=self.relay.port,
                start_tls=self.relay.starttls,
                username=self.relay.user or None,
                password=self.relay.password or None,
                timeout=self.relay.timeout,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = [r.code for r in exc.recipients]
            if all(500 <= code < 600 for code in codes):
                raise PermanentFailure(str(exc)) from exc
            raise
        except aiosmtplib.SMTPResponseException as exc:
            if 500 <= exc.code < 600:
                raise PermanentFailure(f"{exc.code} {exc.message}") from exc
            raise

    def _write_eml(self, raw: bytes, row: Notification) -> None:
        self.outbox_dir.mkdir(parents=True, exist_ok=True)
        number = json.loads(row.context).get("ticket_number", "none")
        target = self.outbox_dir / f"{row.id:06d}-ticket{number}-{row.event}.eml"
        fd, tmp = tempfile.mkstemp(dir=self.outbox_dir, prefix=".tmp-")
        with os.fdopen(fd, "wb") as handle:
            handle.write(raw)
        os.replace(tmp, target)
