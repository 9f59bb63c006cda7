"""A bare Starlette route returning one fixed page, served as the gateway serves its web site.

    python -m bench.bare_web --bytes 40000 [--port 0]

The web benchmark's yardstick (bench.web): the same uvicorn settings as ``gateway.service`` (one
process, asyncio, ``log_level="warning"``, no access log, no lifespan, a socket bound first by the
gateway's own ``bind``, so that a change to the gateway's socket options applies here too), the
same Starlette, a plain ``def`` handler run in Starlette's thread pool as the gateway's pages are,
and an HTML page of the size of the ticket list. It only skips the work being measured: the
session cookie, the database, the templates. Prints ``bare web http://HOST:PORT/`` once serving.
"""

from __future__ import annotations

import argparse
import asyncio

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from gateway.channels.smtp_server import bind

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
    def fixed(request: Request) -> Response:  # plain def: the thread pool, as the gateway's pages
        return HTMLResponse(page)

    return Starlette(routes=[Route("/", fixed)])


async def serve(app: Starlette, host: str, port: int) -> None:
    sock = bind(host, port)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.01)
        if task.done():
            task.result()
    print(f"bare web http://{host}:{sock.getsockname()[1]}/", flush=True)
    await task


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bytes", type=int, default=40_000, help="page size (default 40000)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (default)")
    args = parser.parse_args(argv)
    asyncio.run(serve(create_app(fixed_page(args.bytes)), args.host, args.port))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
