"""The servers the web benchmark loads, each its own process: `helpdesk serve`, bench.bare_web.

Both are started as context managers that read the port from the server's banner line and stop
the process whatever happens (SIGINT, as Ctrl-C would; after 20 s, SIGKILL to the process and
everything it started).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess  # noqa: S404 (the servers run as their own processes)
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

from bench.mix import ROOT

SECRET_KEY = "bench-secret-key-not-for-production"  # noqa: S105 (a throwaway gateway's)


@contextmanager
def running(command: list[str], banner: str, env: dict[str, str] | None = None,
            timeout: float = 60) -> Iterator[int]:
    """Start ``command``, yield the port its output's ``banner`` regex captures, then stop it."""
    lines: list[str] = []
    # A session of its own, so that whatever it started can be killed with it as a last resort.
    proc = subprocess.Popen(command, cwd=ROOT, env=env, text=True, start_new_session=True,  # noqa: S603
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    reader = threading.Thread(target=_read, args=(proc, lines), daemon=True)
    reader.start()
    try:
        yield _port(proc, lines, re.compile(banner), timeout)
    except BaseException:
        # What the server said last is usually why the measuring failed.
        sys.stderr.write("".join(["server output, last lines:\n", *lines[-40:]]))
        raise
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        reader.join(5)


def gateway(database_url: str, var_dir: Path, storage_dir: Path,
            web_processes: int) -> AbstractContextManager[int]:
    """`helpdesk serve` as production runs it, on free ports; yields the web port."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HELPDESK_")}
    env.update({"HELPDESK_DATABASE_URL": database_url, "HELPDESK_VAR_DIR": str(var_dir),
                "HELPDESK_STORAGE_DIR": str(storage_dir), "HELPDESK_SECRET_KEY": SECRET_KEY,
                "HELPDESK_SMTP_PORT": "0", "HELPDESK_WEB_PORT": "0",
                "HELPDESK_WEB_PROCESSES": str(web_processes), "HELPDESK_SENDER_AUTH": "off"})
    helpdesk = Path(sys.executable).parent / "helpdesk"
    command = [str(helpdesk)] if helpdesk.exists() else [sys.executable, "-m", "gateway.cli"]
    return running([*command, "serve"], r"web\s+http://\S+:(\d+)/", env)


def bare(page_bytes: int, processes: int) -> AbstractContextManager[int]:
    """bench.bare_web serving a page of ``page_bytes``; yields its port."""
    return running([sys.executable, "-m", "bench.bare_web", "--bytes", str(page_bytes),
                    "--processes", str(processes)],
                   r"bare web http://\S+:(\d+)/")


def _read(proc: subprocess.Popen[str], lines: list[str]) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line)


def _port(proc: subprocess.Popen[str], lines: list[str], banner: re.Pattern[str],
          timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in list(lines):
            if found := banner.search(line):
                return int(found.group(1))
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    raise RuntimeError(f"{proc.args[0]} did not start:\n" + "".join(lines[-30:]))
