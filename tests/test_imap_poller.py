"""The IMAP channel on a real Dovecot: by UID, stored, then flagged; never lost or doubled."""

from __future__ import annotations

import dataclasses
import logging
import ssl

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from gateway.channels.imap_poller import STORED_KEYWORD, Backoff, ImapPoller, StoreFailed
from gateway.service import Parts
from gateway.settings import Settings, imap_mailboxes
from storage import imap_state
from storage.models import InboundMessage, Ticket
from tests.conftest import RunningService, free_port, load_mail, wait_for
from tests.dovecot import Dovecot

STORED = {b"\\Seen", STORED_KEYWORD.encode()}


def poller_for(parts: Parts, url: str, **options) -> ImapPoller:
    (mailbox,) = imap_mailboxes(url)
    options.setdefault("backoff", Backoff(first=0.05, limit=0.5))
    options.setdefault("poll_seconds", 0.2)
    return ImapPoller(mailbox, parts.engine, parts.blobs, **options)


def queued(engine: Engine) -> list[InboundMessage]:
    with Session(engine) as session:
        return list(session.exec(select(InboundMessage).order_by(col(InboundMessage.id))).all())


def messages(caplog: pytest.LogCaptureFixture, fragment: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if fragment in r.getMessage()]


# --------------------------------------------------------------------------- configuration


def test_mailbox_urls_are_parsed_and_passwords_never_printed():
    # Two URLs separated by a comma and a newline; the percent-encoded password is decoded,
    # kept in a Secret, and appears neither in the settings' repr nor in an error message.
    env = {
        "HELPDESK_SECRET_KEY": "k",
        "HELPDESK_IMAP_MAILBOXES": (
            "imaps://soporte%40example.com:p%C3%A4ss%2Cword@imap.example.com/INBOX"
            "?move_to=Procesados&verify=false,\n"
            "imap://soporte@mail.example.com/Soporte%20T%C3%A9cnico?oauth2_token_file=/run/tok"
        ),
        "HELPDESK_IMAP_POLL_SECONDS": "30",
    }
    settings = Settings.from_env(env)
    first, second = settings.imap_mailboxes
    assert (first.host, first.port, first.user, first.folder) == (
        "imap.example.com", 993, "soporte@example.com", "INBOX")
    assert (first.security, first.verify, first.move_to) == ("tls", False, "Procesados")
    assert str(first.password) == "päss,word"
    assert (second.security, second.port, second.folder) == ("starttls", 143, "Soporte Técnico")
    assert str(second.oauth2_token_file) == "/run/tok"
    assert settings.imap_poll_seconds == 30
    assert "päss" not in repr(settings)
    with pytest.raises(ValueError, match="verify") as refused:
        imap_mailboxes("imaps://u:hunter2@imap.example.com/INBOX?verify=maybe")
    assert "hunter2" not in str(refused.value)


# --------------------------------------------------------------------------- storing and marking


def test_appended_mail_is_queued_then_flagged_and_becomes_a_ticket(parts, dovecot):
    # A mail APPENDed to the mailbox becomes an InboundMessage (channel imap, source_ref
    # "UIDVALIDITY:UID") with the server's exact bytes, is then flagged \Seen + $HelpdeskStored,
    # and the ingest turns it into ticket 1001.
    uidvalidity, uid = dovecot.append(load_mail("outlook-new-request-es.eml"))
    assert STORED.isdisjoint(dovecot.flags(uid))
    poller = poller_for(parts, dovecot.url())
    assert poller.run_once() == 1
    (row,) = queued(parts.engine)
    assert (row.channel, row.source, row.source_ref) == (
        "imap", poller.name, f"{uidvalidity}:{uid}")
    assert parts.blobs.get(row.raw_key) == dovecot.fetch(uid)
    assert dovecot.flags(uid) >= STORED
    outcome = parts.ingestor.process_next()
    assert (outcome.outcome, outcome.ticket) == ("created", 1001)


