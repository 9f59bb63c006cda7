"""How a web process serves: uvicorn on a socket of its own bound to the shared web port.

``helpdesk serve`` starts HELPDESK_WEB_PROCESSES of them (gateway.worker.run_web), and the web
benchmark's bare route (bench.bare_web) is served by the same function, so that both always
run with the same settings. Each process listens on its own SO_REUSEPORT socket, and the kernel
spreads new connections evenly among them; a process serves until ``should_stop`` says so.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator

import uvicorn
from starlette.types import ASGIApp

from gateway.channels.smtp_server import bind
from gateway.collector import settled


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # Ctrl-C reaches the whole process group: the gateway decides when its web processes
        # stop (should_stop), not uvicorn's own signal handlers.
        yield


async def serve(app: ASGIApp, host: str, port: int, *, on_started: Callable[[], None],
                should_stop: Callable[[], bool], trusted_proxies: tuple[str, ...] = (),
                check_every: float = 0.2) -> None:
    """Serve ``app`` until ``should_stop``. ``X-Forwarded-For`` and ``-Proto`` are believed
    only from ``trusted_proxies`` (addresses or networks; uvicorn would trust 127.0.0.1 by
    default, so that anything on the machine could claim any address)."""
    sock = bind(host, port, share=True)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off",
                            timeout_graceful_shutdown=5, server_header=False,
                            proxy_headers=bool(trusted_proxies),
                            forwarded_allow_ips=list(trusted_proxies) or None)
    server = _Server(config)
    settled()  # (full collector passes would otherwise walk start-up's objects in requests)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.01)
        if task.done():
            task.result()  # why it could not start
    on_started()
    while not task.done():
        if should_stop():
            server.should_exit = True
        await asyncio.wait({task}, timeout=check_every)
    task.result()
