"""The web benchmark's report: the machine header, a table per database, targets met or not."""

from __future__ import annotations

from bench import report

P99_TARGET_MS = 50.0
RATIO_TARGET = 0.30

COLUMNS = ("route", "status", "KB", "1 client ms", "requests", "req/s", "p50 ms", "p99 ms",
           "non-2xx", "vs bare", "targets (list: p99 < 50 ms, >= 0.30 of bare)")
WIDTHS = (18, 6, 7, 11, 8, 7, 7, 7, 7, 7, 0)
# Delayed ACK holds a small response's body this long when the server's socket has Nagle on.
DELAYED_ACK_MS = 35.0


def header(facts: dict) -> str:
    return "\n".join([
        report.host_header(facts, "helpdesk web benchmark"),
        f"client: {facts['client']}, {facts['connections']} connections for {facts['seconds']} s "
        f"per route, after {facts['warmup']:g} s of requests one at a time; server: "
        f"`helpdesk serve` with {facts['web_processes']} web process(es) (uvicorn), the bare route "
        f"in as many",
    ])


def table(result: dict) -> str:
    db = result["db"]
    data = result.get("data")
    if data is None:
        return f"{db}: ERROR {result.get('error', 'no result')}"
    groups = data["by_group"]
    lines = [f"{db}: {data['tickets']} tickets ({groups['open']} open, {groups['completed']} "
             f"completed in the first organization), {data['messages']} messages, "
             f"{data['attachments']} attachments; loaded in {data['load_seconds']} s, "
             f"whole database {result['seconds']} s",
             _row(COLUMNS)]
    bare = next((r for r in result["routes"] if r["route"] == "bare page"), None)
    for route in result["routes"]:
        lines.append(_row(_cells(route, bare)))
    if bare and bare["one_client_ms"] and bare["one_client_ms"] > DELAYED_ACK_MS:
        lines.append(f"NOTE: one request at a time, even the bare page takes "
                     f"{bare['one_client_ms']:.0f} ms: the web socket's small writes wait for "
                     f"the client's delayed ACK (Nagle on: no TCP_NODELAY), which also caps "
                     f"req/s at about connections / 40 ms.")
    if "error" in result:
        lines.append(f"ERROR {result['error']}")
    return "\n".join(lines)


def _cells(route: dict, bare: dict | None) -> tuple[str, ...]:
    ratio = route["rps"] / bare["rps"] if bare and bare["rps"] else None
    targets = ""
    if route["list"]:
        p99_met = route["p99_ms"] is not None and route["p99_ms"] < P99_TARGET_MS
        ratio_met = ratio is not None and ratio >= RATIO_TARGET
        targets = (f"p99 {'met' if p99_met else 'NOT met'}, "
                   f"ratio {'met' if ratio_met else 'NOT met'}")
    errors = f"+{route['errors']}err" if route["errors"] else ""
    return (route["route"], str(route["status"]), f"{route['bytes'] / 1000:.1f}",
            _ms(route["one_client_ms"]), str(route["requests"]), f"{route['rps']:.1f}",
            _ms(route["p50_ms"]), _ms(route["p99_ms"]), f"{route['non_2xx']}{errors}",
            f"{ratio:.2f}" if ratio is not None else "-", targets)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _row(cells: tuple[str, ...]) -> str:
    first = f"{cells[0]:<{WIDTHS[0]}}"
    rest = "  ".join(f"{c:>{w}}" for c, w in zip(cells[1:-1], WIDTHS[1:-1], strict=True))
    return f"{first} {rest}  {cells[-1]}".rstrip()


NOTES = (
    "status, KB: one request before the load (303 would mean the session was not accepted).\n"
    "1 client ms: median latency of the warm-up's requests, sent one at a time by one client.\n"
    "requests, req/s, p50/p99 ms: the client's (wrk --latency) over the measured seconds, every "
    "connection busy (latency includes the wait behind the other clients).\n"
    "non-2xx: responses of status 400 or more during the load (a route not written yet answers "
    "404); +Nerr: socket errors and timeouts (30 s).\n"
    "vs bare: req/s / the bare route's req/s (a plain Starlette `def` route returning a fixed page "
    "of the completed list's size, as many processes of its own as the gateway's web, served by "
    "the same code: web.server, on the event loop like the gateway's kept lists)."
)
