"""The web site's own processes (HELPDESK_WEB_PROCESSES): supervised like the workers, a killed
one is replaced while the others keep serving; the connection their pages read the signed-in
contact on comes back after the database dropped it; rendered lists kept in a bounded LRU."""

from __future__ import annotations

import os
import re
import signal

import httpx
from markupsafe import Markup
from sqlalchemy import Integer, bindparam, select, text

from storage.db import LoopReads, make_engine
from tests.conftest import wait_for
from tests.gateway_process import GatewayProcess
from web.fragments import Fragments


def test_a_killed_web_process_is_replaced_and_the_site_keeps_answering(db_url, directory,
                                                                       tmp_path):
    gateway = GatewayProcess(db_url, tmp_path / "var", HELPDESK_WEB_PROCESSES="2").start()
    try:
        first = {part: gateway.pids(part) for part in ("web process 0", "web process 1")}
        assert all(len(pids) == 1 for pids in first.values()), gateway.log()
        with httpx.Client(base_url=f"http://127.0.0.1:{gateway.web_port}", timeout=10) as web:
            assert web.get("/login").status_code == 200
            killed = first["web process 0"][0]
            os.kill(killed, signal.SIGKILL)
            # Until the kernel has closed the dead process's listening socket, connections it
            # hashes there are reset (SO_REUSEPORT queues are per socket); from then on, new
            # connections go to the live process while the dead one is replaced.
            wait_for(lambda: _released(killed), timeout=10)
            answers = [httpx.get(f"http://127.0.0.1:{gateway.web_port}/login", timeout=10)
                       for _ in range(20)]
            assert {a.status_code for a in answers} == {200}
            wait_for(lambda: len(gateway.pids("web process 0")) == 2, timeout=60)
            wait_for(lambda: httpx.get(f"http://127.0.0.1:{gateway.web_port}/login",
                                       timeout=10).status_code == 200, timeout=30)
        assert gateway.proc.poll() is None  # the same `serve` all along
    finally:
        gateway.stop()
    log = gateway.log()
    assert "web process 0 died (killed by SIGKILL)" in log
    assert gateway.pids("web process 1") == first["web process 1"]
    assert "Traceback" not in log


def _released(pid: int) -> bool:
    """Whether a killed process has let go of its files: gone, or a zombie awaiting its parent."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] in {"Z", "X"}
    except FileNotFoundError:
        return True


def test_the_loop_reads_connection_comes_back_after_the_database_dropped_it(db_url):
    engine = make_engine(db_url)
    reads = LoopReads(engine)
    try:
        query = select((bindparam("n", type_=Integer) + 1).label("v"))
        assert reads.first(query, {"n": 1}) == {"v": 2}
        connection = reads._connection
        assert connection is not None
        if engine.dialect.name == "postgresql":
            with engine.connect() as admin:
                pid = connection.exec_driver_sql("SELECT pg_backend_pid()").scalar()
                admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        else:  # what a server's goodbye amounts to for SQLite: the driver's handle is gone
            connection.connection.dbapi_connection.close()
        assert reads.first(query, {"n": 2}) == {"v": 3}  # a new connection, the read done once
        assert reads._connection is not connection
    finally:
        reads.close()
        engine.dispose()


def test_loop_reads_give_what_sqlalchemy_gives_on_any_thread(directory):
    # The driver-level read of the owner thread and SQLAlchemy's own read (any other thread)
    # return the same values, with the columns' types applied (booleans, aware datetimes,
    # NULLs), literal values bound by the statement itself included.
    from concurrent.futures import ThreadPoolExecutor

    from storage.models import Contact, Organization

    query = (select(Contact.__table__, Organization.ticket_version)
             .join(Organization, Organization.id == Contact.organization_id)
             .where(Contact.email == bindparam("email"), Contact.state == "verified"))
    reads = LoopReads(directory)
    try:
        mine = reads.first(query, {"email": "maria.garcia@ferreteria-lopez.es"})
        with ThreadPoolExecutor(1) as pool:
            theirs = pool.submit(reads.first, query,
                                 {"email": "maria.garcia@ferreteria-lopez.es"}).result()
        assert mine == theirs
        assert mine["is_manager"] is True and mine["active"] is True
        assert mine["created_at"].tzinfo is not None and mine["ticket_version"] == 0
        assert reads.first(query, {"email": "nobody@example.com"}) is None
    finally:
        reads.close()


def test_fragments_render_once_per_key_and_forget_the_least_recently_used():
    rendered: list[str] = []

    def render(name: str):
        def make() -> Markup:
            rendered.append(name)
            return Markup(f"<p>{name}</p>")
        return make

    kept = Fragments(size=2)
    assert kept.get("a", render("a")) == Markup("<p>a</p>")
    assert kept.get("a", render("a")) == Markup("<p>a</p>")
    kept.get("b", render("b"))
    kept.get("a", render("a"))  # "a" is now the most recently used
    kept.get("c", render("c"))  # so "b" goes
    kept.get("a", render("a"))
    kept.get("b", render("b"))
    assert rendered == ["a", "b", "c", "b"]
    assert (kept.hits, kept.misses) == (3, 4)
    assert re.fullmatch(r"<p>b</p>", kept.get("b", render("never")))


def test_metrics_add_up_every_process(db_url, directory, tmp_path):
    # A mail in by SMTP (SMTP process, ingest worker, sender) and 20 pages spread over two web
    # processes: any web process's /metrics counts them all.
    import smtplib

    from tests.test_process_safety import request_mail

    gateway = GatewayProcess(db_url, tmp_path / "var", HELPDESK_WEB_PROCESSES="2").start()
    base = f"http://127.0.0.1:{gateway.web_port}"
    try:
        with smtplib.SMTP("127.0.0.1", gateway.smtp_port, timeout=30) as client:
            client.sendmail("maria.garcia@ferreteria-lopez.es", ["soporte@example.com"],
                            request_mail(1, "metrics"))
        for _ in range(20):  # a connection each: the kernel spreads them over both processes
            assert httpx.get(f"{base}/login", timeout=10).status_code == 200

        def scraped() -> str:
            return httpx.get(f"{base}/metrics", timeout=10).text

        wait_for(lambda: 'helpdesk_outbox_rows{state="sent"} 1.0' in scraped(), timeout=60)
        for _ in range(4):  # whichever process answers
            text = scraped()
            assert 'helpdesk_inbound_mails_total{channel="smtp",outcome="created"} 1.0' in text
            logins = re.search(r'helpdesk_http_request_duration_seconds_count\{method="GET",'
                               r'route="/login",status="200"\} (\S+)', text)
            assert logins is not None and float(logins[1]) == 20.0, text
    finally:
        gateway.stop()

