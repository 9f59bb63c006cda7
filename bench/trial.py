"""One benchmark trial, in its own process: the mix through the gateway, then through a bare server.

    python -m bench.trial --db-label sqlite --database-url URL --workdir DIR --mix DIR \
        --clients 8 --timeout 100 --out trial.json

Steps: migrate the empty database, register the mix's senders, start the real gateway service
on its own event loop in a thread (as tests/conftest.py's RunningService), ingest the seed mails
untimed, then send the measured mails over SMTP (the clients in a process of their own:
bench.clients.send_apart) and poll the inbound queue until every one is processed (or the timeout
passes), count what the ingest produced, and compare with the manifest. Last, a bare aiosmtpd
server that only counts receives the same mails with the same clients. The run's own process is
fresh, so its peak RSS is the gateway's (plus the peaks of its child processes).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from aiosmtpd.controller import Controller
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, func, select

from bench import memory
from bench.clients import SendResult, send_all, send_apart
from bench.mix import Mix, load_mix, register_directory
from gateway.service import Service, settle_serve_process
from gateway.settings import Settings
from storage.db import make_engine
from storage.migrate import upgrade
from storage.models import Attachment, InboundMessage, Message, Notification, Ticket

log = logging.getLogger("bench.trial")

POLL_SECONDS = 0.05
SMTP_MAX_SIZE = 25 * 1024 * 1024


class GatewayThread:
    """The gateway service on its own event loop in a background thread."""

    def __init__(self, settings: Settings) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="gateway", daemon=True)
        self.service = Service(settings)

    def start(self) -> int:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.service.start(), self.loop).result(60)
        settle_serve_process()  # as `helpdesk serve` does once started
        return self.service.smtp_port

    def stop(self) -> None:
        try:
            asyncio.run_coroutine_threadsafe(self.service.stop(), self.loop).result(30)
        except Exception:  # a stuck worker must not hang the benchmark; the process ends soon
            log.exception("gateway did not stop cleanly")
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


class CountingHandler:
    """The bare server's whole application: count the mail, answer 250."""

    def __init__(self) -> None:
        self.count = 0

    async def handle_DATA(self, server, session, envelope) -> str:  # noqa: N802 (aiosmtpd hook)
        self.count += 1
        return "250 2.0.0 OK"


FINAL_STATES = ("done", "failed")  # anything else (queued, leased...) is still to be processed



def gateway_env(workdir: Path, url: str, support_address: str) -> dict[str, str]:
    """The settings of a benchmarked gateway: its own folder and database, free ports."""
    return {
        "HELPDESK_VAR_DIR": str(workdir / "var"),
        "HELPDESK_DATABASE_URL": url,
        "HELPDESK_SMTP_PORT": "0",
        "HELPDESK_WEB_PORT": "0",
        "HELPDESK_SUPPORT_ADDRESS": support_address,
        "HELPDESK_SECRET_KEY": "bench-secret-key-not-for-production",
        "HELPDESK_WORKER_POLL_SECONDS": "0.05",
        # The mix's domains are made up: no DNS to judge senders by (figures stay comparable
        # with earlier versions; the cost of judging senders is not part of them).
        "HELPDESK_SENDER_AUTH": "off",
    }

def processed_count(engine: Engine, after_id: int) -> int:
    with Session(engine) as session:
        query = select(func.count()).select_from(InboundMessage).where(
            col(InboundMessage.id) > after_id, col(InboundMessage.state).in_(FINAL_STATES))
        return int(session.exec(query).one())


def last_inbound_id(engine: Engine) -> int:
    with Session(engine) as session:
        return int(session.exec(select(func.max(InboundMessage.id))).one() or 0)


def wait_processed(engine: Engine, after_id: int, target: Callable[[], int],
                   deadline: float) -> tuple[int, float]:
    """Poll every 50 ms until ``target()`` rows after ``after_id`` are done (or failed).

    Returns (rows processed, perf_counter when that was seen, or when the deadline passed).
    ``target`` is read each time: refused mails never get a row, so it may shrink.
    """
    while True:
        count = processed_count(engine, after_id)
        now = time.perf_counter()
        if count >= target() or now > deadline:
            return count, now
        time.sleep(POLL_SECONDS)


