"""The web benchmark's load without wrk: N httpx clients on one URL for S seconds, figures as JSON.

    python -m bench.http_load URL [--connections 16] [--seconds 8] [--cookie "name=value"]

Each client keeps one connection and sends its next request as soon as the previous one is
answered, as wrk does; prints one JSON object with the fields of ``bench.web_load.Load``. Python
is slower than wrk at this, so on a small machine it takes more of the server's CPU: wrk's figures
are the ones to compare across runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time

import httpx


async def _client(url: str, headers: dict[str, str], deadline: float,
                  latencies: list[float], statuses: list[int], errors: list[str]) -> None:
    async with httpx.AsyncClient(headers=headers, timeout=30,
                                 limits=httpx.Limits(max_connections=1)) as client:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            try:
                response = await client.get(url)
            except httpx.HTTPError as exc:
                errors.append(type(exc).__name__)
                continue
            latencies.append((time.perf_counter() - started) * 1000)
            statuses.append(response.status_code)


async def measure(url: str, connections: int, seconds: float, cookie: str | None) -> dict:
    headers = {"Cookie": cookie} if cookie else {}
    latencies: list[float] = []
    statuses: list[int] = []
    errors: list[str] = []
    started = time.perf_counter()
    await asyncio.gather(*(_client(url, headers, started + seconds, latencies, statuses, errors)
                           for _ in range(connections)))
    elapsed = time.perf_counter() - started
    cuts = statistics.quantiles(latencies, n=100, method="inclusive") if len(latencies) > 1 \
        else latencies * 99
    return {"requests": len(latencies), "seconds": round(elapsed, 2),
            "rps": len(latencies) / elapsed,
            "p50_ms": cuts[49] if cuts else None, "p99_ms": cuts[98] if cuts else None,
            "non_2xx": sum(1 for s in statuses if s >= 400), "errors": len(errors)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--cookie")
    args = parser.parse_args(argv)
    print(json.dumps(asyncio.run(measure(args.url, args.connections, args.seconds, args.cookie))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
