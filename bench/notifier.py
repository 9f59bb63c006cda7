"""Notifier benchmark (`make bench`, second part): notifications rendered and delivered per second.

    python -m bench.notifier [--n 500] [--db sqlite|postgresql]

A fresh database gets N queued "received" notifications (tickets from the standard mix's senders,
written the way ingestion writes them). The gateway's own sender (render from the templates,
record the bytes, deliver over SMTP with aiosmtplib, mark sent) drains them into a local aiosmtpd
sink that only counts. In the same run, a bare loop sends the same number of pre-rendered mails
to that sink with aiosmtplib; the ratio is gateway / bare (issue 4's target: at least 0.5).

The bare loop is given everything the sender has and nothing it has not: one connection per mail,
as the sender opens one per mail, and as many connections at once as the sender's lanes
(``PARALLEL_SENDS``), kept full from the first mail to the last, where the sender's lanes wait at
the end of each claimed batch. It only skips the work being measured: claiming, rendering,
recording. The sink runs in this process, so client and sink share one GIL, as they do for the
sender; the load average printed at the end says how busy the machine was.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import socket
import tempfile
import time
from pathlib import Path

import aiosmtplib
from aiosmtpd.controller import Controller

from bench.databases import PG_URL, fresh_database
from gateway.outbound.preview import sample
from gateway.outbound.render import to_bytes
from gateway.outbound.sender import PARALLEL_SENDS
from gateway.service import build
from gateway.settings import Settings
from storage.db import make_engine, transaction
from storage.directory import add_contact, add_organization
from storage.migrate import upgrade
from storage.tickets import contact_by_email


class CountingSink:
    def __init__(self) -> None:
        self.count = 0

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 (aiosmtpd's hook)
        self.count += 1
        return "250 2.0.0 OK"


def queue_notifications(parts, n: int) -> None:  # type: ignore[no-untyped-def]
    add_organization(parts.engine, code="B001", tax_id="B1", name="Ferretería López S.L.",
                     domains=["ferreteria-lopez.es"])
    add_contact(parts.engine, organization_code="B001", name="María García",
                email="maria.garcia@ferreteria-lopez.es")
    with transaction(parts.engine) as session:
        contact = contact_by_email(session, "maria.garcia@ferreteria-lopez.es")
        for i in range(n):
            parts.workflow.open_ticket(session, requester=contact,
                                       subject=f"Consulta número {i}", channel="email")


async def bare_loop(raw: bytes, n: int, port: int) -> float:
    """Send ``raw`` n times, one connection per mail, over the sender's number of lanes."""
    lanes = asyncio.Semaphore(PARALLEL_SENDS)

    async def one() -> None:
        async with lanes:
            await aiosmtplib.send(raw, sender="soporte@example.com",
                                  recipients=["maria.garcia@ferreteria-lopez.es"],
                                  hostname="127.0.0.1", port=port)

    started = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(n)))
    return time.perf_counter() - started


async def drain(parts) -> tuple[int, float]:  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    total = 0
    while sent := await parts.sender.deliver_due():
        total += sent
    return total, time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    args = parser.parse_args(argv)
    sink = CountingSink()
    with socket.socket() as probe:  # a free port; aiosmtpd's Controller checks it by connecting
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        with tempfile.TemporaryDirectory() as tmp, fresh_database(args.db, Path(tmp),
                                                                   PG_URL) as url:
            settings = Settings.from_env({
                "HELPDESK_VAR_DIR": tmp, "HELPDESK_DATABASE_URL": url,
                "HELPDESK_SECRET_KEY": "bench-secret-key-not-for-production"})
            settings = dataclasses.replace(settings, relay_host="127.0.0.1", relay_port=port)
            upgrade(url)
            parts = build(settings, make_engine(url))
            queue_notifications(parts, args.n)
            sent, gateway_s = asyncio.run(drain(parts))
            delivered = sink.count
            bare_s = asyncio.run(bare_loop(to_bytes(sample("received", "es")), args.n, port))
            parts.engine.dispose()
    finally:
        controller.stop()
    gateway_rate, bare_rate = args.n / gateway_s, args.n / bare_s
    print(f"notifier, {args.db}: {sent} notifications rendered and delivered in {gateway_s:.1f} s"
          f" = {gateway_rate:.0f}/s; bare loop of pre-rendered mails {bare_rate:.0f}/s; "
          f"ratio {gateway_rate / bare_rate:.2f} (target 0.5); sink got {delivered}; "
          f"load {os.getloadavg()[0]:.1f}")
    return 0 if delivered == args.n else 1


if __name__ == "__main__":
    raise SystemExit(main())
