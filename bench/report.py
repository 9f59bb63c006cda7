"""The benchmark's report: machine facts, the table of figures, the 25 MB line, results.json."""

from __future__ import annotations

import datetime as dt
import os
import platform
import sqlite3
import subprocess  # noqa: S404 (asks git which commit is measured)
from pathlib import Path

import gateway
from bench.databases import postgresql_version
from bench.mix import ROOT, Mix

COLUMNS = ("db", "clients", "accepted/s", "bare/s", "ratio", "processed/s", "p50 ms", "p99 ms",
           "bare p99", "peak RSS MB", "correct")
WIDTHS = (10, 7, 10, 7, 5, 11, 6, 7, 8, 11, 7)


MEMORY_TARGET_X = 3  # a 25 MB mail: under 3 times its size over every process's peak (issue 14)

def machine_facts(mix: Mix) -> dict[str, object]:
    return {
        **host_facts(),
        "mix": {"n": mix.n, "seed": mix.manifest["seed"], "mb": round(mix.manifest["total_bytes"]
                                                                      / 1e6, 1),
                "sha256": mix.manifest["sha256_all"][:16], "counts": mix.manifest["counts"]},
    }


def host_facts() -> dict[str, object]:
    """The machine, the code measured and how busy the machine was: every benchmark's header."""
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "git": _git("describe", "--always", "--dirty", "--tags"),
        "commit": _git("rev-parse", "HEAD"),
        "code": str(Path(gateway.__file__).resolve().parent.parent),
        "nproc": len(os.sched_getaffinity(0)),
        "cpu": _cpu_model(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "postgresql": postgresql_version(),
    }


def header(facts: dict) -> str:
    mix = facts["mix"]
    return "\n".join([
        host_header(facts, "helpdesk gateway benchmark"),
        f"mix: {mix['n']} mails, {mix['mb']} MB, seed {mix['seed']}, sha256 {mix['sha256']} "
        f"({', '.join(f'{v} {k}' for k, v in mix['counts'].items())})",
    ])


def host_header(facts: dict, title: str) -> str:
    load = facts["load_average"]
    busy = " (BUSY: other work ran, figures are low)" if load[0] > 0.5 else ""
    return "\n".join([
        f"{title}, {facts['date']}, git {facts['git']} ({str(facts['commit'])[:12]})",
        f"machine: {facts['nproc']} CPUs ({facts['cpu']}), {facts['memory_gib']} GiB, "
        f"Python {facts['python']}, SQLite {facts['sqlite']}, PostgreSQL {facts['postgresql']}",
        f"load average before the run: {' '.join(f'{x:.2f}' for x in load)}{busy}",
    ])


def table(trials: list[dict]) -> str:
    lines = [_row(COLUMNS)]
    for trial in trials:
        lines.append(_row(_cells(trial)))
    return "\n".join(lines)


def _cells(trial: dict) -> tuple[str, ...]:
    db, clients = trial["db"], str(trial["clients"])
    gw, bare = trial.get("gateway"), trial.get("bare")
    if not gw or "send" not in gw:
        return (db, clients, "-", "-", "-", "-", "-", "-", "-", "-", "ERROR")
    send = gw["send"]
    bare_rate = bare["accepted_per_s"] if bare else None
    ratio = f"{send['accepted_per_s'] / bare_rate:.2f}" if bare_rate else "-"
    processed = f"{gw['processed_per_s']:.1f}"
    if gw["timed_out"]:
        processed += f"*{gw['processed']}"
    return (db, clients, f"{send['accepted_per_s']:.1f}",
            f"{bare_rate:.0f}" if bare_rate else "-", ratio, processed, _ms(send["p50_ms"]),
            _ms(send["p99_ms"]), _ms(bare["p99_ms"]) if bare else "-",
            f"{gw['peak_rss_kib'] / 1024:.0f}",
            "yes" if gw.get("correct") else "NO")


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _row(cells: tuple[str, ...]) -> str:
    first = f"{cells[0]:<{WIDTHS[0]}}"
    rest = "  ".join(f"{c:>{w}}" for c, w in zip(cells[1:], WIDTHS[1:], strict=True))
    return f"{first} {rest}"


def big_mail_line(big: dict) -> str:
    if "error" in big:
        return f"25 MB mail: ERROR {big['error']}"
    mb = big["mail_bytes"] / 1e6
    verdict = "under" if big["growth_x_mail"] < MEMORY_TARGET_X else "OVER"
    return (
        f"25 MB mail ({mb:.1f} MB, `helpdesk serve` subprocess, SQLite): "
        f"{'accepted' if big['accepted'] else 'REFUSED ' + big['smtp_reply'][0]} in "
        f"{big['accept_seconds']:.2f} s (DATA reply {big['data_latency_ms']} ms), "
        f"{'processed' if big['processed'] else 'NOT processed'} after "
        f"{big['process_seconds']:.2f} s ({big['outcome']}); RSS {big['rss_before_kib'] / 1024:.0f}"
        f" MB before, peak {big['peak_rss_kib'] / 1024:.0f} MB (while receiving "
        f"{big['peak_rss_receiving_kib'] / 1024:.0f} MB): +{big['growth_kib'] / 1024:.0f} MB = "
        f"{big['growth_x_mail']:.1f}x the mail size ({verdict} the {MEMORY_TARGET_X}x target; "
        f"summed peaks of each process, an upper bound); resident at once, sampled every 5 ms: "
        f"+{(big['sampled_peak_kib'] - big['rss_before_kib']) / 1024:.0f} MB = "
        f"{big['sampled_growth_x_mail']:.1f}x{_by_process(big)}"
    )


def _by_process(big: dict) -> str:
    """Which process the mail cost what: the serve process (its SMTP edge) and the child that
    grew the most (the ingest worker that parsed it)."""
    each = big.get("growth_each_kib") or {}
    serve = [kib for name, kib in each.items() if name.startswith("serve")]
    children = [kib for name, kib in each.items() if not name.startswith("serve")]
    if not serve or not children:
        return ""
    return (f"; SMTP process +{serve[0] / 1024:.1f} MB, the child that grew most (the ingest "
            f"worker) +{max(children) / 1024:.1f} MB")


NOTES = (
    "accepted/s: mails / (first MAIL to last 250), N clients each on one connection, mails split "
    "round-robin.\n"
    "bare/s: the same mails and clients against a bare aiosmtpd server that only counts; "
    "ratio = gateway/bare.\n"
    "processed/s: mails / (first MAIL until every inbound row is processed), polled every 50 ms; "
    "'*N': timed out with N processed.\n"
    "p50/p99 ms: DATA latency, from the client's final '.' to the server's 250 (for a large mail "
    "it includes the server's reading of what the client's socket still held); bare p99: the "
    "same for the bare server, the floor the clients and this machine set.\n"
    "peak RSS: VmHWM of the trial's own process (gateway service in a thread; one fresh process "
    "per row), plus that of any child process the gateway started; the clients run in a process "
    "of their own, not counted.\n"
    "correct: tickets created, thread entries, replies onto the seed tickets and stored file "
    "attachments equal the manifest's, and every mail done."
)


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,  # noqa: S603, S607
                              timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.machine()