def test_mail_is_not_flagged_while_it_cannot_be_stored(parts, dovecot):
    # With the queue table away the pass fails and the mail stays unmarked on the server; once
    # the table is back, the next pass stores it and only then flags it.
    _, uid = dovecot.append(load_mail("outlook-new-request-es.eml"))
    with parts.engine.begin() as conn:
        conn.execute(text("ALTER TABLE inbound_message RENAME TO inbound_message_away"))
    poller = poller_for(parts, dovecot.url())
    with pytest.raises(StoreFailed):
        poller.run_once()
    assert STORED.isdisjoint(dovecot.flags(uid))
    with parts.engine.begin() as conn:
        conn.execute(text("ALTER TABLE inbound_message_away RENAME TO inbound_message"))
    assert poller.run_once() == 1
    assert dovecot.flags(uid) >= STORED
    assert len(queued(parts.engine)) == 1


def test_stored_mail_is_moved_to_the_configured_folder(parts, dovecot):
    # With move_to, the stored mail leaves INBOX for "Procesados" (created if missing), flagged.
    dovecot.append(load_mail("outlook-new-request-es.eml"))
    poller = poller_for(parts, dovecot.url(move_to="Procesados"))
    assert poller.run_once() == 1
    assert dovecot.uids("INBOX") == []
    (moved,) = dovecot.uids("Procesados")
    assert dovecot.flags(moved, "Procesados") >= STORED
    assert len(queued(parts.engine)) == 1


def test_mail_already_read_by_a_person_is_still_fetched(parts, dovecot):
    # Someone opened the mailbox first and the mail is \Seen: UIDs, not unread-only, decide.
    _, uid = dovecot.append(load_mail("gmail-reply-es-quoted.eml"), flags=(b"\\Seen",))
    assert poller_for(parts, dovecot.url()).run_once() == 1
    assert len(queued(parts.engine)) == 1
    assert dovecot.flags(uid) >= STORED


def test_running_the_poller_again_queues_nothing_twice(parts, dovecot):
    # A second pass, and a fresh poller (a restart), find nothing new: one InboundMessage.
    dovecot.append(load_mail("outlook-new-request-es.eml"))
    assert poller_for(parts, dovecot.url()).run_once() == 1
    assert poller_for(parts, dovecot.url()).run_once() == 0
    dovecot.append(load_mail("gmail-reply-es-quoted.eml"))
    assert poller_for(parts, dovecot.url()).run_once() == 1
    assert len(queued(parts.engine)) == 2


def test_crash_between_store_and_flag_leaves_exactly_one_queued_mail(parts, dovecot, caplog):
    # A poller that stored a mail and died before flagging it: the next poller fetches it again,
    # recognizes the queued row (unique channel/source/source_ref), does not queue it twice,
    # and flags it now.
    caplog.set_level(logging.INFO, logger="gateway.imap")
    uidvalidity, uid = dovecot.append(load_mail("outlook-new-request-es.eml"))
    crashed = poller_for(parts, dovecot.url())
    first_id, created = crashed.store(uidvalidity, uid, dovecot.fetch(uid))
    assert created
    assert STORED.isdisjoint(dovecot.flags(uid))
    assert poller_for(parts, dovecot.url()).run_once() == 0
    assert [row.id for row in queued(parts.engine)] == [first_id]
    assert dovecot.flags(uid) >= STORED
    assert messages(caplog, f"UID {uid} was already queued as inbound {first_id}")


