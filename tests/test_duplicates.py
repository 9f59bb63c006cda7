"""Copies of one mail become one ticket, also when they are applied at the same moment: the
database refuses the second claim of the same bytes or Message-ID."""

from __future__ import annotations

import smtplib
import sqlite3
import threading

import psycopg
from sqlalchemy import func
from sqlmodel import Session, col, select

from gateway.inbound.ingest import Ingestor
from storage import inbound
from storage.models import InboundMessage, Ticket
from tests.conftest import held, load_mail, wait_for
from tests.gateway_process import GatewayProcess
from tests.test_process_safety import all_done, messages_per_id, request_mail


def relayed_copy(raw: bytes, hop: str) -> bytes:
    """The same mail as another of our mailboxes receives it: one more Received header."""
    return (f"Received: from {hop} by mx.example.com; Mon, 30 Nov 2026 09:00:00 +0100\r\n"
            .encode() + raw)


def ticket_numbers_held(db_url: str):
    """No ticket can be numbered while this lasts."""
    return held(db_url, "SELECT value FROM counter WHERE name = 'ticket' FOR UPDATE")


def waiting_on_locks(holder, count: int) -> bool:
    if isinstance(holder, sqlite3.Connection):
        return True  # SQLite writers queue on the database lock: nothing to look at
    with psycopg.connect(holder.info.dsn, autocommit=True) as watcher:
        waiting = watcher.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock'").fetchone()[0]
    return waiting >= count


def test_copies_applied_at_the_same_moment_become_one_ticket(parts, db_url):
    # Three copies leased by three workers and applied at once: the same bytes twice, and the
    # same Message-ID with other bytes (the copy another mailbox received). The ticket counter
    # is held until all three are inside their transactions, past any look for earlier copies:
    # one ticket, two duplicates of it.
    raw = load_mail("outlook-new-request-es.eml")
    copies = [raw, raw, relayed_copy(raw, "mx2.ferreteria-lopez.es")]
    ids = [inbound.enqueue(parts.engine, parts.blobs, copy, channel="smtp") for copy in copies]
    outcomes = {}

    def apply(inbound_id: int) -> None:
        worker = Ingestor(parts.engine, parts.blobs, parts.workflow, parts.ingestor.reply,
                          parts.ingestor.policy)
        (leased,) = worker.lease(1, inbound_id)
        (outcome,) = worker.apply([(leased.id, worker.prepare(leased))])
        outcomes[inbound_id] = outcome

    with ticket_numbers_held(db_url) as holder:
        threads = [threading.Thread(target=apply, args=(i,)) for i in ids]
        for thread in threads:
            thread.start()
        wait_for(lambda: waiting_on_locks(holder, 3), timeout=30)
    for thread in threads:
        thread.join(30)
    assert sorted(o.outcome for o in outcomes.values()) == ["created", "duplicate", "duplicate"]
    assert len({o.ticket for o in outcomes.values()}) == 1
    with Session(parts.engine) as session:
        assert session.exec(select(func.count()).select_from(Ticket)).one() == 1


def test_same_mail_through_several_connections_and_workers_is_one_ticket(db_url, directory,
                                                                          tmp_path):
    # 20 mails, each sent three times at the same moment over three SMTP connections (twice
    # the same bytes, once as relayed by another mailbox), to a gateway with three ingest
    # workers: 20 tickets, each mail on one of them once, 40 copies recorded as duplicates.
    gateway = GatewayProcess(db_url, tmp_path / "var", HELPDESK_FLOOD_LIMIT="0",
                             HELPDESK_INGEST_PROCESSES="3").start()
    try:
        for n in range(20):
            raw = request_mail(n, "copies")
            copies = [raw, raw, relayed_copy(raw, "mx2.ferreteria-lopez.es")]
            together = threading.Barrier(3)

            def send(copy: bytes, together=together) -> None:
                with smtplib.SMTP("127.0.0.1", gateway.smtp_port, timeout=30) as client:
                    client.ehlo()
                    together.wait(10)
                    client.sendmail("maria.garcia@ferreteria-lopez.es",
                                    ["soporte@example.com"], copy)

            threads = [threading.Thread(target=send, args=(copy,)) for copy in copies]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(30)
        wait_for(lambda: all_done(directory, 60), timeout=120)
    finally:
        gateway.stop()
    counts = messages_per_id(directory)
    assert [n for n in range(20) if counts.get(f"<copies-{n}@ferreteria-lopez.es>") != 1] == []
    with Session(directory) as session:
        outcomes = dict(session.exec(select(InboundMessage.outcome, func.count())
                                     .group_by(col(InboundMessage.outcome))).all())
        tickets = session.exec(select(func.count()).select_from(Ticket)).one()
    assert outcomes == {"created": 20, "duplicate": 40}
    assert tickets == 20
