"""The 25 MB mail test: one large mail to a fresh `helpdesk serve` process, its memory measured.

The gateway runs as a subprocess so that its resident memory is its own. After a warm-up mail
(so that lazily loaded parts such as libmagic's database are in), its RSS is read, its peak is
reset (``/proc/PID/clear_refs``), the large mail is sent, and once it is processed the new peak
minus the RSS before is the memory that mail cost, reported as a multiple of the mail's size.
Child processes of the gateway (a parsing pool) are counted with it.
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess  # noqa: S404 (starts the gateway under test)
import sys
import threading
import time
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from pathlib import Path

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from bench import memory
from bench.clients import send_all
from bench.mix import ROOT, Mix, register_directory
from bench.trial import gateway_env, processed_count
from storage.db import make_engine
from storage.migrate import upgrade
from storage.models import Attachment, InboundMessage

TARGET_SIZE = 25_000_000  # bytes on the wire; the gateway's default limit is 25 MiB
SMALL_FILE = 4_800_000  # under the 5 MiB attachment limit: stored
BASE64_GROWTH = 4 / 3 * 78 / 76  # base64 plus CRLF every 76 characters
_PORT = re.compile(r"^\s*(SMTP|web)\s+\S*?:(\d+)")


def fake_pdf(rng: random.Random, size: int) -> bytes:
    head = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\nstream\n"
    tail = b"\nendstream\ntrailer\n<< /Root 1 0 R >>\n%%EOF\n"
    return head + rng.randbytes(size - len(head) - len(tail)) + tail


def build_big_mail(sender: str, name: str, to: str, target: int = TARGET_SIZE) -> bytes:
    """A request with two ~5 MB PDFs and one large one, about ``target`` bytes in all."""
    def build(large: int) -> bytes:
        rng = random.Random(25)
        mail = EmailMessage()
        mail["From"] = f"{name} <{sender}>"
        mail["To"] = f"Soporte <{to}>"
        mail["Subject"] = "Documentación completa del expediente de facturación"
        mail["Message-ID"] = "<bench-25mb-0001@bench.example.net>"
        mail["Date"] = "Mon, 03 Mar 2025 09:00:00 +0100"
        mail.set_content("Buenos días:\n\nLes adjunto toda la documentación del expediente.\n\n"
                         f"Un saludo,\n{name}\n")
        for number in (1, 2):
            mail.add_attachment(fake_pdf(rng, SMALL_FILE), maintype="application",
                                subtype="pdf", filename=f"expediente_parte_{number}.pdf")
        mail.add_attachment(fake_pdf(rng, large), maintype="application", subtype="pdf",
                            filename="expediente_completo_escaneado.pdf")
        return mail.as_bytes(policy=SMTP_POLICY)

    large = 8_000_000
    raw = build(large)
    large += int((target - len(raw)) / BASE64_GROWTH)
    return build(large)


def process_names(pids: tuple[int, ...]) -> dict[int, str]:
    """What each process of the gateway is: the ingest workers, the sender and the web
    processes are named by their multiprocessing role (spawned: their command line says)."""
    names = {}
    for pid in pids:
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        names[pid] = ("serve" if " serve" in command else "spawned" if "spawn" in command
                      else "other")
    return names


def _wait(predicate, timeout: float, interval: float = 0.05) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False


def run_big_mail(mix: Mix, workdir: Path, timeout: float = 120.0) -> dict:
    url = f"sqlite:///{workdir / 'helpdesk.db'}"
    upgrade(url)
    engine = make_engine(url)
    register_directory(engine, mix)
    person = next(c for c in mix.contacts if c["company"])
    raw = build_big_mail(person["email"], person["name"], mix.to)
    (workdir / "big.eml").write_bytes(raw)
    warmup = next(p for p, f in zip(mix.mails, mix.manifest["files"], strict=True)
                  if f["kind"] == "attach")

    env = {k: v for k, v in os.environ.items() if not k.startswith("HELPDESK_")}
    env.update(gateway_env(workdir, url, mix.to), PYTHONPATH=str(ROOT))
    with open(workdir / "gateway.log", "wb") as log_file:
        process = subprocess.Popen(  # noqa: S603 (this interpreter running the gateway's CLI)
            [sys.executable, "-m", "gateway.cli", "serve"], cwd=ROOT, env=env,
            stdout=subprocess.PIPE, stderr=log_file, text=True)
        try:
            return _measure(process, engine, workdir / "big.eml", warmup, mix.to, timeout)
        finally:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            engine.dispose()


def _measure(process: subprocess.Popen, engine: Engine, big: Path, warmup: Path, to: str,
             timeout: float) -> dict:
    ports: dict[str, int] = {}

    def read_banner() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            found = _PORT.match(line)
            if found:
                ports[found.group(1)] = int(found.group(2))

    threading.Thread(target=read_banner, daemon=True).start()
    if not _wait(lambda: "web" in ports or process.poll() is not None, 60):
        raise RuntimeError("the gateway printed no ports within 60 s")
    if "SMTP" not in ports:
        raise RuntimeError(f"the gateway exited with {process.returncode} before serving")
    port = ports["SMTP"]

    warm = send_all("127.0.0.1", port, [warmup], to, 1, deadline=time.perf_counter() + timeout)
    _wait(lambda: processed_count(engine, 0) >= warm.sent, timeout)
    time.sleep(1.0)  # the warm-up mail's notification goes out too
    start = memory.tree(process.pid)
    before = start.rss_kib
    reset = memory.reset_peaks(process.pid)

    samples: list[tuple[float, int]] = []
    sampling = threading.Event()

    def sample() -> None:  # RSS every 5 ms: which phase, receiving or ingesting, costs the most
        while not sampling.is_set():
            samples.append((time.perf_counter(), memory.tree(process.pid).rss_kib))
            time.sleep(0.005)

    threading.Thread(target=sample, daemon=True).start()
    started = time.perf_counter()
    sent = send_all("127.0.0.1", port, [big], to, 1, deadline=started + timeout, timeout=timeout)
    accepted = time.perf_counter()
    done = _wait(lambda: processed_count(engine, 0) >= warm.sent + sent.sent, timeout)
    processed = time.perf_counter()
    time.sleep(1.0)  # and its notification
    after = memory.tree(process.pid)
    sampling.set()
    receiving = max((rss for t, rss in samples if t <= accepted), default=before)
    # Summed per-process peaks (VmHWM) are an upper bound: the SMTP process peaks while receiving,
    # the worker later while parsing. The sampled tree RSS says what was resident at once.
    at_once = max((rss for _t, rss in samples), default=before)
    size = big.stat().st_size
    growth = after.peak_kib - before
    # Which process the mail cost what: its peak over its RSS before the mail.
    names = process_names(after.pids)
    rss_before = dict(zip(start.pids, start.rss_each_kib, strict=True))
    each = {f"{names.get(pid, '?')} {pid}": peak - rss_before.get(pid, 0)
            for pid, peak in zip(after.pids, after.peaks_kib, strict=True)}
    with Session(engine) as session:
        row = session.exec(select(InboundMessage).order_by(col(InboundMessage.id).desc())).first()
        files = session.exec(select(Attachment.filename, Attachment.size, Attachment.accepted,
                                    Attachment.reason)).all()
    return {
        "mail_bytes": size,
        "accepted": sent.sent == 1,
        "smtp_reply": [r.reply for r in sent.refused] or ["250"],
        "errors": list(sent.errors),
        "data_latency_ms": round(sent.latencies[0] * 1000, 1) if sent.latencies else None,
        "accept_seconds": round(accepted - started, 2),
        "processed": done,
        "process_seconds": round(processed - started, 2),
        "outcome": row.outcome if row else None,
        "attachments": [{"filename": f, "size": n, "accepted": a, "reason": r}
                        for f, n, a, r in files],
        "rss_before_kib": before,
        "peak_rss_kib": after.peak_kib,
        "processes": after.processes,
        "peaks_kib": list(after.peaks_kib),
        "peak_measured_from": "reset before the mail" if reset else "process start",
        "peak_rss_receiving_kib": receiving,
        "sampled_peak_kib": at_once,
        "sampled_growth_x_mail": round((at_once - before) * 1024 / size, 2),
        "growth_kib": growth,
        "growth_each_kib": each,
        "growth_x_mail": round(growth * 1024 / size, 2),
    }