def tally(engine: Engine, after_id: int) -> dict[str, object]:
    """What the ingest made of the measured mails (inbound rows after ``after_id``)."""
    timed = col(InboundMessage.id) > after_id
    with Session(engine) as session:
        outcomes = dict(session.exec(
            select(InboundMessage.outcome, func.count()).where(timed)
            .group_by(InboundMessage.outcome)).all())
        states = dict(session.exec(
            select(InboundMessage.state, func.count()).where(timed)
            .group_by(InboundMessage.state)).all())
        seed_tickets = select(InboundMessage.ticket_id).where(
            col(InboundMessage.id) <= after_id, col(InboundMessage.ticket_id).is_not(None))
        onto_seed = session.exec(select(func.count()).select_from(InboundMessage).where(
            timed, col(InboundMessage.outcome) == "threaded",
            col(InboundMessage.ticket_id).in_(seed_tickets))).one()
        entries = session.exec(select(func.count()).select_from(Message).where(
            col(Message.inbound_id) > after_id)).one()
        files = dict(session.exec(
            select(Attachment.accepted, func.count())
            .join(Message, col(Message.id) == col(Attachment.message_id))
            .where(col(Message.inbound_id) > after_id)
            .group_by(Attachment.accepted)).all())
        tickets = session.exec(select(func.count()).select_from(Ticket)).one()
        notifications = dict(session.exec(
            select(Notification.state, func.count()).group_by(Notification.state)).all())
        reasons = dict(session.exec(
            select(InboundMessage.reason, func.count())
            .where(timed, col(InboundMessage.outcome) != "created",
                   col(InboundMessage.outcome) != "threaded")
            .group_by(InboundMessage.reason).limit(5)).all())
        errors = list(session.exec(
            select(InboundMessage.error).where(timed, col(InboundMessage.error).is_not(None))
            .limit(3)).all())
    return {
        "tickets_created": int(outcomes.get("created", 0)),
        "followups_created": int(entries),
        "followups_on_seeded_tickets": int(onto_seed),
        "file_attachments": int(files.get(True, 0)),
        "refused_attachments": int(files.get(False, 0)),
        "outcomes": {str(k): int(v) for k, v in outcomes.items()},
        "states": {str(k): int(v) for k, v in states.items()},
        "tickets_total": int(tickets),
        "notifications": {str(k): int(v) for k, v in notifications.items()},
        "other_reasons": {str(k): int(v) for k, v in reasons.items()},
        "errors": [str(e)[:300] for e in errors],
    }


def verdict(counts: dict[str, object], expected: dict[str, int], n: int) -> tuple[bool, str]:
    """CORRECT only if every expected figure matches and every mail was processed as done."""
    keys = ("tickets_created", "followups_created", "followups_on_seeded_tickets",
            "file_attachments")
    states = counts["states"]
    assert isinstance(states, dict)
    done = int(states.get("done", 0))
    ok = done == n and all(counts[k] == expected[k] for k in keys)
    parts = [f"{k}={counts[k]}/{expected[k]}" for k in keys] + [f"done={done}/{n}"]
    return ok, ("CORRECT" if ok else "INCORRECT") + ": " + ", ".join(parts)