def test_uidvalidity_change_reads_the_folder_again_without_losing_new_mail(parts, dovecot, caplog):
    # The folder is deleted and created again: UIDs restart at 1 under a new UIDVALIDITY. The
    # new mail (UID 1 again, below the old last UID) is still queued, and the change is logged.
    caplog.set_level(logging.INFO, logger="gateway.imap")
    with dovecot.client() as client:
        client.create_folder("Soporte")
    old_validity, _ = dovecot.append(load_mail("outlook-new-request-es.eml"), "Soporte")
    dovecot.append(load_mail("apple-mail-screenshot-es.eml"), "Soporte")
    poller = poller_for(parts, dovecot.url(folder="Soporte"))
    assert poller.run_once() == 2
    with dovecot.client() as client:
        client.delete_folder("Soporte")
        client.create_folder("Soporte")
    new_validity, uid = dovecot.append(load_mail("gmail-reply-es-quoted.eml"), "Soporte")
    assert new_validity != old_validity and uid == 1
    assert poller.run_once() == 1
    refs = [row.source_ref for row in queued(parts.engine)]
    assert refs == [f"{old_validity}:1", f"{old_validity}:2", f"{new_validity}:1"]
    assert imap_state.load(parts.engine, poller.name) == imap_state.Position(new_validity, 1)
    assert messages(caplog, f"UIDVALIDITY changed from {old_validity} to {new_validity}")


