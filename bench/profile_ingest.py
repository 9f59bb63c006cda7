"""Where the ingest time goes: cProfile of `helpdesk ingest`'s pipeline over the mix, in-process.

    python -m bench.profile_ingest [--n 200] [--db sqlite|postgresql] [--top 25]

The seed mails are ingested first (not profiled), then the measured mails go through
``gateway.inbound.batch.ingest`` as `helpdesk ingest FILE...` sends them, but without its pool
of processes, so that one profile sees every step: read and store, parse and check (prepare),
queue a batch (record), apply it. Once without the profiler (CPU time per mail) and once with
it on a second fresh database. Prints own time by area (mail-parser, libmagic, SQL, commits...),
the inclusive time of the main steps, and the top functions; keeps OUT/ingest.prof.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import shutil
import tempfile
import time
from pathlib import Path

from bench.databases import PG_URL, fresh_database
from bench.mix import GENERATOR, ROOT, Mix, ensure_mix, register_directory
from gateway.inbound import batch
from gateway.service import build
from gateway.settings import Settings
from storage.migrate import upgrade

# Own (exclusive) time, first matching rule wins: (area, text in file name, text in function).
AREAS: tuple[tuple[str, str, str], ...] = (
    ("SQLite COMMIT (WAL append + fsync, synchronous=FULL)", "~", "sqlite3.Connection' objects"),
    ("SQLite statements (C)", "~", "sqlite3."),
    ("PostgreSQL driver (psycopg, incl. server round trips)", "psycopg", ""),
    ("PostgreSQL driver (psycopg, incl. server round trips)", "~", "psycopg"),
    ("fsync (blob files and their directories)", "~", "posix.fsync"),
    ("libmagic (python-magic + ctypes)", "/magic/", ""),
    ("mail-parser (Python)", "/mailparser/", ""),
    ("stdlib email package (under mail-parser)", "/email/", ""),
    ("nh3 HTML sanitizing (Rust)", "~", "nh3"),
    ("SQLAlchemy / SQLModel (Python)", "/sqlalchemy/", ""),
    ("SQLAlchemy / SQLModel (Python)", "/sqlmodel/", ""),
    ("SQLAlchemy / SQLModel (Python)", "~", "sqlalchemy"),
    ("pydantic (model construction)", "pydantic", ""),
    ("pydantic (model construction)", "~", "pydantic"),
    ("sha256", "~", "hash"),
    ("base64 / quoted-printable decoding", "/base64.py", ""),
    ("base64 / quoted-printable decoding", "/quopri.py", ""),
    ("base64 / quoted-printable decoding", "~", "binascii"),
    ("regular expressions", "/re/", ""),
    ("regular expressions", "~", "re.Pattern"),
    ("regular expressions", "~", "_sre"),
    ("file reads and writes", "~", "_io."),
    ("file reads and writes", "~", "posix."),
    ("file reads and writes", "/tempfile.py", ""),
    ("file reads and writes", "/pathlib.py", ""),
    ("gateway/ and storage/ own code", "/gateway/", ""),
    ("gateway/ and storage/ own code", "/storage/", ""),
)

# Inclusive time of the ingest's steps: (label, text in file name, function name).
STEPS: tuple[tuple[str, str, str], ...] = (
    ("batch.ingest (everything)", "gateway/inbound/batch.py", "ingest"),
    ("batch.stage: read, store the raw mail, prepare", "gateway/inbound/batch.py", "stage"),
    ("inbound.record (a batch queued)", "storage/inbound.py", "record"),
    ("prepare: parse, check and store files (CPU part)", "gateway/inbound/prepare.py", "prepare"),
    ("Ingestor.apply: rules and storage, one transaction", "gateway/inbound/ingest.py", "apply"),
    ("parse: gateway.inbound.parse.parse", "gateway/inbound/parse.py", "parse"),
    ("  mailparser.parse_from_bytes", "mailparser/core.py", "parse_from_bytes"),
    ("  sanitize_html (nh3)", "gateway/inbound/parse.py", "sanitize_html"),
    ("quoted-history split (gateway.inbound.quotes)", "gateway/inbound/quotes.py", "split_reply"),
    ("rules (gateway/inbound/rules/*.check)", "gateway/inbound/rules/", "check"),
    ("attachments.check (libmagic)", "gateway/inbound/attachments.py", "check"),
    ("inbound.claim (duplicate check)", "storage/inbound.py", "claim"),
    ("storage.db.insert_now (ticket, history, message, queued mail)", "storage/db.py",
     "insert_now"),
    ("tickets.contact_by_email", "storage/tickets.py", "contact_by_email"),
    ("tickets.messages_from_since (flood count)", "storage/tickets.py", "messages_from_since"),
    ("correlate.clues", "gateway/correlate.py", "clues"),
    ("tickets.ticket_by_message_ids", "storage/tickets.py", "ticket_by_message_ids"),
    ("workflow.open_ticket", "gateway/workflow.py", "open_ticket"),
    ("BlobStore.get (raw mail read)", "storage/blobs.py", "get"),
    ("BlobStore.put (attachment writes + fsync)", "storage/blobs.py", "put"),
    ("Session.flush (INSERT/UPDATE statements)", "sqlalchemy/orm/session.py", "flush"),
    ("Session.commit (flush + COMMIT)", "sqlalchemy/orm/session.py", "commit"),
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--pg", default=PG_URL)
    parser.add_argument("--out", type=Path, default=ROOT / "var" / "bench")
    parser.add_argument("--generator", type=Path, default=GENERATOR)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    mix = ensure_mix(args.n, args.seed, args.out / f"mix-{args.n}-seed{args.seed}",
                     args.generator)

    wall, _ = ingest_run(mix, args, profile=False)
    print(f"{mix.n} mails on {args.db}: {wall:.2f} s of CPU without profiler, "
          f"{wall / mix.n * 1000:.1f} ms per mail (one process: no pool)")
    profiled_wall, profiler = ingest_run(mix, args, profile=True)
    assert profiler is not None
    stats = pstats.Stats(profiler)
    stats.dump_stats(args.out / "ingest.prof")
    print(f"with cProfile: {profiled_wall:.2f} s (profiler overhead inflates Python-heavy parts)\n")
    print_areas(stats, profiled_wall)
    print_steps(stats, profiled_wall)
    print(f"\ntop {args.top} functions by own time:")
    stats.sort_stats("tottime").print_stats(args.top)
    print(f"full profile: {args.out / 'ingest.prof'} (python -m pstats, or snakeviz)")
    return 0


def ingest_run(mix: Mix, args: argparse.Namespace,
               profile: bool) -> tuple[float, cProfile.Profile | None]:
    workdir = Path(tempfile.mkdtemp(prefix="helpdesk-bench-profile-"))
    try:
        with fresh_database(args.db, workdir, args.pg) as url:
            upgrade(url)
            settings = Settings.from_env({
                "HELPDESK_VAR_DIR": str(workdir / "var"),
                "HELPDESK_DATABASE_URL": url,
                "HELPDESK_SUPPORT_ADDRESS": mix.to,
                "HELPDESK_SECRET_KEY": "bench-secret-key-not-for-production",
            })
            parts = build(settings)
            register_directory(parts.engine, mix)
            list(batch.ingest(parts.ingestor, [(str(p), p) for p in mix.seeds], processes=0))
            sources = [(str(path), path) for path in mix.mails]
            profiler = cProfile.Profile() if profile else None
            started = time.process_time()
            if profiler:
                profiler.enable()
            outcomes = [result["outcome"] for _label, result in
                        batch.ingest(parts.ingestor, sources, processes=0)]
            if profiler:
                profiler.disable()
            wall = time.process_time() - started
            assert len(outcomes) == mix.n and "failed" not in outcomes, outcomes
            parts.engine.dispose()
            return wall, profiler
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def area_of(filename: str, function: str) -> str:
    for area, in_file, in_function in AREAS:
        if in_file in filename and in_function in function:
            return area
    return "other (Python and C)"


def print_areas(stats: pstats.Stats, wall: float) -> None:
    own: dict[str, float] = {}
    for (filename, _line, function), row in stats.stats.items():  # type: ignore[attr-defined]
        area = area_of(filename, function)
        own[area] = own.get(area, 0.0) + row[2]
    total = sum(own.values())
    print(f"own time by area (cProfile, {total:.2f} s in all):")
    for area, seconds in sorted(own.items(), key=lambda item: -item[1]):
        print(f"  {seconds:7.2f} s {seconds / total:6.1%}  {area}")


def print_steps(stats: pstats.Stats, wall: float) -> None:
    print("\ninclusive time of the ingest's steps (overlapping):")
    for label, in_file, name in STEPS:
        cumulative = sum(row[3] for (filename, _line, function), row in
                         stats.stats.items()  # type: ignore[attr-defined]
                         if function == name and in_file in filename)
        if cumulative:
            print(f"  {cumulative:7.2f} s {cumulative / wall:6.1%}  {label}")


if __name__ == "__main__":
    raise SystemExit(main())
