"""A bare Starlette route returning one fixed page, served as the gateway serves its web site.

    python -m bench.bare_web --bytes 40000 [--port 0] [--processes 2]

The web benchmark's yardstick (bench.web): served by the gateway's own ``web.server.serve`` (the
same uvicorn settings, SO_REUSEPORT sockets from the gateway's ``bind``, so that a change to
either applies here too) in as many processes as the gateway's web has, the same Starlette, a
handler run on the event loop as the gateway's ticket list is when it is kept
(``web.tickets.list_page``), and an HTML page of the size of the ticket list. It only skips the work
being measured: the session cookie, the database, the templates. Prints
``bare web http://HOST:PORT/`` once every process serves.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import signal
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from gateway.channels.smtp_server import bind
from web.server import serve

ROW = ('<tr><td><a href="/tickets/{n}">#{n}</a></td><td>No puedo imprimir las facturas</td>'
       '<td><span class="status status-closed">Cerrado</span></td>'
       '<td>12/03/2025 10:41</td><td>14/03/2025 09:02</td></tr>\n')


def fixed_page(size: int) -> bytes:
    """An HTML page of list rows, ``size`` bytes give or take one row."""
    head = (b'<!doctype html>\n<html lang="es"><head><title>Mis tickets</title></head>'
            b"<body>\n<table>\n")
    tail = b"</table>\n</body></html>\n"
    rows, length, n = [], len(head) + len(tail), 1001
    while length < size:
        rows.append(ROW.format(n=n).encode())
        length += len(rows[-1])
        n += 1
    return head + b"".join(rows) + tail


def create_app(page: bytes) -> Starlette:
    async def fixed(request: Request) -> Response:  # on the loop, as the gateway's list
        return HTMLResponse(page)

    return Starlette(routes=[Route("/", fixed)])


def run_process(page: bytes, host: str, port: int, started: Any, parent: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops its processes
    asyncio.run(serve(create_app(page), host, port, on_started=started.release,
                      should_stop=lambda: os.getppid() != parent))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bytes", type=int, default=40_000, help="page size (default 40000)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (default)")
    parser.add_argument("--processes", type=int, default=1, help="web processes (default 1)")
    args = parser.parse_args(argv)
    page = fixed_page(args.bytes)
    held = bind(args.host, args.port, listen=False, share=True)  # reserves the port
    port = held.getsockname()[1]
    context = multiprocessing.get_context("spawn")
    started = context.Semaphore(0)
    processes = [context.Process(target=run_process, daemon=True,
                                 args=(page, args.host, port, started, os.getpid()))
                 for _ in range(args.processes)]
    for process in processes:
        process.start()
    for _ in processes:
        if not started.acquire(timeout=60):
            raise SystemExit("bare web processes did not start")
    print(f"bare web http://{args.host}:{port}/", flush=True)
    try:
        for process in processes:
            process.join()
    except KeyboardInterrupt:
        for process in processes:
            process.terminate()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
