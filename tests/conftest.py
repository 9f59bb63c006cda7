"""Real parts for the tests: SQLite and PostgreSQL databases, the gateway service, an SMTP sink.

Every database test runs twice, on a fresh SQLite file and on a fresh database of the local
PostgreSQL server (127.0.0.1:5432, the server of database ``test``). In CI (``CI=true``), a
missing real part fails the test instead of skipping it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import random
import shutil
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import psycopg
import pytest
from aiosmtpd.controller import Controller
from sqlalchemy.engine import Engine

from gateway.service import Service, build
from gateway.settings import Settings
from storage.db import make_engine
from storage.directory import add_application, add_contact, add_organization
from storage.migrate import upgrade

ROOT = Path(__file__).resolve().parent.parent
MAILS = ROOT / "fixtures" / "mails"
CORPUS = ROOT.parent / "shared" / "corpus"
PG_DSN = os.environ.get("HELPDESK_TEST_PG", "host=127.0.0.1 port=5432 user=postgres dbname=test")
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}

PASSWORD = "correct horse battery"


def missing_part(reason: str) -> None:
    """A real part is not there: fail in CI, skip on a developer's machine."""
    if IN_CI:
        pytest.fail(f"real part missing in CI: {reason}")
    pytest.skip(reason)


def load_mail(name: str) -> bytes:
    return (MAILS / name).read_bytes()


def parse_mail(raw: bytes) -> EmailMessage:
    msg = message_from_bytes(raw, policy=policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def wait_for(predicate: Callable[[], object], timeout: float = 30.0, interval: float = 0.05):
    """Poll until ``predicate`` returns something truthy; return it, or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout}s")
        time.sleep(interval)


# --------------------------------------------------------------------------- databases


# Migrating a database and hashing the directory's passwords cost about half a second a test.
# Both are done once per session into templates (a SQLite file; a PostgreSQL database), which
# each test copies: empty for tests that only want a URL, migrated for ``engine``, migrated and
# filled for ``directory``. The templates are made by the same code as before: Alembic
# migrations and the storage.directory functions.
TEMPLATE_LEVELS = ("empty", "schema", "directory")


def fill_directory(engine: Engine) -> None:
    """Two client organizations with contacts, and applications."""
    add_organization(engine, code="C0001", tax_id="B12345678", name="Ferretería López S.L.",
                     domains=["ferreteria-lopez.es"])
    add_contact(engine, organization_code="C0001", name="María García",
                email="maria.garcia@ferreteria-lopez.es", password=PASSWORD, is_manager=True)
    add_contact(engine, organization_code="C0001", name="José Fernández",
                email="jose.fernandez@ferreteria-lopez.es", password=PASSWORD)
    add_organization(engine, code="C0002", tax_id="A87654321", name="Clínica Dental Sur",
                     domains=["clinicadental-sur.com"])
    add_contact(engine, organization_code="C0002", name="Lucía Martín",
                email="lucia.martin@clinicadental-sur.com", password=PASSWORD, language="en")
    add_application(engine, "ERP Clave")


def _fill(url: str, level: str) -> None:
    if level == "empty":
        return
    upgrade(url)
    engine = make_engine(url)
    try:
        if level == "directory":
            fill_directory(engine)
        if url.startswith("sqlite"):
            with engine.connect() as conn:  # everything into the main file, nothing in the WAL
                conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        engine.dispose()


@pytest.fixture(scope="session")
def sqlite_templates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("templates")
    files = {}
    for level in TEMPLATE_LEVELS[1:]:
        files[level] = folder / f"{level}.db"
        _fill(f"sqlite:///{files[level]}", level)
    return files


def _pg_admin() -> psycopg.Connection:
    try:
        return psycopg.connect(PG_DSN, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        missing_part(f"PostgreSQL not reachable at {PG_DSN}: {exc}")
        raise


def _pg_url(name: str) -> str:
    info = psycopg.conninfo.conninfo_to_dict(PG_DSN)
    user, host = info.get("user", "postgres"), info.get("host", "127.0.0.1")
    return f"postgresql+psycopg://{user}@{host}:{info.get('port', 5432)}/{name}"


@pytest.fixture(scope="session")
def pg_templates() -> Iterator[dict[str, str]]:
    tag = uuid.uuid4().hex[:8]
    names = {level: f"tpl_{level}_{tag}" for level in TEMPLATE_LEVELS[1:]}
    with _pg_admin() as admin:
        try:
            for level, name in names.items():
                admin.execute(f'CREATE DATABASE "{name}"')
                _fill(_pg_url(name), level)
            yield names
        finally:
            for name in names.values():
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _level(request: pytest.FixtureRequest) -> str:
    wanted = set(request.fixturenames)
    return "directory" if "directory" in wanted else "schema" if "engine" in wanted else "empty"


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database of its own for the test: a SQLite file, or a PostgreSQL database."""
    level = _level(request)
    if request.param == "sqlite":
        path = tmp_path / "helpdesk.db"
        if level != "empty":
            shutil.copyfile(request.getfixturevalue("sqlite_templates")[level], path)
        yield f"sqlite:///{path}"
        return
    template = "template0" if level == "empty" else request.getfixturevalue("pg_templates")[level]
    name = f"t_{uuid.uuid4().hex[:12]}"
    with _pg_admin() as admin:
        admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}" STRATEGY WAL_LOG')
        try:
            yield _pg_url(name)
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')



