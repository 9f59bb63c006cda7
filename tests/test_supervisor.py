"""Supervised parts: a killed ingest worker or sender is replaced without restarting `serve`, what
it held is put back at once, and a part that keeps dying is reported."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import re
import signal
import smtplib
import subprocess
import sys
import threading
import time

from aiosmtpd.controller import Controller
from sqlmodel import Session, select

from gateway.service import build
from gateway.supervisor import Policy, Supervisor, TaskPart
from storage import inbound
from storage.models import Notification
from tests.conftest import free_port, parse_mail, run_async, wait_for
from tests.gateway_process import GatewayProcess
from tests.test_process_safety import all_done, messages_per_id, request_mail


def test_killed_ingest_worker_is_replaced_and_every_mail_processed(db_url, directory, tmp_path):
    # SIGKILL of the ingest worker while 4 clients stream 160 mails: `serve` logs the death,
    # puts the dead worker's leases back and starts another worker; every mail is processed
    # once. Leases last 10 minutes here, so only the put-back lets the test finish.
    gateway = GatewayProcess(db_url, tmp_path / "var", HELPDESK_FLOOD_LIMIT="0",
                             HELPDESK_INGEST_PROCESSES="1", HELPDESK_LEASE_SECONDS="600").start()
    try:
        (first,) = gateway.pids("ingest worker 0")

        def stream(numbers: range) -> None:
            with smtplib.SMTP("127.0.0.1", gateway.smtp_port, timeout=60) as client:
                for n in numbers:
                    client.sendmail("maria.garcia@ferreteria-lopez.es", ["soporte@example.com"],
                                    request_mail(n, "worker"))

        clients = [threading.Thread(target=stream, args=(range(k, 160, 4),)) for k in range(4)]
        for thread in clients:
            thread.start()
        wait_for(lambda: len(gateway.processed_ids()) >= 30, timeout=60, interval=0.005)
        os.kill(first, signal.SIGKILL)
        for thread in clients:
            thread.join(120)
        wait_for(lambda: all_done(directory, 160), timeout=90)
        assert gateway.proc.poll() is None  # the same `serve` all along
    finally:
        gateway.stop()
    log = gateway.log()
    assert "ingest worker 0 died (killed by SIGKILL)" in log
    assert len(gateway.pids("ingest worker 0")) == 2
    counts = messages_per_id(directory)
    assert [n for n in range(160) if counts.get(f"<worker-{n}@ferreteria-lopez.es>") != 1] == []


class KillingRelay:
    """A relay that, once it has accepted the ``after``-th mail, has the sender killed half a
    second later, and holds every mail that arrives meanwhile without answering (the kill
    drops those connections, so the relay never accepts them)."""

    def __init__(self, after: int) -> None:
        self.after = after
        self.victim: int | None = None
        self.accepted: list[bytes] = []
        self.killed = threading.Event()

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        while self.victim is None:  # until the test knows which process is the sender
            await asyncio.sleep(0.02)
        if len(self.accepted) >= self.after and not self.killed.is_set():
            await asyncio.sleep(30)  # cancelled when the killed sender's connection drops
        self.accepted.append(envelope.content)
        if len(self.accepted) == self.after:
            threading.Timer(0.5, self._kill).start()
        return "250 2.0.0 OK"

    def _kill(self) -> None:
        assert self.victim is not None and self.victim > 1
        os.kill(self.victim, signal.SIGKILL)
        self.killed.set()


def test_killed_sender_is_replaced_and_sends_nothing_twice(db_url, settings, directory,
                                                           tmp_path):
    # 24 "received" mails wait in the outbox; the sender is SIGKILLed half a second after the
    # relay accepted the 6th, while the next ones are in flight. A new sender delivers the
    # rest at once (the dead one's claims are put back, not left to go stale), and no mail
    # reaches the relay twice: each delivery was recorded as soon as the relay took it.
    parts = build(dataclasses.replace(settings, flood_limit=0), directory)
    for n in range(24):
        queue_id = inbound.enqueue(parts.engine, parts.blobs, request_mail(n, "sender"),
                                   channel="file")
        assert parts.ingestor.process_next(queue_id).outcome == "created"
    relay = KillingRelay(after=6)
    controller = Controller(relay, hostname="127.0.0.1", port=free_port())
    controller.start()
    gateway = GatewayProcess(db_url, tmp_path / "var", HELPDESK_RELAY_HOST="127.0.0.1",
                             HELPDESK_RELAY_PORT=str(controller.port),
                             HELPDESK_SECRET_KEY="test-secret-key-not-for-production")
    try:
        gateway.start()
        (relay.victim,) = gateway.pids("sender")

        def states() -> list[str]:
            with Session(parts.engine) as session:
                return list(session.exec(select(Notification.state)).all())

        wait_for(lambda: relay.killed.is_set(), timeout=60)
        wait_for(lambda: set(states()) == {"sent"}, timeout=60)
        assert gateway.proc.poll() is None
    finally:
        gateway.stop()
        controller.stop()
    assert "sender died (killed by SIGKILL)" in gateway.log()
    assert len(gateway.pids("sender")) == 2
    ids = [parse_mail(raw)["Message-ID"] for raw in relay.accepted]
    assert len(ids) == 24 and len(set(ids)) == 24


class Command:
    """A part that is a real OS process running a Python snippet, for the supervisor's rules."""

    def __init__(self, name: str, code: str) -> None:
        self.name = name
        self.code = code
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts: list[float] = []
        self.cleanups = 0

    def start(self) -> None:
        self.starts.append(time.monotonic())
        self.proc = subprocess.Popen([sys.executable, "-c", self.code])

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def exit_reason(self) -> str:
        return f"exited with status {self.proc.returncode}"

    def after_death(self) -> str:
        self.cleanups += 1
        return "cleaned up"


