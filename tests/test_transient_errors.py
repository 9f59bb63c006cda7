"""Temporary errors are not verdicts: a full disk or a database that went away delays mail, the
mail is tried again by itself, and the outage is logged once, not once a second."""

from __future__ import annotations

import contextlib
import dataclasses
import email.policy
import os
import re
import smtplib
import subprocess
import time
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import make_url
from sqlmodel import Session, select

from storage import inbound
from storage.blobs import BlobStore
from storage.models import Attachment, InboundMessage, utcnow
from tests.conftest import PASSWORD, RunningService, missing_part, wait_for
from tests.gateway_process import GatewayProcess
from tests.tcp_proxy import TcpProxy
from tests.test_process_safety import request_message

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def mail_with_pdf(n: int, size: int = 300_000) -> bytes:
    msg = request_message(n, "disk")
    pdf = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n" + os.urandom(size) + b"\n%%EOF\n"
    msg.add_attachment(pdf, maintype="application", subtype="pdf", filename=f"factura-{n}.pdf")
    return msg.as_bytes(policy=email.policy.SMTP)  # CRLF line ends, as on the wire


def smtp_answer(port: int, n: int) -> int:
    """The gateway's answer to a small mail."""
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=60) as client:
            client.sendmail("maria.garcia@ferreteria-lopez.es", ["soporte@example.com"],
                            mail_with_pdf(n, 1000))
        return 250
    except smtplib.SMTPResponseException as exc:
        return exc.smtp_code


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MB tmpfs, mounted for the test (the tests run as root, as CI does)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        missing_part(f"cannot mount a tmpfs for the full-disk test: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk) -> None:
    """Write a file until the disk is full."""
    with open(disk / "filler", "wb", buffering=0) as handle, contextlib.suppress(OSError):
        while True:
            handle.write(b"\0" * 4096)


def test_mails_stored_before_the_disk_filled_up_are_processed_once_space_returns(
        settings, directory, small_disk):
    # Four mails with a 300 KB PDF each were accepted (raw mails on disk) and then the disk
    # filled up: storing the attachments fails with "No space left on device". The mails wait
    # in the queue, tried again by themselves, none failed; a new mail gets 451 meanwhile. Once
    # space is back, all four become tickets with their PDFs, without any command.
    storage = small_disk / "storage"
    blobs = BlobStore(storage)
    ids = [inbound.enqueue(directory, blobs, mail_with_pdf(n), channel="smtp")
           for n in range(4)]
    fill(small_disk)

    def rows() -> list[InboundMessage]:
        with Session(directory) as session:
            return list(session.exec(select(InboundMessage).order_by(InboundMessage.id)).all())

    with RunningService(dataclasses.replace(settings, storage_dir=storage)) as gateway:
        # Each is back in the queue between its tries (a look may meet one being tried again:
        # "processing" for the moment of a try, then queued again, never failed).
        wait_for(lambda: all(r.failing_since is not None and r.state == "queued"
                             for r in rows()), timeout=60)
        assert all("No space left on device" in r.error for r in rows())
        assert not [r for r in rows() if r.state in {"failed", "done"}]
        assert smtp_answer(gateway.smtp_port, 9) == 451
        (small_disk / "filler").unlink()
        wait_for(lambda: {r.state for r in rows()} == {"done"}, timeout=120)
    assert [r.id for r in rows()] == ids
    assert {r.outcome for r in rows()} == {"created"}
    assert all(r.error is None and r.failing_since is None for r in rows())
    with Session(directory) as session:
        files = session.exec(select(Attachment)).all()
    assert sorted(f.filename for f in files) == [f"factura-{n}.pdf" for n in range(4)]
    assert all(f.accepted and blobs.exists(f.storage_key) for f in files)


def test_retry_waits_double_and_the_mail_fails_only_after_the_retry_time():
    # A mail meeting a temporary error waits as long as it has been failing (1 s, 1 s, 2 s,
    # 4 s ... at most 5 minutes) and is kept as failed only once that has lasted longer than
    # the retry time.
    row = InboundMessage(channel="smtp", raw_key="k" * 64, raw_sha256="k" * 64, size=1,
                         state="processing", attempts=1)
    start = utcnow()
    now, waits = start, []
    while inbound.retry_later(row, "OSError: [Errno 28] No space left on device",
                              timedelta(hours=1), now=now):
        assert (row.state, row.attempts, row.failing_since) == ("queued", 0, start)
        waits.append((row.next_attempt_at - now).total_seconds())
        now = row.next_attempt_at
    assert waits[:6] == [1, 1, 2, 4, 8, 16]
    assert max(waits) == 300 and waits == sorted(waits)
    assert now - start > timedelta(hours=1)


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_database_outage_is_logged_once_and_pages_and_smtp_say_so(db_url, directory, tmp_path):
    # The database goes away for a few seconds (connections reset, new ones refused) while
    # customers log in and mail arrives: the login page answers 503 with a page that says so,
    # SMTP answers 451, each process logs the outage once and its end once, with no traceback;
    # afterwards logging in and mail work again without a restart.
    url = make_url(db_url)
    proxy = TcpProxy(url.host, url.port).start()
    proxied = url.set(port=proxy.port).render_as_string(hide_password=False)
    gateway = GatewayProcess(proxied, tmp_path / "var")
    try:
        gateway.start()
        with httpx.Client(base_url=f"http://127.0.0.1:{gateway.web_port}", timeout=30) as web:
            token = CSRF.search(web.get("/login").text)[1]
            login = {"email": "maria.garcia@ferreteria-lopez.es", "password": PASSWORD,
                     "csrf_token": token}
            proxy.cut()
            answers = []
            for _ in range(8):
                answers.append(web.post("/login", data=login))
                time.sleep(0.5)
            assert {a.status_code for a in answers} == {503}, gateway.log()
            assert "Servicio no disponible" in answers[0].text
            assert answers[0].headers["retry-after"] == "30"
            assert smtp_answer(gateway.smtp_port, 1) == 451
            proxy.restore()
            wait_for(lambda: web.post("/login", data=login).status_code == 303, timeout=60,
                     interval=1)
            assert smtp_answer(gateway.smtp_port, 2) == 250
            # The worker and the sender reach the database again too, and say so.
            wait_for(lambda: gateway.log().count("database available again")
                     == gateway.log().count("database unavailable"), timeout=30)
    finally:
        gateway.stop()
        proxy.close()
    log = gateway.log()
    assert "Traceback" not in log
    # Once per process that met it (SMTP, ingest worker, sender, web), however long it lasts.
    assert 1 <= log.count("database unavailable") <= 4
