"""Outbox delivery: render each due notification and send it through the relay, with retries.

Without a relay (the embedded default) mails are written as ``.eml`` files to the outbox folder,
so a newcomer can open exactly what the customer would get. A temporary failure (4xx, connection
refused, timeout) is retried with exponential backoff for days (HELPDESK_OUTBOX_RETRY_DAYS); a
permanent one (5xx) gives up at once with the reason recorded; a relay outage delays mail, never
drops it.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import aiosmtplib
from sqlalchemy.engine import Engine

from gateway.group_commit import GroupCommit
from gateway.i18n import pick_language
from gateway.links import ReplyAddresses
from gateway.outbound.render import Envelope, OutgoingFile, Renderer, to_wire
from gateway.settings import Settings
from storage import outbox
from storage.blobs import BlobStore
from storage.faults import Outage, describe, is_temporary, is_unavailable
from storage.models import Notification, utcnow
from storage.queues import new_holder

log = logging.getLogger("gateway.sender")

PARALLEL_SENDS = 4  # relay connections at once
CLAIMED_AT_ONCE = 50  # notifications claimed per round (one transaction)
BASE_DELAY = timedelta(seconds=30)
MAX_DELAY = timedelta(hours=1)


@dataclass(frozen=True)
class RelayConfig:
    host: str
    port: int
    starttls: bool = False
    user: str = ""
    password: str = ""
    timeout: float = 30.0


class PermanentFailure(Exception):
    """The relay refused the mail for good (5xx), or it can never be written: retrying would not
    help. ``kind`` is recorded as the notification's failure."""

    def __init__(self, message: str, kind: str = "refused") -> None:
        super().__init__(message)
        self.kind = kind


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
        retry_days: float = 5.0,
        sender_id: str | None = None,
        clock: Callable[[], datetime] = utcnow,
        blobs: BlobStore | None = None,
    ) -> None:
        self.engine = engine
        self.blobs = blobs  # where the files an agent's answer carries are kept
        self.renderer = renderer
        self.reply = reply
        self.from_name = from_name
        self.from_address = from_address
        self.relay = relay
        self.outbox_dir = outbox_dir
        # Temporary failures (4xx, relay unreachable) are retried for this long, then given up.
        self.retry_for = timedelta(days=retry_days)
        # Who holds the claims of this sender: its supervisor names it, to put them back if the
        # sender dies.
        self.sender_id = sender_id or new_holder("sender")
        self.clock = clock
        self.relay_outage = Outage("relay")
        self._recorder: GroupCommit[outbox.Result, None] = GroupCommit(
            lambda results: outbox.record_results(self.engine, results), "deliveries")

    async def deliver_due(self) -> int:
        """Deliver every notification that is due now; return how many were attempted.

        A claimed batch is rendered and sent over a few relay connections at once. Each
        delivery is recorded as soon as the relay has accepted it (together with the others
        that end at that moment: one commit), so a crash can repeat at most the mails whose
        acceptance was not yet written; the claims are renewed while the batch is at work."""
        rows = await asyncio.to_thread(outbox.claim_due, self.engine, self.sender_id,
                                       CLAIMED_AT_ONCE, now=self.clock())
        if not rows:
            return 0
        lanes = asyncio.Semaphore(PARALLEL_SENDS)
        in_flight = {row.id for row in rows}

        async def one(row: Notification) -> None:
            async with lanes:
                result = await self._deliver_one(row)
            await self._record(result)
            in_flight.discard(row.id)

        renewer = asyncio.create_task(self._renew(in_flight))
        try:
            await asyncio.gather(*(one(row) for row in rows))
        finally:
            renewer.cancel()
        return len(rows)

    async def _record(self, result: outbox.Result) -> None:
        """Record a delivery; while the database is away, try again for as long as the claim
        holds: a mail the relay took must not be sent twice for want of one commit."""
        deadline = asyncio.get_running_loop().time() + outbox.STALE_CLAIM.total_seconds()
        pause = 0.5
        while True:
            try:
                await self._recorder.record(result)
                return
            except Exception as exc:
                if not is_temporary(exc) or asyncio.get_running_loop().time() > deadline:
                    raise
                await asyncio.sleep(pause)
                pause = min(pause * 2, 8.0)

    async def _renew(self, in_flight: set[int | None]) -> None:
        while True:
            await asyncio.sleep(outbox.RENEW_CLAIMS.total_seconds())
            ids = [i for i in in_flight if i is not None]
            try:
                await asyncio.to_thread(outbox.renew, self.engine, self.sender_id, ids,
                                        self.clock())
            except Exception as exc:  # the claims may go stale; another sender then takes them
                log.warning("could not renew the claims of %d notifications: %s", len(ids),
                            describe(exc))

    async def _deliver_one(self, row: Notification) -> outbox.Result:
        assert row.id is not None
        raw, subject = row.raw, row.subject
        result = functools.partial(outbox.Result, row.id, raw=raw, subject=subject,
                                   sender=self.sender_id)
        try:
            if raw is None:
                try:
                    raw, subject = self.compose(row)
                except ValueError as exc:  # an address or ID that can never be written safely
                    raise PermanentFailure(f"cannot write the mail: {exc}", "unwritable") from exc
                result = functools.partial(result, raw=raw, subject=subject)
            await self._send(raw, row)
        except PermanentFailure as exc:
            log.warning("notification %s to %s refused for good: %s", row.id, row.recipient, exc)
            return result(state="failed", error=str(exc), failure=exc.kind,
                          failing_since=row.failing_since, at=self.clock())
        except Exception as exc:
            return self._temporary_failure(row, exc, result)
        self.relay_outage.recovered()
        log.info("notification %s %s %s delivered to %s", row.id, row.event, row.message_id,
                 row.recipient, extra={"message_id": row.message_id, "notification_id": row.id})
        return result(state="sent", at=self.clock())

    def _temporary_failure(self, row: Notification, exc: Exception,
                           result: Callable[..., outbox.Result]) -> outbox.Result:
        """Retried with backoff (30 s doubling, at most an hour apart) until it has been failing
        for the retry time; only then failed, as expired, for `helpdesk outbox retry`."""
        now = self.clock()
        reason = describe(exc)
        if self.relay is not None and is_unavailable(exc):
            self.relay_outage.failed(exc, f"{self.relay.host}:{self.relay.port}")
        since = row.failing_since or now
        if now - since >= self.retry_for:
            days = self.retry_for / timedelta(days=1)
            log.error("notification %s to %s given up after %g day(s) of temporary failures: "
                      "%s (helpdesk outbox retry sends it again)", row.id, row.recipient, days,
                      reason)
            return result(state="failed", error=f"still failing after {days:g} day(s): {reason}",
                          failure="expired", failing_since=since, at=now)
        doublings = min(max(row.attempts - 1, 0), 20)  # far past MAX_DELAY; no overflow
        delay = min(BASE_DELAY * 2**doublings, MAX_DELAY)
        log.info("notification %s will retry in %s: %s", row.id, delay, reason)
        # The bytes are kept, so the retry sends exactly the same mail (same Message-ID).
        return result(state="queued", error=reason, retry_at=now + delay, failing_since=since,
                      at=now)

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
        return to_wire(rendered, envelope, files=self._files(context)), rendered.subject

    def _files(self, context: dict[str, Any]) -> list[OutgoingFile]:
        """The files a mail carries (``context["files"]``: key, name and detected type of each,
        as gateway.workflow.agent_reply records them), read from the blob store."""
        listed = context.get("files") or []
        if not listed:
            return []
        if self.blobs is None:
            raise ValueError("this sender has no blob store to read the mail's files from")
        return [OutgoingFile(item["filename"], item["type"], self.blobs.get(item["key"]))
                for item in listed]

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


def sender_from_settings(settings: Settings, engine: Engine) -> Sender:
    """The sender the settings describe: the relay if one is set, else the outbox folder."""
    relay = None
    if settings.relay_host:
        relay = RelayConfig(settings.relay_host, settings.relay_port, settings.relay_starttls,
                            settings.relay_user, str(settings.relay_password))
    return Sender(engine, Renderer(), ReplyAddresses(str(settings.secret_key),
                                                     settings.support_address),
                  from_name=settings.from_name, from_address=settings.support_address,
                  relay=relay, outbox_dir=settings.outbox_dir,
                  retry_days=settings.outbox_retry_days, blobs=BlobStore(settings.storage_dir))
