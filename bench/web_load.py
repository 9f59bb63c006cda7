"""Load on one URL from a second process: wrk (or else bench.http_load) → requests/s, p50, p99.

First a warm-up of requests one after the other (caches, compiled templates), then the measured
wrk run with ``--latency``. The warm-up is sequential on purpose: when wrk stops, the requests it
had in flight go on in the server (Starlette does not cancel a handler running in its thread
pool), and a second wrk run would measure them too. The warm-up's first request waits behind
those of the previous route instead, and the next route starts on an idle server.

wrk's request timeout is 30 s, not its default 2 s, because wrk leaves a timed-out request out of
its latency figures: a slow page would otherwise look fast. Responses of status 400 and above
are counted as wrk counts them ("Non-2xx or 3xx responses"), never treated as a failure here.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import subprocess  # noqa: S404 (the load comes from another process)
import sys
import time
from dataclasses import asdict, dataclass, replace

import httpx

TIMEOUT_S = 30


@dataclass(frozen=True)
class Load:
    requests: int
    seconds: float
    rps: float
    p50_ms: float | None
    p99_ms: float | None
    non_2xx: int  # status 400 and above
    errors: int  # connect / read / write errors and timeouts
    one_client_ms: float | None = None  # median of the warm-up's requests, one at a time

    def as_dict(self) -> dict:
        return asdict(self)


def default_client() -> str:
    return "wrk" if shutil.which("wrk") else "httpx"


def run(url: str, *, cookie: str | None, connections: int, seconds: int, warmup: float,
        client: str = "wrk") -> Load:
    """The warm-up, then ``seconds`` (whole: wrk takes no fractions) of load from ``client``."""
    one_client_ms = warm(url, cookie, warmup)
    load = (_httpx if client == "httpx" else _wrk)(url, cookie, connections, seconds)
    return replace(load, one_client_ms=one_client_ms)


def warm(url: str, cookie: str | None, seconds: float) -> float:
    """Requests one after the other for ``seconds``, at least three; the median latency in ms
    of all but the first (which may have waited behind the previous route's requests)."""
    headers = {"Cookie": cookie} if cookie else {}
    started, latencies = time.monotonic(), []
    with httpx.Client(headers=headers, timeout=TIMEOUT_S * 4) as client:
        while len(latencies) < 3 or time.monotonic() - started < seconds:
            sent = time.perf_counter()
            client.get(url)
            latencies.append((time.perf_counter() - sent) * 1000)
    return statistics.median(latencies[1:])


def _httpx(url: str, cookie: str | None, connections: int, seconds: int) -> Load:
    command = [sys.executable, "-m", "bench.http_load", url, "--connections", str(connections),
               "--seconds", str(seconds)]
    if cookie:
        command += ["--cookie", cookie]
    done = subprocess.run(command, capture_output=True, text=True, check=True,  # noqa: S603
                          timeout=seconds + TIMEOUT_S + 30)
    return Load(**json.loads(done.stdout))


def _wrk(url: str, cookie: str | None, connections: int, seconds: int) -> Load:
    threads = max(1, min(connections, os.cpu_count() or 1, 4))
    command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency",
               f"--timeout={TIMEOUT_S}s"]
    if cookie:
        command += ["-H", f"Cookie: {cookie}"]
    done = subprocess.run([*command, url], capture_output=True, text=True, check=True,  # noqa: S603
                          timeout=seconds + TIMEOUT_S + 30)
    return parse_wrk(done.stdout)


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


def _ms(value: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)([a-z]+)", value).groups()  # type: ignore[union-attr]
    return float(number) * _UNITS[unit]


def parse_wrk(output: str) -> Load:
    """The figures of ``wrk --latency`` output."""
    def find(pattern: str) -> re.Match[str] | None:
        return re.search(pattern, output, re.MULTILINE)

    done = find(r"^\s*(\d+) requests in ([\d.]+)(\w+),")
    if done is None:
        raise ValueError(f"unexpected wrk output:\n{output}")
    seconds = _ms(done.group(2) + done.group(3)) / 1000
    p50, p99 = find(r"^\s+50%\s+(\S+)"), find(r"^\s+99%\s+(\S+)")
    non_2xx = find(r"Non-2xx or 3xx responses:\s+(\d+)")
    errors = find(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
    rps = find(r"^Requests/sec:\s+([\d.]+)")
    return Load(
        requests=int(done.group(1)), seconds=round(seconds, 2),
        rps=float(rps.group(1)) if rps else int(done.group(1)) / seconds,
        p50_ms=_ms(p50.group(1)) if p50 else None, p99_ms=_ms(p99.group(1)) if p99 else None,
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        errors=sum(int(g) for g in errors.groups()) if errors else 0,
    )