def test_part_that_keeps_dying_is_restarted_ever_more_slowly_and_reported(caplog):
    # A process that exits at once: each death is logged and cleaned up after, and it is
    # started again after 0.05, 0.1, 0.2 s ... (capped at 0.4 here); at the 4th death within
    # the window it is reported as failing, once. Once it stays up for a whole window it is
    # healthy again, and that is said too.
    part = Command("flaky", "import sys; sys.exit(3)")
    policy = Policy(first_delay=0.05, most_delay=0.4, window=3.0, failing_after=4)
    supervisor = Supervisor(policy, interval=0.01)

    async def watch(until) -> None:
        while not until():
            await supervisor.look()
            await asyncio.sleep(0.01)

    caplog.set_level(logging.INFO, logger="gateway.supervisor")
    part.start()
    supervisor.watch(part)
    try:
        run_async(watch(lambda: len(part.starts) >= 6))
        delays = [float(d) for d in re.findall(
            r"flaky died \(exited with status 3\); cleaned up; restarting in ([\d.]+) s",
            caplog.text)]
        assert delays == [0.05, 0.1, 0.2, 0.4, 0.4]
        assert part.cleanups == 5
        assert caplog.text.count("flaky keeps dying: 4 times") == 1
        (health,) = supervisor.health()
        assert health["failing"] and health["restarts"] == 5 and not supervisor.healthy

        part.code = "import time; time.sleep(60)"  # fixed: the next start stays up
        run_async(watch(lambda: "no longer failing" in caplog.text))
        assert supervisor.healthy and supervisor.health()[0]["alive"]
    finally:
        part.proc.kill()
        part.proc.wait()


def test_housekeeping_task_that_ends_is_started_again(caplog):
    # An in-process loop that raises is restarted by the same supervisor, with its error logged.
    runs: list[int] = []

    async def loop() -> None:
        runs.append(1)
        if len(runs) == 1:
            raise RuntimeError("boom")
        await asyncio.sleep(60)

    async def scenario() -> None:
        part = TaskPart("housekeeping", loop)
        supervisor = Supervisor(Policy(first_delay=0.01), interval=0.01)
        part.start()
        supervisor.watch(part)
        while len(runs) < 2:
            await supervisor.look()
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        await supervisor.look()
        assert part.alive()
        await part.stop()

    caplog.set_level(logging.INFO, logger="gateway.supervisor")
    run_async(scenario())
    assert "housekeeping died (raised RuntimeError: boom)" in caplog.text

