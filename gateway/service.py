"""One gateway: the SMTP server, the IMAP pollers and housekeeping on one event loop; the ingest
workers, the outbox sender and the web processes in worker processes; all watched by a supervisor.

Blocking work (disk, database, parsing) runs in threads or in the worker processes, so a large
mail never stalls acceptance. Several gateways may share one PostgreSQL database: both queues are
claimed with ``FOR UPDATE SKIP LOCKED``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import multiprocessing
import shutil
import socket
import sys
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

from sqlalchemy.engine import Engine

from gateway.collector import settled
from gateway.group_commit import GroupCommit
from gateway.inbound.ingest import Ingestor, Policy
from gateway.inbound.sender_auth import use_dns_servers
from gateway.links import RatingLinks, ReplyAddresses
from gateway.outbound.sender import Sender, sender_from_settings
from gateway.ratings import forget_old_openings, promote_pending, queue_reminders
from gateway.settings import Settings
from gateway.supervisor import Supervisor, TaskPart, ThreadPart
from gateway.webhooks import WebhookSender
from gateway.worker import (
    Signals,
    WorkerProcess,
    bump,
    metrics_dir,
    run_ingest,
    run_sender,
    run_web,
)
from gateway.workflow import Workflow
from storage import idempotency, inbound, outbox, queues, sessions, throttle
from storage.blobs import BlobStore, BlobWriter
from storage.db import make_engine
from storage.faults import describe, is_unavailable
from storage.models import InboundMessage, Notification, utcnow
from storage.queues import new_holder
from web.throttle import KEPT as THROTTLE_KEPT

if TYPE_CHECKING:
    from gateway.channels.imap_poller import ImapPoller

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
    use_dns_servers(settings.dns_servers)
    blobs = BlobStore(settings.storage_dir)
    reply = ReplyAddresses(str(settings.secret_key), settings.support_address)
    workflow = Workflow.from_settings(settings)
    assert workflow.rating_links is not None
    ingestor = Ingestor(engine, blobs, workflow, reply, policy(settings))
    sender = sender_from_settings(settings, engine)
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
        retry_days=settings.inbound_retry_days,
        sender_auth=settings.sender_auth or "off",
        smtp_auth_results=settings.smtp_auth_results,
        lmtp_auth_results=settings.lmtp_auth_results,
        mailbox_auth_results=tuple((m.name, m.auth_results) for m in settings.imap_mailboxes
                                   if m.auth_results),
    )


class Service:
    """Starts and stops the parts; ``smtp_port``, ``lmtp_port`` (0 without LMTP) and
    ``web_port`` are known once started."""

    def __init__(self, settings: Settings, engine: Engine | None = None) -> None:
        self.settings = settings
        self.parts = build(settings, engine)
        self.smtp_port = 0
        self.lmtp_port = 0
        self.web_port = 0
        self._web_port_held: socket.socket | None = None
        self._supervising: asyncio.Task[None] | None = None
        self.supervisor = Supervisor()
        self.workers: list[WorkerProcess] = []
        self._tasks: list[TaskPart] = []
        self._committer: GroupCommit[inbound.Arrival, int] = GroupCommit(
            lambda arrivals: inbound.record(self.parts.engine, arrivals, urgent=True,
                                            lock_wait=settings.smtp_store_timeout),
            "accepted mails (their clients will send them again: recorded as duplicates)")
        self._smtp: asyncio.Server | None = None
        self._lmtp: asyncio.Server | None = None
        self._imap: list[ImapPoller] = []
        count = settings.ingest_processes + 1 + settings.web_processes  # the sender is one
        context = multiprocessing.get_context("spawn")
        self.signals = Signals(context.RawValue("b", 0), context.RawValue("Q", 0),
                               context.RawValue("Q", 0), context.RawArray("b", count))

    async def start(self) -> None:
        # The channels are imported here: the other commands (ingest first) build the parts
        # without them (aiosmtpd, cryptography: a quarter of a second at every start).
        from gateway.channels.imap_poller import ImapPoller
        from gateway.channels.smtp_server import (
            ConnectionLimits,
            GatewayHandler,
            bind,
            start_server,
        )
        from gateway.channels.tls import server_context

        parts, settings = self.parts, self.settings
        smtp_sock = bind(settings.smtp_host, settings.smtp_port)
        # The web port is reserved here (a free one if the setting is 0) and served by the web
        # processes, each on a socket of its own bound to it (web.server).
        self._web_port_held = bind(settings.web_host, settings.web_port, listen=False,
                                   share=True)
        self.smtp_port = smtp_sock.getsockname()[1]
        self.web_port = self._web_port_held.getsockname()[1]

        handler = GatewayHandler(
            settings.accepts_recipient,
            self._store,
            parts.blobs.writer,
            on_stored=self._wake_workers,
            store_timeout=settings.smtp_store_timeout,
        )
        tls = (server_context(settings.smtp_tls_cert, settings.smtp_tls_key)
               if settings.smtp_tls_cert else None)
        self._smtp = await start_server(
            handler, smtp_sock, hostname=smtp_hostname(settings),
            max_size=settings.smtp_max_size, idle_timeout=settings.smtp_idle_timeout,
            limits=ConnectionLimits(settings.smtp_max_connections,
                                    settings.smtp_max_connections_per_address),
            tls_context=tls, require_tls=settings.smtp_require_tls)
        if settings.lmtp_port is not None:
            # Behind an MTA every connection comes from its address: only the total counts.
            lmtp_sock = bind(settings.lmtp_host, settings.lmtp_port)
            self.lmtp_port = lmtp_sock.getsockname()[1]
            self._lmtp = await start_server(
                handler, lmtp_sock, hostname=smtp_hostname(settings),
                max_size=settings.smtp_max_size, idle_timeout=settings.smtp_idle_timeout,
                limits=ConnectionLimits(settings.smtp_max_connections,
                                        settings.smtp_max_connections),
                lmtp=True)
            log.info("LMTP on %s:%d", settings.lmtp_host, self.lmtp_port)
        # Ingestion, sending and the web site run in worker processes of their own, on the
        # other cores.
        await self._start_workers()
        self._tasks = [TaskPart("housekeeping", self._housekeeping_loop),
                       TaskPart("ratings", self._ratings_loop),
                       TaskPart("webhooks", self._webhooks_loop)]
        # One thread per IMAP mailbox; a stored mail wakes the ingest workers as SMTP does.
        self._imap = [
            ImapPoller(mailbox, parts.engine, parts.blobs, poll_seconds=settings.imap_poll_seconds,
                       idle_seconds=settings.imap_idle_seconds, max_size=settings.smtp_max_size,
                       on_stored=handler.on_stored)
            for mailbox in settings.imap_mailboxes
        ]
        for part in [*self._tasks, *(ThreadPart(f"IMAP poller {p.name}", p) for p in self._imap)]:
            part.start()
            self.supervisor.watch(part)
        self._supervising = asyncio.create_task(self.supervisor.run(), name="supervisor")
        log.info("SMTP on %s:%d, web on %s:%d", settings.smtp_host, self.smtp_port,
                 settings.web_host, self.web_port)

    async def _start_workers(self) -> None:
        settings, engine = self.settings, self.parts.engine
        self.workers = [
            WorkerProcess(f"ingest worker {n}", "ingest", run_ingest, settings, self.signals, n,
                          lambda holder: inbound.release(engine, holder))
            for n in range(settings.ingest_processes)
        ]
        self.workers.append(
            WorkerProcess("sender", "sender", run_sender, settings, self.signals,
                          settings.ingest_processes, lambda holder: outbox.release(engine, holder)))
        web_settings = dataclasses.replace(settings, web_port=self.web_port)
        counts = metrics_dir(settings)  # a new start counts from zero
        shutil.rmtree(counts, ignore_errors=True)
        counts.mkdir(parents=True, exist_ok=True)
        first_web_slot = settings.ingest_processes + 1
        self.workers += [
            WorkerProcess(f"web process {n}", "web", run_web, web_settings, self.signals,
                          first_web_slot + n, lambda holder: 0)
            for n in range(settings.web_processes)
        ]
        for worker in self.workers:
            worker.start()
            self.supervisor.watch(worker)
        deadline = time.monotonic() + 60
        while not all(w.ready() for w in self.workers) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        if not all(w.ready() for w in self.workers):
            log.error("worker processes did not start within 60 s; mail queues until they do")

    async def stop(self) -> None:
        if self._supervising is not None:  # first, so that nothing stopped below is restarted
            self._supervising.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervising
        await asyncio.gather(*(asyncio.to_thread(poller.stop) for poller in self._imap))
        for server in (self._smtp, self._lmtp):
            if server is not None:
                server.close()
                await server.wait_closed()
        self.signals.stop.value = 1
        deadline = time.monotonic() + 15
        await asyncio.gather(*(asyncio.to_thread(w.stop, deadline) for w in self.workers))
        for task in self._tasks:
            await task.stop()
        if self._web_port_held is not None:
            self._web_port_held.close()
        self.parts.engine.dispose()

    async def _store(self, blob: BlobWriter, mail_from: str, rcpt_tos: tuple[str, ...],
                     peer: str, helo: str = "", channel: str = "smtp") -> int:
        """Durable before 250: the bytes, written as they arrived, synced and stored under their
        key (in parallel across clients), then the queue row, committed together with those of
        the other clients finishing now."""
        key = await asyncio.to_thread(blob.commit)
        return await self._committer.record(inbound.Arrival(key, blob.size, channel, peer, None,
                                                            mail_from, rcpt_tos, helo))

    def _wake_workers(self) -> None:
        bump(self.signals.wake)

    async def _housekeeping_loop(self) -> None:
        """Every HELPDESK_HOUSEKEEPING_SECONDS: queue due rating reminders (at most one per
        ticket, whichever process gets there first), forget old star-link openings, and say
        what is stuck."""
        while True:
            try:
                await asyncio.to_thread(self.housekeeping)
            except Exception as exc:
                if is_unavailable(exc):
                    log.info("housekeeping skipped: %s", describe(exc))
                else:
                    log.exception("housekeeping failed; it runs again in %s s",
                                  self.settings.housekeeping_seconds)
            await asyncio.sleep(self.settings.housekeeping_seconds)

    async def _ratings_loop(self) -> None:
        """Every RATINGS_EVERY: a star link's provisional rating that stood its two minutes
        without a scanner's burst becomes the rating (gateway.ratings.promote_pending)."""
        while True:
            try:
                await asyncio.to_thread(promote_pending, self.parts.engine,
                                        self.parts.workflow)
            except Exception as exc:
                if is_unavailable(exc):
                    log.info("provisional ratings wait: %s", describe(exc))
                else:
                    log.exception("provisional ratings could not be recorded; tried again in "
                                  "%s s", RATINGS_EVERY)
            await asyncio.sleep(RATINGS_EVERY)

    async def _webhooks_loop(self) -> None:
        """Every WEBHOOKS_EVERY: each subscription's next due event is POSTed to the team's
        helpdesk tool (gateway.webhooks)."""
        sender = WebhookSender(self.parts.engine, new_holder("webhooks"))
        import httpx  # here: the other commands never deliver webhooks

        async with httpx.AsyncClient(follow_redirects=False) as client:
            while True:
                try:
                    await sender.deliver_due(client)
                except Exception as exc:
                    if is_unavailable(exc):
                        log.info("webhooks wait: %s", describe(exc))
                    else:
                        log.exception("webhooks could not be delivered; tried again in %s s",
                                      WEBHOOKS_EVERY)
                await asyncio.sleep(WEBHOOKS_EVERY)

    def housekeeping(self) -> None:
        parts = self.parts
        reminded = queue_reminders(parts.engine, parts.workflow, parts.rating_links,
                                   self.settings.rating_reminder_days)
        forgotten = forget_old_openings(parts.engine)
        forgotten += throttle.forget_before(parts.engine, utcnow() - THROTTLE_KEPT)
        forgotten += sessions.forget_before(parts.engine, utcnow() - SESSIONS_KEPT)
        forgotten += idempotency.forget_before(parts.engine, utcnow() - idempotency.KEEP)
        forgotten += parts.blobs.forget_incoming()  # what a process killed mid-write left
        if reminded or forgotten:
            log.info("housekeeping: %d rating reminder(s) queued, %d old star-link opening(s), "
                     "throttle event(s), ended session(s), API idempotency key(s) and "
                     "half-written file(s) forgotten", reminded, forgotten)
        report_stuck(parts.engine, self.settings)


