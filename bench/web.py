"""Web benchmark (`make bench`, last part): the customer area under 16 clients, vs a bare route.

    python -m bench.web [--db sqlite|postgresql|both] [--connections 16] [--seconds 8]
                        [--warmup 1] [--web-processes 2] [--tickets 10000]
                        [--messages 100000] [--client wrk|httpx] [--out var/bench]

Issue 9. For each database, a fresh one is migrated and loaded (bench.web_data: an organization
with 10,000 tickets and 100,000 messages, a second one with a few tickets, one 200 KB PDF), then
`helpdesk serve` runs it as production does (HELPDESK_WEB_PROCESSES web processes, 2 unless
--web-processes says otherwise). A contact logs in with httpx; wrk (bench.web_load) then loads,
from another process with 16 connections, the ticket lists, a ticket page and a file download
with that session, and a bare Starlette route (bench.bare_web: as many processes, served by the
same web.server code) returning a page of the list's size.
Targets: list p99 under 50 ms, list requests/s at least 0.30 of the bare route's. Prints a table
per database and writes OUT/web.json. About a minute per database.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

from bench import report, web_load, web_report, web_servers
from bench.databases import PG_URL, fresh_database
from bench.mix import ROOT
from bench.web_data import EMAIL, PASSWORD, Loaded, load
from gateway.sla_clocks import refresh_changed
from storage.db import make_engine
from storage.migrate import upgrade

DATABASES = ("sqlite", "postgresql")


@dataclass(frozen=True)
class Route:
    name: str
    path: str
    is_list: bool = False


def routes(data: Loaded) -> list[Route]:
    number = data.ticket_number
    return [
        Route("list completed", "/tickets?group=completed", is_list=True),
        Route("list completed p3", "/tickets?group=completed&page=3", is_list=True),
        Route("list open", "/tickets?group=open", is_list=True),
        Route("ticket page", f"/tickets/{number}"),
        Route("download", f"/tickets/{number}/files/{data.attachment_id}"),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", choices=[*DATABASES, "both"], default="both")
    parser.add_argument("--connections", type=int, default=16,
                        help="concurrent clients (default 16)")
    parser.add_argument("--seconds", type=int, default=8,
                        help="measured seconds per route (default 8)")
    parser.add_argument("--warmup", type=float, default=1.0,
                        help="seconds of sequential requests before each route (default 1)")
    parser.add_argument("--web-processes", type=int, default=2,
                        help="web processes of the gateway, and of the bare route (default 2)")
    parser.add_argument("--tickets", type=int, default=10_000)
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--client", choices=["wrk", "httpx"], default=web_load.default_client(),
                        help="load generator (default wrk if installed, else bench.http_load)")
    parser.add_argument("--pg", default=PG_URL, help=f"PostgreSQL server (default {PG_URL})")
    parser.add_argument("--out", type=Path, default=ROOT / "var" / "bench")
    args = parser.parse_args(argv)

    started = time.monotonic()
    facts = {**report.host_facts(), "client": args.client,
             "connections": args.connections, "web_processes": args.web_processes,
             "seconds": args.seconds, "warmup": args.warmup}
    print(web_report.header(facts), flush=True)
    results = [run_database(db, args) for db in (DATABASES if args.db == "both" else [args.db])]

    text = "\n\n".join([web_report.header(facts), *(web_report.table(r) for r in results)])
    print(f"\n{text}\n\n{web_report.NOTES}")
    elapsed = time.monotonic() - started
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"\nfinished in {elapsed:.0f} s; figures in {args.out / 'web.json'}")
    (args.out / "web.json").write_text(json.dumps(
        {"facts": facts, "table": text, "databases": results, "seconds": round(elapsed, 1)},
        indent=1, ensure_ascii=False))
    return 1 if any("error" in r for r in results) else 0


def run_database(db: str, args: argparse.Namespace) -> dict:
    print(f"{db}:", flush=True)
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix=f"helpdesk-bench-web-{db}-"))
    result: dict = {"db": db, "routes": []}
    try:
        with fresh_database(db, workdir, args.pg) as url:
            upgrade(url)
            engine = make_engine(url)
            try:
                data = load(engine, workdir / "storage", tickets=args.tickets,
                            messages=args.messages)
                # The SLA clocks of the loaded tickets, worked out before the gateway starts,
                # as a gateway that has been running has them: otherwise serve works out ten
                # thousand of them while the routes are measured.
                while refresh_changed(engine):
                    pass
            finally:
                engine.dispose()
            result["data"] = {**asdict(data), "load_seconds":
                              round(time.monotonic() - started, 1)}
            print(f"  loaded {data.tickets} tickets, {data.messages} messages in "
                  f"{result['data']['load_seconds']} s", flush=True)
            with web_servers.gateway(url, workdir / "var", workdir / "storage",
                                     args.web_processes) as port:
                measure(f"http://127.0.0.1:{port}", data, args, result)
    except Exception as exc:  # e.g. PostgreSQL not reachable: say so in the table
        result["error"] = f"{type(exc).__name__}: {exc}"
        print(f"  ERROR: {result['error']}", flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    result["seconds"] = round(time.monotonic() - started, 1)
    return result


def measure(base: str, data: Loaded, args: argparse.Namespace, result: dict) -> None:
    cookie = log_in(base)
    todo = routes(data)
    probes = {route.name: probe(base + route.path, cookie) for route in todo}
    list_bytes = probes[todo[0].name]["bytes"]
    with web_servers.bare(list_bytes, args.web_processes) as bare_port:
        bare_url = f"http://127.0.0.1:{bare_port}/"
        measured = [("bare page", bare_url, None, probe(bare_url, None), False)]
        measured += [(r.name, base + r.path, cookie, probes[r.name], r.is_list) for r in todo]
        for name, url, with_cookie, seen, is_list in measured:
            figures = web_load.run(url, cookie=with_cookie, connections=args.connections,
                                   seconds=args.seconds, warmup=args.warmup,
                                   client=args.client)
            result["routes"].append({"route": name, "url": url.removeprefix(base), **seen,
                                     "list": is_list, **figures.as_dict()})
            print(f"  {name}: {figures.rps:.1f}/s, p99 {figures.p99_ms} ms", flush=True)


def log_in(base: str) -> str:
    """Log the benchmark's contact in; the session cookie (``name=value``) for wrk."""
    with httpx.Client(base_url=base, timeout=30) as client:
        page = client.get("/login")
        token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
        if token is None:
            raise RuntimeError(f"no CSRF token on /login (status {page.status_code})")
        done = client.post("/login", data={"email": EMAIL, "password": PASSWORD,
                                           "csrf_token": token.group(1)})
        if done.status_code != 303:
            raise RuntimeError(f"login answered {done.status_code}, not 303")
        # The first page takes the "tickets to rate" reminder out of the session and adds the
        # page's CSRF token: the cookie after it is what every later request of a user sends.
        client.get("/tickets")
        return f"helpdesk_session={client.cookies['helpdesk_session']}"


def probe(url: str, cookie: str | None) -> dict:
    """One request before the load: its status and size, shown in the table."""
    headers = {"Cookie": cookie} if cookie else {}
    response = httpx.get(url, headers=headers, timeout=60)
    return {"status": response.status_code, "bytes": len(response.content)}


if __name__ == "__main__":
    raise SystemExit(main())
