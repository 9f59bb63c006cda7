"""The `helpdesk` command, run as a user would: set-up commands, ingest --json, serve --demo."""

from __future__ import annotations

import json
import os
import re
import signal
import smtplib
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.conftest import MAILS, load_mail, wait_for

HELPDESK = str(Path(sys.executable).parent / "helpdesk")


def run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([HELPDESK, *args], env=env, capture_output=True, text=True, timeout=60,
                          check=False)


@pytest.fixture
def cli_env(tmp_path: Path, db_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HELPDESK_")}
    env.update(HELPDESK_VAR_DIR=str(tmp_path / "var"), HELPDESK_DATABASE_URL=db_url,
               HELPDESK_SECRET_KEY="cli-test-key")
    return env


def test_setup_commands_then_ingest_json(cli_env, tmp_path):
    # db upgrade, org add, contact add, then ingest --json prints one outcome line per file.
    assert run("db", "upgrade", env=cli_env).returncode == 0
    added = run("org", "add", "--code", "C0001", "--tax-id", "B12345678", "--name",
                "Ferretería López S.L.", "--domain", "ferreteria-lopez.es", env=cli_env)
    assert added.returncode == 0, added.stderr
    added = run("contact", "add", "--org", "C0001", "--name", "María García", "--email",
                "Maria.Garcia@ferreteria-lopez.es", env=cli_env)
    assert added.returncode == 0, added.stderr
    result = run("--storage", str(tmp_path / "blobs"), "ingest", "--json",
                 str(MAILS / "outlook-new-request-es.eml"),
                 str(MAILS / "unknown-sender-gmail-es.eml"), env=cli_env)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(x["outcome"], x["ticket"]) for x in lines] == [("created", 1001), ("rejected", None)]
    assert lines[0]["from"] == "maria.garcia@ferreteria-lopez.es"
    assert lines[0]["subject"] == "Error al generar la factura de noviembre"
    assert lines[1]["reason"] == "unknown sender"
    assert any((tmp_path / "blobs").rglob("*"))


def test_setup_errors_are_clear_messages_not_tracebacks(cli_env):
    # A contact for an organization that does not exist: exit 1 and one plain line.
    run("db", "upgrade", env=cli_env)
    result = run("contact", "add", "--org", "NOPE", "--name", "X", "--email", "x@y.es",
                 env=cli_env)
    assert result.returncode == 1
    assert "no organization with code NOPE" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_serve_demo_prints_ports_and_login_and_makes_tickets(cli_env, tmp_path):
    # What README promises for `make run`: ports and demo login printed (SMTP with STARTTLS,
    # its certificate made for the demo); a mail sent with smtplib becomes a ticket the demo
    # login sees, and the customer's mail lands in var/outbox.
    env = dict(cli_env, HELPDESK_SMTP_PORT="0", HELPDESK_WEB_PORT="0",
               HELPDESK_WORKER_POLL_SECONDS="0.2")
    proc = subprocess.Popen([HELPDESK, "serve", "--demo"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        banner = ""
        while "demo login" not in banner:
            line = proc.stdout.readline()
            assert line, f"serve exited early:\n{banner}"
            banner += line
        smtp_port = int(re.search(r"SMTP\s+127\.0\.0\.1:(\d+)", banner).group(1))
        # STARTTLS with the self-signed certificate the demo made in HELPDESK_VAR_DIR
        assert re.search(r"SMTP\s+127\.0\.0\.1:\d+ .* STARTTLS", banner)
        assert (tmp_path / "var" / "smtp-tls" / "cert.pem").exists()
        web_url = re.search(r"web\s+(http://\S+)/", banner).group(1)
        email, password = re.search(r"demo login: (\S+) / (\S+)", banner).groups()

        raw = load_mail("outlook-new-request-es.eml")
        with smtplib.SMTP("127.0.0.1", smtp_port, timeout=10) as client:
            client.sendmail("maria.garcia@ferreteria-lopez.es", ["soporte@example.com"], raw)
        outbox = tmp_path / "var" / "outbox"
        wait_for(lambda: list(outbox.glob("*.eml")), timeout=20)

        with httpx.Client(base_url=web_url, follow_redirects=True) as web:
            token = re.search(r'name="csrf_token" value="([^"]+)"', web.get("/login").text)
            page = web.post("/login", data={"email": email, "password": password,
                                            "csrf_token": token.group(1)})
        assert "#1001" in page.text
        assert "Error al generar la factura de noviembre" in page.text
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=20)
        proc.stdout.close()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize(("key", "words"), [
    (None, "HELPDESK_SECRET_KEY is not set"),
    ("short-key-1234", "HELPDESK_SECRET_KEY is too short (14 characters, at least 32)"),
    ("change-me-in-production", "an example published with the gateway"),
    ("CHANGE-ME-please-this-is-a-long-enough-key", "an example published with the gateway"),
])
def test_serve_refuses_a_missing_short_or_published_secret_key(cli_env, key, words):
    env = {k: v for k, v in cli_env.items() if k != "HELPDESK_SECRET_KEY"}
    if key is not None:
        env["HELPDESK_SECRET_KEY"] = key
    result = subprocess.run([HELPDESK, "serve"], env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 1
    assert words in result.stderr
    assert "secrets.token_urlsafe(48)" in result.stderr and "Traceback" not in result.stderr


def test_the_container_image_and_compose_file_ship_no_demo_and_no_key():
    root = Path(__file__).resolve().parent.parent
    dockerfile = (root / "Dockerfile").read_text()
    compose = (root / "docker-compose.yml").read_text()
    command = next(line for line in dockerfile.splitlines() if line.startswith("CMD"))
    assert "helpdesk serve" in command and "--demo" not in command
    (secret,) = re.findall(r"HELPDESK_SECRET_KEY: (.+)", compose)
    assert secret.startswith("${HELPDESK_SECRET_KEY:?")  # required, no fallback value
