"""One gateway process: SMTP server, ingest worker, outbox sender and web site on one event loop.

Blocking work (disk, database, parsing) runs in worker threads, so a large mail never stalls
acceptance. Several such processes may share one PostgreSQL database: both queues are claimed
with ``FOR UPDATE SKIP LOCKED``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from dataclasses import dataclass

import uvicorn
from sqlalchemy.engine import Engine

from gateway.channels.imap_poller import ImapPoller
from gateway.channels.smtp_server import GatewayHandler, GroupCommit, bind, start_server
from gateway.inbound.ingest import Ingestor, Policy
from gateway.links import RatingLinks, ReplyAddresses
from gateway.outbound.render import Renderer
from gateway.outbound.sender import RelayConfig, Sender
from gateway.ratings import forget_old_openings, queue_reminders
from gateway.settings import Settings
from gateway.worker import IngestProcesses
from gateway.workflow import Workflow
from storage import inbound, throttle
from storage.blobs import BlobStore
from storage.db import make_engine
from storage.models import utcnow
from web.app import create_app
from web.throttle import KEPT as THROTTLE_KEPT

log = logging.getLogger("gateway.service")


@dataclass
class Parts:
    """Everything one process needs, built once from the settings."""

    settings: Settings
    engine: Engine
    blobs: BlobStore
    ingestor: Ingestor
    sender: Sender
    workflow: Workflow
    rating_links: RatingLinks


def build(settings: Settings, engine: Engine | None = None) -> Parts:
    engine = engine or make_engine(settings.database_url)
    blobs = BlobStore(settings.storage_dir)
    reply = ReplyAddresses(str(settings.secret_key), settings.support_address)
    workflow = Workflow.from_settings(settings)
    assert workflow.rating_links is not None
    ingestor = Ingestor(engine, blobs, workflow, reply, policy(settings))
    relay = None
    if settings.relay_host:
        relay = RelayConfig(settings.relay_host, settings.relay_port, settings.relay_starttls,
                            settings.relay_user, str(settings.relay_password))
    sender = Sender(engine, Renderer(), reply, from_name=settings.from_name,
                    from_address=settings.support_address, relay=relay,
                    outbox_dir=settings.outbox_dir)
    return Parts(settings, engine, blobs, ingestor, sender, workflow, workflow.rating_links)


def policy(settings: Settings) -> Policy:
    return Policy(
        support_address=settings.support_address,
        support_domains=settings.support_domains,
        unknown_senders=settings.unknown_senders,
        catchall_org_code=settings.catchall_org_code,
        reopen_days=settings.reopen_days,
        flood_limit=settings.flood_limit,
        flood_window_minutes=settings.flood_window_minutes,
        max_attachment_size=settings.max_attachment_size,
        lease_seconds=settings.lease_seconds,
    )


class Service:
    """Starts and stops the parts; ``smtp_port`` and ``web_port`` are known once started."""

    def __init__(self, settings: Settings, engine: Engine | None = None) -> None:
        self.settings = settings
        self.parts = build(settings, engine)
        self.smtp_port = 0
        self.web_port = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._workers: IngestProcesses | None = None
        self._committer: GroupCommit[inbound.Arrival] = GroupCommit(
            lambda arrivals: inbound.record(self.parts.engine, arrivals))
        self._smtp: asyncio.Server | None = None
        self._web: uvicorn.Server | None = None
        self._imap: list[ImapPoller] = []

    async def start(self) -> None:
        parts, settings = self.parts, self.settings
        smtp_sock = bind(settings.smtp_host, settings.smtp_port)
        web_sock = bind(settings.web_host, settings.web_port)
        self.smtp_port = smtp_sock.getsockname()[1]
        self.web_port = web_sock.getsockname()[1]

        handler = GatewayHandler(
            settings.accepts_recipient,
            self._store,
            on_stored=self._wake_workers,
        )
        self._smtp = await start_server(handler, smtp_sock, hostname=_smtp_hostname(settings),
                                        max_size=settings.smtp_max_size)
        # Ingestion runs in worker processes of its own, on the other cores.
        self._workers = IngestProcesses(settings, settings.ingest_processes)
        self._workers.start()
        if not await asyncio.to_thread(self._workers.wait_ready, 60):
            log.error("ingest workers did not start within 60 s; mail queues until they do")
        app = create_app(settings, parts.engine, parts.workflow)
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
        self._web = uvicorn.Server(config)
        self._tasks = [
            asyncio.create_task(self._web.serve(sockets=[web_sock]), name="web"),
            asyncio.create_task(self._send_loop(), name="sender"),
            asyncio.create_task(self._housekeeping_loop(), name="housekeeping"),
        ]
        while not self._web.started:
            await asyncio.sleep(0.01)
            if self._tasks[0].done():
                self._tasks[0].result()  # surface why the web server could not start
        log.info("SMTP on %s:%d, web on %s:%d", settings.smtp_host, self.smtp_port,
                 settings.web_host, self.web_port)
        # One thread per IMAP mailbox; a stored mail wakes the ingest loop as SMTP does.
        self._imap = [
            ImapPoller(mailbox, parts.engine, parts.blobs, poll_seconds=settings.imap_poll_seconds,
                       idle_seconds=settings.imap_idle_seconds, max_size=settings.smtp_max_size,
                       on_stored=handler.on_stored)
            for mailbox in settings.imap_mailboxes
        ]
        for poller in self._imap:
            poller.start()

    async def stop(self) -> None:
        await asyncio.gather(*(asyncio.to_thread(poller.stop) for poller in self._imap))
        if self._smtp is not None:
            self._smtp.close()
            await self._smtp.wait_closed()
        if self._workers is not None:
            await asyncio.to_thread(self._workers.stop)
        if self._web is not None:
            self._web.should_exit = True
        for task in self._tasks[1:]:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.parts.engine.dispose()

    async def _store(self, raw: bytes, mail_from: str, rcpt_tos: tuple[str, ...],
                     peer: str) -> int:
        """Durable before 250: the bytes on disk (in parallel across clients), then the queue
        row, committed together with those of the other clients finishing now."""
        key = await asyncio.to_thread(self.parts.blobs.put, raw)
        return await self._committer.record(inbound.Arrival(key, len(raw), "smtp", peer, None,
                                                            mail_from, rcpt_tos))

    def _wake_workers(self) -> None:
        if self._workers is not None:
            self._workers.wake()

    async def _send_loop(self) -> None:
        """Deliver due notifications; woken when a worker applied mail, else every poll."""
        parts = self.parts
        while True:
            applied = self._workers.signals.applied if self._workers is not None else None
            seen = applied.value if applied is not None else 0
            try:
                sent = await parts.sender.deliver_due()
            except Exception:
                log.exception("sender loop could not claim notifications")
                sent = 0
            if sent:
                continue
            deadline = asyncio.get_running_loop().time() + self.settings.worker_poll_seconds
            while asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.02)
                if applied is not None and applied.value != seen:
                    break


    async def _housekeeping_loop(self) -> None:
        """Every HELPDESK_HOUSEKEEPING_SECONDS: queue due rating reminders (at most one per
        ticket, whichever process gets there first) and forget old star-link openings."""
        while True:
            try:
                await asyncio.to_thread(self.housekeeping)
            except Exception:
                log.exception("housekeeping failed; it runs again in %s s",
                              self.settings.housekeeping_seconds)
            await asyncio.sleep(self.settings.housekeeping_seconds)

    def housekeeping(self) -> None:
        parts = self.parts
        reminded = queue_reminders(parts.engine, parts.workflow, parts.rating_links,
                                   self.settings.rating_reminder_days)
        forgotten = forget_old_openings(parts.engine)
        forgotten += throttle.forget_before(parts.engine, utcnow() - THROTTLE_KEPT)
        if reminded or forgotten:
            log.info("housekeeping: %d rating reminder(s) queued, %d old star-link opening(s) "
                     "and throttle event(s) forgotten", reminded, forgotten)


def _smtp_hostname(settings: Settings) -> str:
    return settings.support_domains[0] if settings.support_domains else socket.getfqdn()


async def run_forever(settings: Settings, banner: str = "") -> None:
    service = Service(settings)
    await service.start()
    print(
        f"helpdesk gateway running\n"
        f"  SMTP  {settings.smtp_host}:{service.smtp_port}  (mail to {settings.support_address})\n"
        f"  web   http://{settings.web_host}:{service.web_port}/\n"
        f"  mail  {'relay ' + settings.relay_host if settings.relay_host else settings.outbox_dir}"
        f"{banner}",
        flush=True,
    )
    try:
        await asyncio.Event().wait()
    finally:
        await service.stop()
