"""``/healthz``: can this gateway do its work? For a load balancer or a monitor.

200 with the checks when healthy; 503 with the reasons when not: the database cannot be
reached, the storage cannot be written (and fsync'd), or a queue holds a row waiting longer
than its limit (HELPDESK_HEALTH_INBOUND_MINUTES for mail not yet processed,
HELPDESK_HEALTH_OUTBOX_MINUTES for notifications not yet delivered).
"""

from __future__ import annotations

import os
import tempfile

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from storage import queues
from storage.faults import describe
from storage.models import InboundMessage, Notification, aware, utcnow


def healthz(request: Request) -> Response:  # plain def: the thread pool (it writes a file)
    settings, engine = request.app.state.settings, request.app.state.engine
    checks: dict[str, object] = {}
    reasons: list[str] = []
    try:
        with engine.connect() as connection:
            connection.exec_driver_sql("SELECT 1").scalar()
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = "unreachable"
        reasons.append(f"database unreachable: {describe(exc)}")
    try:
        _write_and_sync(settings.storage_dir)
        checks["storage"] = "ok"
    except OSError as exc:
        checks["storage"] = "not writable"
        reasons.append(f"storage not writable: {exc.strerror or exc}")
    if checks["database"] == "ok":
        now = utcnow()
        for name, queue, limit in (
                ("inbound", InboundMessage, settings.health_inbound_minutes),
                ("outbox", Notification, settings.health_outbox_minutes)):
            try:
                oldest = queues.oldest_waiting(engine, queue)
            except Exception as exc:
                reasons.append(f"{name} queue unreadable: {describe(exc)}")
                continue
            age = (now - aware(oldest)).total_seconds() if oldest else 0.0
            checks[f"{name}_oldest_waiting_seconds"] = round(age)
            if age > limit * 60:
                reasons.append(f"{name} queue: a row has waited {age / 60:.0f} minutes "
                               f"(limit {limit:g})")
    healthy = not reasons
    return JSONResponse({"status": "ok" if healthy else "unhealthy", "checks": checks,
                         "reasons": reasons}, status_code=200 if healthy else 503,
                        headers={"Cache-Control": "no-store"})


def _write_and_sync(directory: os.PathLike[str] | str) -> None:
    os.makedirs(directory, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=directory, prefix=".healthz-") as probe:
        probe.write(b"ok")
        probe.flush()
        os.fsync(probe.fileno())



