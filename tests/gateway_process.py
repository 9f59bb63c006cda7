"""A gateway run as its own OS process (`helpdesk serve`), for tests that kill or multiply it."""

from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

HELPDESK = str(Path(sys.executable).parent / "helpdesk")


class GatewayProcess:
    def __init__(self, db_url: str, var_dir: Path, **env: str) -> None:
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("HELPDESK_")}
        self.env.update({"HELPDESK_DATABASE_URL": db_url, "HELPDESK_VAR_DIR": str(var_dir),
                         # serve refuses a short or published key (a fresh one per gateway),
                         # and judges senders only where a test asks for it.
                         "HELPDESK_SECRET_KEY": secrets.token_urlsafe(32),
                         "HELPDESK_SENDER_AUTH": "off", "HELPDESK_SMTP_PORT": "0",
                         "HELPDESK_WEB_PORT": "0", "HELPDESK_WORKER_POLL_SECONDS": "0.2",
                         "HELPDESK_WEB_PROCESSES": "1", **env})
        self.lines: list[str] = []
        self.proc: subprocess.Popen[str] | None = None
        self.smtp_port = 0
        self.web_port = 0

    def start(self, timeout: float = 30) -> GatewayProcess:
        self.proc = subprocess.Popen([HELPDESK, "serve"], env=self.env, text=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        reader = threading.Thread(target=self._read, args=(self.proc,), daemon=True)
        reader.start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if found := re.search(r"SMTP\s+\S+:(\d+)", line):
                    self.smtp_port = int(found.group(1))
                if found := re.search(r"web\s+http://\S+:(\d+)/", line):
                    self.web_port = int(found.group(1))
            if self.smtp_port and self.web_port:
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError("gateway did not start:\n" + "".join(self.lines))

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self.lines.append(line)
        proc.stdout.close()

    def processed_ids(self) -> set[int]:
        """Queue ids this process's ingest worker finished (from its log)."""
        return {int(m.group(1)) for line in self.lines
                if (m := re.search(r"gateway\.ingest: inbound (\d+) (?!retry)", line))}

    def pids(self, part: str) -> list[int]:
        """The process ids a worker part had, oldest first ("ingest worker 0", "sender")."""
        pattern = re.compile(rf"gateway\.worker: {re.escape(part)} started \(pid (\d+)\)")
        return [int(m.group(1)) for line in self.lines if (m := pattern.search(line))]

    def log(self) -> str:
        return "".join(self.lines)

    def kill(self) -> None:
        """SIGKILL: no clean-up at all, as in a crash or an OOM kill."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
