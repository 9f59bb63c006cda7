"""SMTP load: N client connections send a list of mails round-robin, timing each DATA reply.

Each client is a thread with one smtplib connection, opened before the clock starts. The DATA
latency of a mail is the time from the moment the client has written the final "." (RFC 5321
§4.1.1.4) until the server's reply: what the server spends before acknowledging the mail.

``send_apart`` runs the same clients in a process of their own, as real clients are: threads
in the server's process would share its interpreter lock, and a client's turn to read its
reply would count as the server's latency. (time.perf_counter is the system's monotonic clock
on Linux, the same in every process, so its readings compare across the two.)
"""

from __future__ import annotations

import multiprocessing
import re
import smtplib
import statistics
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from bench.mix import envelope_sender

_LINE_END = re.compile(rb"\r\n|\n|\r")
_LEADING_DOT = re.compile(rb"^\.", re.MULTILINE)


@dataclass(frozen=True)
class Refusal:
    mail: str
    code: int
    reply: str


@dataclass(frozen=True)
class SendResult:
    clients: int
    sent: int  # mails whose DATA got a 250
    refused: tuple[Refusal, ...]
    not_sent: int  # mails never tried: a client failed or the deadline passed
    errors: tuple[str, ...]
    latencies: tuple[float, ...]  # seconds, one per accepted mail
    first_mail: float  # time.perf_counter() at the first MAIL command
    last_reply: float  # time.perf_counter() at the last 250

    @property
    def elapsed(self) -> float:
        return max(self.last_reply - self.first_mail, 1e-9)

    @property
    def rate(self) -> float:
        return self.sent / self.elapsed

    def percentile_ms(self, q: float) -> float | None:
        if not self.latencies:
            return None
        if len(self.latencies) == 1:
            return self.latencies[0] * 1000
        cuts = statistics.quantiles(self.latencies, n=1000, method="inclusive")
        return cuts[min(int(q * 1000) - 1, len(cuts) - 1)] * 1000


def wire_form(raw: bytes) -> bytes:
    """The DATA payload as sent: CRLF line ends, leading dots doubled, the final "."."""
    data = _LEADING_DOT.sub(b"..", _LINE_END.sub(b"\r\n", raw))
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    return data + b".\r\n"


@dataclass
class _Client:
    mails: list[Path]
    latencies: list[float] = field(default_factory=list)
    refused: list[Refusal] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    first_mail: float | None = None
    last_reply: float | None = None
    sent: int = 0
    tried: int = 0


def send_all(host: str, port: int, mails: list[Path], rcpt: str, clients: int, *,
             deadline: float, timeout: float = 120.0) -> SendResult:
    """Send ``mails`` over ``clients`` connections (mail i goes to client i mod N).

    ``deadline`` is a time.perf_counter() value after which no further mail is started.
    """
    workers = [_Client(mails[i::clients]) for i in range(clients)]
    workers = [w for w in workers if w.mails]
    ready = threading.Barrier(len(workers))
    threads = [threading.Thread(target=_run_client, args=(w, host, port, rcpt, ready, deadline,
                                                          timeout), daemon=True)
               for w in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max(deadline - time.perf_counter(), 0) + timeout + 5)
    firsts = [w.first_mail for w in workers if w.first_mail is not None]
    lasts = [w.last_reply for w in workers if w.last_reply is not None]
    errors = [e for w in workers for e in w.errors]
    errors += [f"client {i} still running at the deadline" for i, t in enumerate(threads)
               if t.is_alive()]
    return SendResult(
        clients=clients,
        sent=sum(w.sent for w in workers),
        refused=tuple(r for w in workers for r in w.refused),
        not_sent=len(mails) - sum(w.tried for w in workers),
        errors=tuple(errors),
        latencies=tuple(x for w in workers for x in w.latencies),
        first_mail=min(firsts) if firsts else 0.0,
        last_reply=max(lasts) if lasts else 0.0,
    )


def send_apart(host: str, port: int, mails: list[Path], rcpt: str, clients: int, *,
               deadline: float, timeout: float = 120.0) -> SendResult:
    """``send_all`` in a new process (spawned: the caller's threads are not copied into it)."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(send_all, host, port, mails, rcpt, clients, deadline=deadline,
                           timeout=timeout).result()


def _run_client(worker: _Client, host: str, port: int, rcpt: str, ready: threading.Barrier,
                deadline: float, timeout: float) -> None:
    try:
        smtp = smtplib.SMTP(host, port, timeout=timeout)
        smtp.ehlo("bench.example.net")
    except (OSError, smtplib.SMTPException) as exc:
        worker.errors.append(f"connect: {type(exc).__name__}: {exc}")
        ready.abort()
        return
    try:
        ready.wait(timeout)
        for path in worker.mails:
            if time.perf_counter() > deadline:
                worker.errors.append("deadline passed: remaining mails not sent")
                break
            worker.tried += 1
            _send_one(smtp, worker, path, rcpt)
        smtp.quit()
    except (OSError, smtplib.SMTPException, threading.BrokenBarrierError) as exc:
        worker.errors.append(f"{type(exc).__name__}: {exc}")
        smtp.close()


def _send_one(smtp: smtplib.SMTP, worker: _Client, path: Path, rcpt: str) -> None:
    raw = path.read_bytes()
    payload = wire_form(raw)
    started = time.perf_counter()
    if worker.first_mail is None:
        worker.first_mail = started
    code, reply = smtp.mail(envelope_sender(raw))
    if code == 250:
        code, reply = smtp.rcpt(rcpt)
    if code == 250:
        # smtplib's data() without its own quoting: the payload is already in wire form.
        smtp.putcmd("data")
        code, reply = smtp.getreply()
    if code != 354:
        worker.refused.append(Refusal(path.name, code, reply.decode("utf-8", "replace")))
        smtp.rset()
        return
    smtp.send(payload)
    data_end = time.perf_counter()
    code, reply = smtp.getreply()
    replied = time.perf_counter()
    if code == 250:
        worker.sent += 1
        worker.latencies.append(replied - data_end)
        worker.last_reply = replied
    else:
        worker.refused.append(Refusal(path.name, code, reply.decode("utf-8", "replace")))