def send_summary(result: SendResult) -> dict[str, object]:
    return {
        "sent": result.sent,
        "refused": [asdict(r) for r in result.refused[:10]],
        "refused_count": len(result.refused),
        "not_sent": result.not_sent,
        "errors": list(result.errors[:10]),
        "seconds": round(result.elapsed, 3),
        "accepted_per_s": round(result.rate, 2),
        "p50_ms": _round(result.percentile_ms(0.50)),
        "p99_ms": _round(result.percentile_ms(0.99)),
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def run_gateway(mix: Mix, url: str, workdir: Path, clients: int, timeout: float) -> dict:
    started = time.perf_counter()
    upgrade(url)
    engine = make_engine(url)
    directory = register_directory(engine, mix)
    gateway = GatewayThread(Settings.from_env(gateway_env(workdir, url, mix.to)))
    port = gateway.start()
    result: dict = {"directory": directory}
    try:
        # Seed: the earlier mails the replies answer, untimed.
        seed_deadline = time.perf_counter() + timeout / 3
        seeded = send_all("127.0.0.1", port, list(mix.seeds), mix.to, 2, deadline=seed_deadline)
        seed_done, _ = wait_processed(engine, 0, lambda: seeded.sent, seed_deadline)
        after_id = last_inbound_id(engine)
        result["seed"] = {"sent": seeded.sent, "processed": seed_done,
                          "errors": list(seeded.errors[:5]),
                          "outcomes": tally(engine, 0)["outcomes"]}
        result["setup_seconds"] = round(time.perf_counter() - started, 2)
        print(f"  seeded {seed_done}/{len(mix.seeds)} in {result['setup_seconds']} s "
              f"(with migration and {directory['contacts']} contacts)", flush=True)
        result["rss_before_kib"] = memory.tree().rss_kib

        # Timed: the measured mails, polled until all processed.
        deadline = time.perf_counter() + timeout
        box: dict[str, SendResult] = {}
        sending = threading.Thread(target=lambda: box.setdefault("r", send_apart(
            "127.0.0.1", port, list(mix.mails), mix.to, clients, deadline=deadline)))
        sending.start()
        count, seen_at = wait_processed(
            engine, after_id, lambda: box["r"].sent if "r" in box else mix.n, deadline)
        sending.join(max(deadline - time.perf_counter(), 0) + 130)
        sent = box.get("r")
        if sent is None:
            raise RuntimeError("SMTP clients did not finish")
        timed_out = count < sent.sent or sent.not_sent > 0
        processing = max(seen_at - sent.first_mail, 1e-9)
        result["send"] = send_summary(sent)
        result["processed"] = count
        result["processing_seconds"] = round(processing, 3)
        result["processed_per_s"] = round(count / processing, 2)
        result["timed_out"] = timed_out
        # Before the stop: a gateway's worker processes, if it has any, are still there.
        peak = memory.tree()
        result.update(peak_rss_kib=peak.peak_kib, peak_rss_own_kib=peak.own_peak_kib,
                      processes=peak.processes, peaks_kib=list(peak.peaks_kib))
    finally:
        gateway.stop()
    counts = tally(engine, after_id)
    ok, line = verdict(counts, mix.expected, mix.n)
    result.update(counts=counts, correct=ok, verdict=line)
    engine.dispose()
    return result


def run_bare(mix: Mix, clients: int, timeout: float) -> dict:
    handler = CountingHandler()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(handler, hostname="127.0.0.1", port=port,
                            data_size_limit=SMTP_MAX_SIZE, enable_SMTPUTF8=True)
    controller.start()
    try:
        sent = send_apart("127.0.0.1", port, list(mix.mails), mix.to, clients,
                        deadline=time.perf_counter() + timeout)
    finally:
        controller.stop()
    return {**send_summary(sent), "counted": handler.count}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db-label", required=True)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--mix", type=Path, required=True)
    parser.add_argument("--clients", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=100.0,
                        help="cap on the timed phase; seeding and the bare run get a third")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    mix = load_mix(args.mix)
    result: dict = {"db": args.db_label, "clients": args.clients, "n": mix.n}
    try:
        result["gateway"] = run_gateway(mix, args.database_url, args.workdir, args.clients,
                                        args.timeout)
        print(f"  {result['gateway']['verdict']}", flush=True)
        result["bare"] = run_bare(mix, args.clients, args.timeout / 3)
    except Exception as exc:
        log.exception("trial failed")
        result["error"] = f"{type(exc).__name__}: {exc}"
    args.out.write_text(json.dumps(result, indent=1, ensure_ascii=False))
    sys.stdout.flush()
    sys.stderr.flush()
    # Worker threads of a stuck gateway must not keep the process alive, nor its worker
    # processes outlive it.
    for pid in memory.descendants(os.getpid()):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGTERM)
    os._exit(0 if "error" not in result else 1)


if __name__ == "__main__":
    raise SystemExit(main())