def report_stuck(engine: Engine, settings: Settings) -> None:
    """A warning for what has been waiting on temporary errors for over STUCK_AFTER: mail the
    relay keeps refusing or cannot be reached for, mails the disk or database keep failing."""
    for what, stuck, days, command in (
        ("notification(s) undelivered", queues.stuck(engine, Notification, STUCK_AFTER),
         settings.outbox_retry_days, "helpdesk outbox status"),
        ("inbound mail(s) unprocessed", queues.stuck(engine, InboundMessage, STUCK_AFTER),
         settings.inbound_retry_days, "helpdesk inbound status"),
    ):
        if stuck.count:
            log.warning("%d %s after temporary errors for over %s, the oldest since %s UTC; "
                        "last error: %s (retried for %g days in all; `%s` lists them)",
                        stuck.count, what, STUCK_AFTER, f"{stuck.oldest:%Y-%m-%d %H:%M}",
                        stuck.last_error, days, command)


STUCK_AFTER = timedelta(hours=1)
SESSIONS_KEPT = timedelta(days=1)  # ended or expired sessions are deleted after this
RATINGS_EVERY = 15.0  # seconds between looks at provisional ratings
WEBHOOKS_EVERY = 1.0  # seconds between looks for webhook events to deliver


def smtp_hostname(settings: Settings) -> str:
    return settings.support_domains[0] if settings.support_domains else socket.getfqdn()