def test_oversized_mail_is_left_alone_and_the_next_one_is_still_queued(parts, dovecot, caplog):
    # One bad mail does not stop the rest: a mail over the size limit is logged with its UID and
    # left unmarked for a person; the mail after it is queued and flagged.
    caplog.set_level(logging.INFO, logger="gateway.imap")
    big = load_mail("outlook-new-request-es.eml")
    small = load_mail("foreign-org-subject-tag-en.eml")
    _, big_uid = dovecot.append(big)
    _, small_uid = dovecot.append(small)
    poller = poller_for(parts, dovecot.url(), max_size=(len(small) + len(big)) // 2)
    assert poller.run_once() == 1
    assert STORED.isdisjoint(dovecot.flags(big_uid))
    assert dovecot.flags(small_uid) >= STORED
    assert messages(caplog, f"UID {big_uid} is ")
    assert len(queued(parts.engine)) == 1


# --------------------------------------------------------------------------- transport and login


@pytest.mark.parametrize("scheme, options", [
    ("imaps", {}),  # implicit TLS, certificate verified against the test CA
    ("imap", {"starttls": "true", "verify": "false"}),  # STARTTLS, verification turned off
], ids=["imaps-verified", "starttls-unverified"])
def test_implicit_tls_and_starttls_both_fetch_mail(parts, dovecot, scheme, options):
    # Both ways into the self-signed Dovecot work and queue the mail.
    dovecot.append(load_mail("outlook-new-request-es.eml"))
    assert poller_for(parts, dovecot.url(scheme, **options)).run_once() == 1


def test_untrusted_certificate_is_refused_when_verification_is_on(parts, dovecot):
    # Without the test CA (cafile) and with verification on, the self-signed server is refused.
    dovecot.append(load_mail("outlook-new-request-es.eml"))
    with pytest.raises(ssl.SSLCertVerificationError):
        poller_for(parts, dovecot.url(cafile="")).run_once()
    assert queued(parts.engine) == []


def test_wrong_password_is_logged_clearly_and_retried_with_backoff(parts, dovecot, caplog):
    # A refused login is logged as such (never with the password), the poller keeps trying with
    # backoff in its thread, and stops cleanly when asked.
    caplog.set_level(logging.INFO, logger="gateway.imap")
    poller = poller_for(parts, dovecot.url(password="not-the-password"))
    poller.start()
    try:
        wait_for(lambda: len(messages(caplog, "login refused for user soporte")) >= 2)
        assert poller.is_alive()
    finally:
        poller.stop()
    assert not poller.is_alive()
    refused = [r for r in caplog.records if "login refused" in r.getMessage()]
    assert all(r.levelno == logging.ERROR for r in refused)
    assert "retrying in" in refused[0].getMessage()
    assert not messages(caplog, "not-the-password")


def test_expired_oauth2_token_is_reported_and_a_refreshed_one_is_used(parts, dovecot, caplog,
                                                                      tmp_path):
    # XOAUTH2 with an expired token: the log says the token expired or is invalid, and the
    # poller keeps trying; once the token file holds a valid token, mail flows without a restart.
    caplog.set_level(logging.INFO, logger="gateway.imap")
    token_file = tmp_path / "token"
    token_file.write_text("expired-token\n")
    dovecot.append(load_mail("outlook-new-request-es.eml"))
    poller = poller_for(parts, dovecot.url(password="", oauth2_token_file=str(token_file)))
    poller.start()
    try:
        wait_for(lambda: messages(caplog, "has expired or is invalid, refresh it"))
        assert poller.is_alive()
        dovecot.valid_tokens.add("fresh-token")
        token_file.write_text("fresh-token\n")
        wait_for(lambda: queued(parts.engine))
    finally:
        poller.stop()


def test_unreachable_mailbox_is_reported_as_stalled(parts, dovecot, caplog):
    # Nothing listens on the port: connection errors are retried, and once the mailbox has been
    # out of reach longer than stalled_after, an error says it has stalled.
    caplog.set_level(logging.INFO, logger="gateway.imap")
    url = dovecot.url().replace(f":{dovecot.imaps_port}/", f":{free_port()}/")
    poller = poller_for(parts, url, stalled_after=0.3)
    poller.start()
    try:
        wait_for(lambda: messages(caplog, "STALLED"))
        assert poller.is_alive()
    finally:
        poller.stop()
    assert not poller.is_alive()


# --------------------------------------------------------------------------- IDLE and the service


def test_mail_appended_while_idling_is_queued_promptly(parts, dovecot, caplog):
    # In IDLE (RFC 2177), a mail that arrives is announced by the server and queued at once,
    # long before the next IDLE renewal (5 minutes) or any polling would find it.
    caplog.set_level(logging.DEBUG, logger="gateway.imap")
    poller = poller_for(parts, dovecot.url(), poll_seconds=600, idle_seconds=300)
    poller.start()
    try:
        wait_for(lambda: messages(caplog, "idling for up to"))
        _, uid = dovecot.append(load_mail("outlook-new-request-es.eml"))
        wait_for(lambda: queued(parts.engine))
        wait_for(lambda: dovecot.flags(uid) >= STORED)
    finally:
        poller.stop()
    assert not poller.is_alive()


@pytest.mark.parametrize("dovecot", ["IMAP4rev1 UIDPLUS"], indirect=True)
def test_server_without_idle_or_move_is_polled_and_mail_copied_then_expunged(parts, dovecot):
    # A server that advertises neither IDLE nor MOVE: the poller looks every poll_seconds, and
    # moves with COPY, \Deleted and UID EXPUNGE (RFC 4315), so INBOX ends empty.
    poller = poller_for(parts, dovecot.url(move_to="Procesados"), poll_seconds=0.2)
    poller.start()
    try:
        dovecot.append(load_mail("outlook-new-request-es.eml"))
        wait_for(lambda: queued(parts.engine))
        wait_for(lambda: dovecot.uids("Procesados") and not dovecot.uids("INBOX"))
    finally:
        poller.stop()
    (moved,) = dovecot.uids("Procesados")
    assert dovecot.flags(moved, "Procesados") >= STORED


def test_service_with_an_imap_mailbox_turns_its_mail_into_a_ticket(settings: Settings, directory,
                                                                   dovecot: Dovecot):
    # The whole gateway with HELPDESK_IMAP_MAILBOXES set: a mail put into the mailbox is
    # queued, flagged, and ingested into a ticket by the running service.
    configured = dataclasses.replace(settings, imap_mailboxes=imap_mailboxes(dovecot.url()))
    with RunningService(configured):
        _, uid = dovecot.append(load_mail("outlook-new-request-es.eml"))

        def ticket() -> Ticket | None:
            with Session(directory) as session:
                return session.exec(select(Ticket)).first()

        assert wait_for(ticket, timeout=60).number == 1001
        wait_for(lambda: dovecot.flags(uid) >= STORED, timeout=60)
