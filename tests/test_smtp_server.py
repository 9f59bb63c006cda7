"""The SMTP edge: only our domains, size limit, 250 only once stored, 451 when it cannot store."""

from __future__ import annotations

import smtplib

import pytest
from sqlalchemy import text
from sqlmodel import Session, select

from storage.blobs import BlobStore
from storage.models import InboundMessage
from tests.conftest import load_mail


def test_recipient_outside_support_domains_is_refused(gateway):
    # We are never a relay: RCPT for another domain gets 550 5.7.1.
    with smtplib.SMTP("127.0.0.1", gateway.smtp_port, timeout=10) as client:
        client.ehlo()
        client.mail("maria.garcia@ferreteria-lopez.es")
        code, message = client.rcpt("someone@gmail.com")
    assert code == 550
    assert b"5.7.1" in message


def test_size_limit_is_advertised_and_enforced(gateway):
    # EHLO advertises SIZE; a declared size over it is refused at MAIL, and a client that
    # does not declare it is refused with 552 at the end of DATA. Nothing is queued.
    limit = gateway.settings.smtp_max_size
    big = b"Subject: big\r\n\r\n" + (b"x" * 998 + b"\r\n") * (limit // 1000 + 10)
    with smtplib.SMTP("127.0.0.1", gateway.smtp_port, timeout=30) as client:
        client.ehlo()
        assert int(client.esmtp_features["size"]) == limit
        with pytest.raises(smtplib.SMTPSenderRefused) as refused:
            client.sendmail("maria.garcia@ferreteria-lopez.es", ["soporte@example.com"], big)
        assert refused.value.smtp_code == 552
    with smtplib.SMTP("127.0.0.1", gateway.smtp_port, timeout=30) as client:
        client.ehlo()
        assert client.mail("maria.garcia@ferreteria-lopez.es")[0] == 250
        assert client.rcpt("soporte@example.com")[0] == 250
        code, _ = client.data(big)
        assert code == 552
    with Session(gateway.service.parts.engine) as session:
        assert session.exec(select(InboundMessage)).all() == []


def test_accepted_mail_is_stored_before_250(gateway):
    # When 250 comes back, the raw bytes are on disk and the queue row names them.
    raw = load_mail("outlook-new-request-es.eml")
    with smtplib.SMTP("127.0.0.1", gateway.smtp_port, timeout=10) as client:
        client.sendmail("maria.garcia@ferreteria-lopez.es", ["soporte@example.com"], raw)
    with Session(gateway.service.parts.engine) as session:
        row = session.exec(select(InboundMessage)).one()
    assert row.channel == "smtp"
    assert row.mail_from == "maria.garcia@ferreteria-lopez.es"
    assert row.rcpt_to == "soporte@example.com"
    assert BlobStore(gateway.settings.storage_dir).get(row.raw_key) == raw


def test_database_unavailable_answers_451_so_the_client_retries(gateway):
    # If the queue cannot be written, the client gets a temporary 451 and nothing is claimed.
    engine = gateway.service.parts.engine
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE inbound_message CASCADE")
                     if engine.dialect.name == "postgresql"
                     else text("ALTER TABLE inbound_message RENAME TO inbound_message_away"))
    with (smtplib.SMTP("127.0.0.1", gateway.smtp_port, timeout=10) as client,
          pytest.raises(smtplib.SMTPDataError) as refused):
        client.sendmail("maria.garcia@ferreteria-lopez.es", ["soporte@example.com"],
                        load_mail("outlook-new-request-es.eml"))
    assert refused.value.smtp_code == 451