# The serve process's interpreter passes between its threads (the event loop answering SMTP
# clients, the threads storing their mails) every millisecond instead of every five: a 250 waits
# less for a thread that computes. Its heavy work runs in the worker processes. Measured with 8
# clients on SQLite: p99 DATA latency 91-93 -> 69-71 ms, throughput unchanged.
SWITCH_INTERVAL = 0.001


def settle_serve_process() -> None:
    """Once `serve` has started: latency first (SWITCH_INTERVAL), start-up kept out of the
    collector's full passes (gateway.collector)."""
    sys.setswitchinterval(SWITCH_INTERVAL)
    settled()


async def run_forever(settings: Settings, banner: str = "") -> None:
    service = Service(settings)
    await service.start()
    settle_serve_process()
    mail = f"relay {settings.relay_host}" if settings.relay_host else settings.outbox_dir
    lmtp = f"  LMTP  {settings.lmtp_host}:{service.lmtp_port}\n" if service.lmtp_port else ""
    print(
        f"helpdesk gateway running\n"
        f"  SMTP  {settings.smtp_host}:{service.smtp_port}  (mail to {settings.support_address})"
        f"{'  STARTTLS' if settings.smtp_tls_cert else ''}\n"
        f"{lmtp}"
        f"  web   http://{settings.web_host}:{service.web_port}/\n"
        f"  mail  {mail}\n"
        f"  senders  {settings.sender_auth or 'off'} (HELPDESK_SENDER_AUTH)"
        f"{banner}",
        flush=True,
    )
    try:
        await asyncio.Event().wait()
    finally:
        await service.stop()
