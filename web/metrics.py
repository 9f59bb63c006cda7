"""``/metrics`` in Prometheus's text format (prometheus-client).

Two kinds of figures. What the database knows is read from it at each scrape, so it is right
whatever process or machine did the work: mails by channel and outcome, queue depths and ages,
notifications by state and their send delays. What only a web process sees (HTTP requests by
route and status with their durations, login failures and throttling) is counted in each web
process and added up by prometheus-client's multiprocess mode: ``helpdesk serve`` gives its web
processes a directory of their own (``PROMETHEUS_MULTIPROC_DIR``, set before prometheus-client
is imported, in gateway.worker.run_web).

Readable from the machine itself (loopback), and from elsewhere only with
``Authorization: Bearer <HELPDESK_METRICS_TOKEN>``; anybody else gets 404.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy.engine import Engine
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from storage import queues
from storage.models import InboundMessage, Notification, aware, utcnow

HTTP_REQUESTS = Histogram("helpdesk_http_request_duration_seconds",
                          "Customer-area requests by route, method and status, and how long "
                          "they took", ["route", "method", "status"])
LOGIN_FAILURES = Counter("helpdesk_login_failures_total", "Wrong email or password at login")
THROTTLED = Counter("helpdesk_throttled_total", "Attempts told to wait, by form", ["form"])


class HttpMetrics:
    """Times every request and counts it by its route's path (not the URL: ticket numbers
    and tokens would make a series each)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._series: dict[tuple[str, str, int], Any] = {}  # labels() once per series

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status = time.perf_counter(), 500

        async def send_timed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_timed)
        finally:
            route = scope.get("route")
            key = (getattr(route, "path", None) or "unmatched", scope["method"], status)
            series = self._series.get(key)
            if series is None:
                series = self._series[key] = HTTP_REQUESTS.labels(key[0], key[1], str(status))
            series.observe(time.perf_counter() - started)


class DatabaseFigures(Collector):
    """The figures the database holds, read at each scrape."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def collect(self) -> Iterator[Metric]:
        now = utcnow()
        mails = CounterMetricFamily("helpdesk_inbound_mails", "Mails taken in, by channel and "
                                    "outcome (or state, while not processed)",
                                    labels=["channel", "outcome"])
        for (channel, outcome), count in sorted(queues.inbound_outcomes(self.engine).items()):
            mails.add_metric([channel, outcome], count)
        yield mails
        for name, queue in (("inbound", InboundMessage), ("outbox", Notification)):
            counts = queues.counts(self.engine, queue)
            depth = GaugeMetricFamily(f"helpdesk_{name}_rows", f"Rows of the {name} queue by "
                                      "state", labels=["state"])
            for state, count in sorted(counts.items()):
                depth.add_metric([state], count)
            yield depth
            oldest = queues.oldest_waiting(self.engine, queue)
            yield GaugeMetricFamily(
                f"helpdesk_{name}_oldest_waiting_seconds",
                f"Age of the oldest row of the {name} queue not done yet (0: none)",
                value=(now - aware(oldest)).total_seconds() if oldest else 0.0)
        delays = queues.send_delays(self.engine, now - timedelta(hours=1))
        latency = GaugeMetricFamily("helpdesk_notification_send_seconds",
                                    "Seconds from queued to delivered, notifications delivered "
                                    "in the last hour", labels=["quantile"])
        for quantile in (0.5, 0.9, 0.99):
            value = delays[min(len(delays) - 1, int(quantile * len(delays)))] if delays else 0
            latency.add_metric([str(quantile)], value)
        yield latency



def exposition(engine: Engine) -> bytes:
    database = CollectorRegistry()
    database.register(DatabaseFigures(engine))
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        processes = CollectorRegistry()
        multiprocess.MultiProcessCollector(processes)
        return generate_latest(processes) + generate_latest(database)
    return generate_latest(REGISTRY) + generate_latest(database)


def may_read(request: Request) -> bool:
    token = str(request.app.state.settings.metrics_token)
    given = request.headers.get("authorization", "")
    if token and hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
        return True
    try:
        return ipaddress.ip_address(request.client.host if request.client else "").is_loopback
    except ValueError:
        return False


def metrics_page(request: Request) -> Response:
    if not may_read(request):
        return request.app.state.pages.render(request, "error.html", {"error": "not_found"},
                                              status_code=404)
    return Response(exposition(request.app.state.engine), media_type=CONTENT_TYPE_LATEST,
                    headers={"Cache-Control": "no-store"})
