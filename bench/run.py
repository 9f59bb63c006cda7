"""Run the benchmark (`make bench`): the standard mix through the gateway on SQLite and PostgreSQL.

    python -m bench.run [--n 1000] [--db sqlite,postgresql] [--clients 1,8] [--timeout 100]
                        [--no-big] [--out var/bench]

For each database and number of clients, one fresh process (``bench.trial``) migrates a fresh
database, registers the mix's senders, starts the gateway in a thread, ingests the seed mails,
then times the 1000 measured mails over SMTP against the gateway and against a bare aiosmtpd
server. Then one 25 MB mail goes to a `helpdesk serve` subprocess for its memory cost. The figures
are printed as a table (ready to paste into README.md) and written to OUT/results.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess  # noqa: S404 (each trial runs in a fresh process)
import sys
import tempfile
import time
from pathlib import Path

from bench import report
from bench.bigmail import run_big_mail
from bench.databases import PG_URL, fresh_database
from bench.mix import GENERATOR, ROOT, ensure_mix

DATABASES = ("sqlite", "postgresql")


def _list(kind: type, allowed: tuple[str, ...] | None = None):  # type: ignore[no-untyped-def]
    def parse(value: str) -> list:
        items = [kind(v.strip()) for v in value.split(",") if v.strip()]
        if allowed and any(i not in allowed for i in items):
            raise argparse.ArgumentTypeError(f"choose from {', '.join(allowed)}")
        return items
    return parse


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="mails in the mix (default 1000)")
    parser.add_argument("--seed", type=int, default=42, help="seed of the mix (default 42)")
    parser.add_argument("--db", type=_list(str, DATABASES), default=list(DATABASES),
                        help="databases, comma-separated (default sqlite,postgresql)")
    parser.add_argument("--clients", type=_list(int), default=[1, 8],
                        help="concurrent SMTP clients, comma-separated (default 1,8)")
    parser.add_argument("--timeout", type=float, default=100.0,
                        help="cap in seconds on each timed phase; the seed and bare phases get a "
                             "third of it (default 100)")
    parser.add_argument("--no-big", action="store_true", help="skip the 25 MB mail test")
    parser.add_argument("--pg", default=PG_URL, help=f"PostgreSQL server (default {PG_URL})")
    parser.add_argument("--out", type=Path, default=ROOT / "var" / "bench")
    parser.add_argument("--generator", type=Path, default=GENERATOR,
                        help="the shared mail generator (default ../shared/bench/gen_mails.py)")
    args = parser.parse_args(argv)

    started = time.monotonic()
    args.out.mkdir(parents=True, exist_ok=True)
    mix = ensure_mix(args.n, args.seed, args.out / f"mix-{args.n}-seed{args.seed}",
                     args.generator)
    facts = report.machine_facts(mix)
    print(report.header(facts), flush=True)

    trials = []
    for db in args.db:
        for clients in args.clients:
            print(f"{db}, {clients} client(s):", flush=True)
            trials.append(run_trial(db, clients, mix.root, args))

    big: dict = {}
    if not args.no_big:
        print("25 MB mail:", flush=True)
        workdir = Path(tempfile.mkdtemp(prefix="helpdesk-bench-big-"))
        try:
            big = run_big_mail(mix, workdir, timeout=max(args.timeout, 60))
        except Exception as exc:  # reported in the table, never silently dropped
            big = {"error": f"{type(exc).__name__}: {exc}"}
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    text = "\n".join([report.header(facts), "", report.table(trials)]
                     + ([report.big_mail_line(big)] if big else []))
    print(f"\n{text}\n\n{report.NOTES}")
    for trial in trials:
        gw = trial.get("gateway", {})
        verdict = gw.get("verdict") or trial.get("error", "no result")
        print(f"{trial['db']} x{trial['clients']}: {verdict}")
        if "counts" in gw:
            sent = gw["counts"]["notifications"]
            print(f"  notifications sent by the end: {sent.get('sent', 0)} of {sum(sent.values())}"
                  f"; gateway processes: {gw.get('processes', 1)}")
    elapsed = time.monotonic() - started
    print(f"\nfinished in {elapsed:.0f} s; figures in {args.out / 'results.json'}")
    (args.out / "results.json").write_text(json.dumps(
        {"facts": facts, "table": text, "trials": trials, "big_mail": big,
         "seconds": round(elapsed, 1)}, indent=1, ensure_ascii=False))
    ok = all(t.get("gateway", {}).get("correct") for t in trials)
    return 0 if ok and "error" not in big else 1


def run_trial(db: str, clients: int, mix_dir: Path, args: argparse.Namespace) -> dict:
    workdir = Path(tempfile.mkdtemp(prefix=f"helpdesk-bench-{db}-"))
    out = workdir / "trial.json"
    limit = args.timeout * 5 / 3 + 120  # the three phases' caps plus setup
    result: dict = {"db": db, "clients": clients}
    try:
        with fresh_database(db, workdir, args.pg) as url:
            command = [sys.executable, "-m", "bench.trial", "--db-label", db, "--database-url",
                       url, "--workdir", str(workdir), "--mix", str(mix_dir), "--clients",
                       str(clients), "--timeout", str(args.timeout), "--out", str(out)]
            try:
                subprocess.run(command, cwd=ROOT, timeout=limit, check=False)  # noqa: S603
            except subprocess.TimeoutExpired:
                result["error"] = f"trial killed after {limit:.0f} s"
            if out.exists():
                result = {**result, **json.loads(out.read_text())}
            elif "error" not in result:
                result["error"] = "trial wrote no result"
    except Exception as exc:  # e.g. PostgreSQL not reachable: say so in the table
        result["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if "error" in result:
        print(f"  ERROR: {result['error']}", flush=True)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