@contextlib.contextmanager
def held(db_url: str, postgresql_lock: str) -> Iterator[object]:
    """Another connection in the way while this lasts: on SQLite it holds the write lock, on
    PostgreSQL it runs ``postgresql_lock`` (a LOCK or a SELECT ... FOR UPDATE) in an open
    transaction. Yields that connection."""
    if db_url.startswith("sqlite"):
        holder = sqlite3.connect(db_url.removeprefix("sqlite:///"), isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
    else:
        holder = psycopg.connect(db_url.replace("postgresql+psycopg", "postgresql"))
        holder.execute(postgresql_lock)
    try:
        yield holder
    finally:
        holder.rollback()
        holder.close()


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    """An engine on the test's migrated database."""
    engine = make_engine(db_url)
    yield engine
    engine.dispose()


@pytest.fixture
def directory(engine: Engine) -> Engine:
    """The engine on a database holding two organizations, their contacts, and an application
    (``fill_directory``)."""
    return engine


# --------------------------------------------------------------------------- settings


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> Settings:
    env = {
        "HELPDESK_VAR_DIR": str(tmp_path / "var"),
        "HELPDESK_DATABASE_URL": db_url,
        "HELPDESK_SMTP_PORT": "0",
        "HELPDESK_WEB_PORT": "0",
        "HELPDESK_WEB_PROCESSES": "1",
        "HELPDESK_SUPPORT_ADDRESS": "soporte@example.com",
        "HELPDESK_SECRET_KEY": "test-secret-key-not-for-production",
        "HELPDESK_WORKER_POLL_SECONDS": "0.2",
    }
    return Settings.from_env(env)


# --------------------------------------------------------------------------- SMTP sink


class SinkHandler:
    """A relay that keeps what it receives; ``refuse`` makes it answer a chosen error."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], bytes]] = []
        self.refuse: str | None = None
        self.lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        if self.refuse:
            return self.refuse
        with self.lock:
            self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return "250 2.0.0 OK"


@pytest.fixture
def smtp_sink() -> Iterator[tuple[SinkHandler, int]]:
    handler = SinkHandler()
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        yield handler, controller.port
    finally:
        controller.stop()


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A loopback port nothing listens on, for a server a test starts a moment later.

    Not one the kernel picks (``bind(0)``): those come from the ephemeral range, the same range
    outgoing connections take their source ports from, so another connection could take the port
    between this call and the server's ``listen`` (seen in CI: Dovecot's "Address already in
    use"). Ports below that range are only ever taken by a listener, and each is handed out once
    per test run.
    """
    low, _high = _ephemeral_range()
    top = low if 21000 < low <= 32768 else 32768
    for _attempt in range(200):
        port = random.randrange(20000, top)
        if port in _HANDED_OUT:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port
    raise RuntimeError("no free loopback port between 20000 and the ephemeral range")


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


# --------------------------------------------------------------------------- the gateway


class RunningService:
    """The gateway service on its own event loop in a background thread."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.service = Service(settings)

    def __enter__(self) -> RunningService:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.service.start(), self.loop).result(30)
        return self

    def __exit__(self, *exc_info: object) -> None:
        asyncio.run_coroutine_threadsafe(self.service.stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    @property
    def smtp_port(self) -> int:
        return self.service.smtp_port

    @property
    def web_url(self) -> str:
        return f"http://127.0.0.1:{self.service.web_port}"


@pytest.fixture
def gateway(settings: Settings, directory: Engine, smtp_sink) -> Iterator[RunningService]:
    """The whole gateway, with the SMTP sink as its outbound relay."""
    _handler, port = smtp_sink
    relayed = dataclasses.replace(settings, relay_host="127.0.0.1", relay_port=port)
    with RunningService(relayed) as running:
        yield running


@pytest.fixture
def parts(settings: Settings, directory: Engine):
    """The gateway's parts without servers, for tests that drive ingest and sending directly."""
    built = build(settings, directory)
    return built


# --------------------------------------------------------------------------- browser

CHROMIUM = os.environ.get("HELPDESK_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="session")
def browser():
    """Debian's Chromium driven by Playwright (no downloaded browser)."""
    if not Path(CHROMIUM).exists():
        missing_part(f"Chromium not found at {CHROMIUM} (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


# --------------------------------------------------------------------------- IMAP (Dovecot)


@pytest.fixture
def dovecot(request: pytest.FixtureRequest):
    """A fresh real Dovecot (IMAP + STARTTLS, IMAPS, XOAUTH2) on loopback ports; see dovecot.py.

    Parametrized indirectly, the parameter is the capability list it advertises after login.
    """
    from tests.dovecot import DOVECOT, Dovecot

    if not Path(DOVECOT).exists():
        missing_part(f"Dovecot not found at {DOVECOT} (apt-get install dovecot-imapd)")
    server = Dovecot(capabilities=getattr(request, "param", "")).start()
    try:
        yield server
    finally:
        server.stop()


def run_async(coroutine, timeout: float = 120):
    """Run a coroutine on an event loop of its own thread: the main thread may hold Playwright's
    loop (the session-wide browser), where asyncio.run cannot start another."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result(timeout)


def deliver(parts) -> int:
    """Run the outbox sender once."""
    return run_async(parts.sender.deliver_due())
