"""The IMAP channel: fetch new mail by UID, store it durably and queue it, then flag or move it.

One poller per configured mailbox, each in its own thread: imapclient is synchronous, and a
dedicated thread (rather than the event loop's shared executor) can block in IDLE for minutes
without starving the workers that ``asyncio.to_thread`` serves.

The rules it keeps (../shared/DESIGN.md, "Inbound: rules"):

* **Accepted means kept.** A message is flagged (``\\Seen`` and ``$HelpdeskStored``) or moved only
  after its raw bytes and queue row are committed. Stopped in between, the next pass fetches it
  again and ``storage.inbound.enqueue_once`` finds the row already queued: never lost, never
  doubled.
* **UIDs, not \\Seen.** New mail is what lies above the last UID handled (RFC 3501 §2.3.1.1),
  kept in the database with the mailbox's UIDVALIDITY: a person reading the mailbox first hides
  nothing. If UIDVALIDITY changes, the old UIDs mean nothing and the mailbox is read again from
  the start; copies already stored are recognized by the ingest's de-duplication.
* **Each mail fails alone**, and a mailbox that cannot be reached for long is logged as stalled.
"""

from __future__ import annotations

import contextlib
import imaplib
import logging
import re
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.parser import BytesHeaderParser
from email.utils import getaddresses

from imapclient import IMAPClient, SocketTimeout
from imapclient.exceptions import LoginError
from sqlalchemy.engine import Engine
from sqlalchemy.exc import InterfaceError, OperationalError

from gateway.settings import IMAP_IDLE_LIMIT, ImapMailbox
from storage import imap_state, inbound
from storage.blobs import BlobStore
from storage.imap_state import Position

log = logging.getLogger("gateway.imap")

# A keyword (RFC 3501 §2.3.2) that says "the helpdesk has this one"; "$" like $Forwarded, $Junk.
STORED_KEYWORD = "$HelpdeskStored"
SEEN = b"\\Seen"
CONNECT_TIMEOUT = 30.0
READ_TIMEOUT = 120.0
FETCH_CHUNK = 100  # UIDs per FETCH of sizes, so a first pass over a big mailbox stays bounded
MAX_ATTEMPTS = 3  # passes a failing message is retried in before it is left to a person
MAX_RECHECKS = 3  # extra passes in a row for mail announced during a pass, before idling anyway
STOP_CHECK_SECONDS = 1.0  # how soon a stop is noticed while idling



class LoginRefused(Exception):
    """The server (or our token file) refused the credentials; the message says what to fix."""


class StoreFailed(Exception):
    """The raw store or the queue table could not be written (database or disk away)."""


# What an outage raises: not the message's fault, so the whole pass is tried again after a
# reconnection instead of counting against the message.
OUTAGES = (OSError, imaplib.IMAP4.abort, OperationalError, InterfaceError, StoreFailed)


@dataclass(frozen=True)
class Backoff:
    """Waits between connection attempts: ``first``, doubled on each failure, at most ``limit``."""

    first: float = 1.0
    limit: float = 300.0

    def delay(self, failures: int) -> float:
        return min(self.limit, self.first * 2 ** max(0, failures - 1))


DEFAULT_BACKOFF = Backoff()


@dataclass(frozen=True)
class Selected:
    """What the selected mailbox and the server allow, read once per connection."""

    uidvalidity: int
    keywords: bool  # PERMANENTFLAGS allows our keyword (RFC 3501 §7.1, "\\*")
    move: bool  # RFC 6851 MOVE
    uidplus: bool  # RFC 4315 UID EXPUNGE
    idle: bool  # RFC 2177 IDLE


class ImapPoller:
    """Reads one mailbox for as long as it runs: ``start()`` a thread, ``stop()`` it."""

    def __init__(
        self,
        mailbox: ImapMailbox,
        engine: Engine,
        blobs: BlobStore,
        *,
        poll_seconds: float = 60.0,
        idle_seconds: float = 300.0,
        max_size: int = 25 * 1024 * 1024,
        on_stored: Callable[[], None] = lambda: None,
        backoff: Backoff = DEFAULT_BACKOFF,
        stalled_after: float = 15 * 60.0,
    ) -> None:
        self.mailbox = mailbox
        self.name = mailbox.name
        self.engine = engine
        self.blobs = blobs
        self.poll_seconds = poll_seconds
        self.idle_seconds = min(idle_seconds, IMAP_IDLE_LIMIT)
        self.max_size = max_size
        self.on_stored = on_stored
        self.backoff = backoff
        self.stalled_after = stalled_after
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._position = Position(0, 0)
        self._attempts: dict[tuple[int, int], int] = {}
        self._failures = 0  # failed attempts since the last pass that went through
        self._down_since = 0.0  # when the first of those failed
        self._stall_reports = 0

    # ------------------------------------------------------------------ lifetime

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self.run, name=f"imap {self.name}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the thread to finish (it notices within a second, even in IDLE) and wait for it."""
        self._stop.set()
        if self._thread is None:
            return
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("mailbox %s: poller still busy after %.0fs; leaving it behind",
                        self.name, timeout)

    def is_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def run(self) -> None:
        """Serve the mailbox until stopped, reconnecting with capped exponential backoff."""
        while not self._stop.is_set():
            try:
                with self._session() as (client, selected):
                    self._serve(client, selected)
                continue
            except LoginRefused as exc:
                error, level = str(exc), logging.ERROR
            except OUTAGES as exc:
                error, level = f"{type(exc).__name__}: {exc}", logging.WARNING
            except imaplib.IMAP4.error as exc:  # NO / BAD: a missing folder, a server refusal
                error, level = f"the server refused: {_server_text(exc)}", logging.ERROR
            except Exception as exc:  # the loop's one catch-all: log it, back off, go on
                log.exception("mailbox %s: unexpected error", self.name)
                error, level = f"{type(exc).__name__}: {exc}", logging.WARNING
            if self._stop.is_set():
                break
            if self._failures == 0:
                self._down_since = time.monotonic()
            self._failures += 1
            delay = self.backoff.delay(self._failures)
            log.log(level, "mailbox %s: %s; retrying in %.1fs (attempt %d)",
                    self.name, error, delay, self._failures)
            down = time.monotonic() - self._down_since
            if down >= self.stalled_after * (self._stall_reports + 1):
                self._stall_reports += 1
                log.error("mailbox %s: STALLED, no mail fetched for %.0f minutes (%d failed "
                          "attempts); last error: %s", self.name, down / 60, self._failures, error)
            self._stop.wait(delay)

    def _reachable(self) -> None:
        """A pass over the mailbox went through: the backoff and the stall clock start over."""
        if self._failures:
            log.info("mailbox %s: working again after %d failed attempts", self.name,
                     self._failures)
        self._failures = self._stall_reports = 0

    def run_once(self) -> int:
        """One pass: connect, queue what is new, disconnect. Returns how many were newly queued."""
        with self._session() as (client, selected):
            return self._take_new(client, selected)

    def store(self, uidvalidity: int, uid: int, raw: bytes) -> tuple[int, bool]:
        """Store one fetched message durably and queue it: ``(queue id, newly queued)``."""
        try:
            mail_from, rcpt_to = envelope(raw)
        except Exception:  # informative only; the ingest reads the headers again itself
            mail_from, rcpt_to = "", ()
        return inbound.enqueue_once(
            self.engine, self.blobs, raw, channel="imap", source=self.name,
            source_ref=f"{uidvalidity}:{uid}", mail_from=mail_from, rcpt_to=rcpt_to,
        )

    # ------------------------------------------------------------------ connection

    @contextlib.contextmanager
    def _session(self) -> Iterator[tuple[IMAPClient, Selected]]:
        client = self._connect()
        clean = False
        try:
            self._login(client)
            selected = self._select(client)
            yield client, selected
            clean = True
        finally:
            _close(client, logout=clean)

    def _connect(self) -> IMAPClient:
        mailbox = self.mailbox
        context = tls_context(mailbox)
        client = IMAPClient(
            mailbox.host, port=mailbox.port, ssl=mailbox.security == "tls",
            ssl_context=context, timeout=SocketTimeout(CONNECT_TIMEOUT, READ_TIMEOUT),
        )
        if mailbox.security == "starttls":
            # Never fall back to plain text when STARTTLS is missing or fails (RFC 3501 §6.2.1).
            try:
                client.starttls(context)
            except BaseException:
                _close(client, logout=False)
                raise
        return client

    def _login(self, client: IMAPClient) -> None:
        mailbox = self.mailbox
        path = mailbox.oauth2_token_file
        if path is None:
            try:
                client.login(mailbox.user, str(mailbox.password))
            except LoginError as exc:
                raise LoginRefused(
                    f"login refused for user {mailbox.user}: wrong user or password, or password "
                    f"login is disabled for this account ({_server_text(exc)})") from None
            return
        if not client.has_capability("AUTH=XOAUTH2"):
            raise LoginRefused("the server does not offer XOAUTH2 (no AUTH=XOAUTH2 capability)")
        try:
            token = path.read_text().strip()
        except OSError as exc:
            raise LoginRefused(f"cannot read the OAuth2 access token file {path}: "
                               f"{exc.strerror}") from None
        try:
            client.oauth2_login(mailbox.user, token)
        except LoginError as exc:
            raise LoginRefused(
                f"OAuth2 access token in {path} refused for user {mailbox.user}: it has expired "
                f"or is invalid, refresh it ({_server_text(exc)})") from None

    def _select(self, client: IMAPClient) -> Selected:
        mailbox = self.mailbox
        if mailbox.move_to and not client.folder_exists(mailbox.move_to):
            client.create_folder(mailbox.move_to)
            log.info("mailbox %s: created folder %s for stored mail", self.name, mailbox.move_to)
        info = client.select_folder(mailbox.folder)
        uidvalidity = int(info[b"UIDVALIDITY"])
        permanent = info.get(b"PERMANENTFLAGS", ())
        selected = Selected(
            uidvalidity=uidvalidity,
            keywords=b"\\*" in permanent or STORED_KEYWORD.encode() in permanent,
            move=client.has_capability("MOVE"),
            uidplus=client.has_capability("UIDPLUS"),
            idle=client.has_capability("IDLE"),
        )
        position = imap_state.load(self.engine, self.name)
        if position is None or position.uidvalidity != uidvalidity:
            if position is not None:
                log.warning("mailbox %s: UIDVALIDITY changed from %d to %d; reading the mailbox "
                            "again from the start (mail already stored is recognized as a "
                            "duplicate)", self.name, position.uidvalidity, uidvalidity)
            position = Position(uidvalidity, 0)
            imap_state.save(self.engine, self.name, position)
        self._position = position
        log.info("mailbox %s: selected, UIDVALIDITY %d, last UID %d, %s", self.name, uidvalidity,
                 position.last_uid, "IDLE" if selected.idle else "polling")
        return selected

    # ------------------------------------------------------------------ serving

    def _serve(self, client: IMAPClient, selected: Selected) -> None:
        rechecks = 0
        while not self._stop.is_set():
            self._take_new(client, selected)
            self._reachable()
            if self._stop.is_set():
                return
            # Mail that came in during the pass is taken now: IDLE would not announce it again.
            # The NOOP makes the server say what it still holds back (Dovecot keeps the EXISTS
            # of a mail appended during a UID SEARCH until the next command, and an IDLE started
            # then announces nothing until it ends). Bounded, for servers that repeat EXISTS.
            client.noop()
            if _announced_new_mail(client) and rechecks < MAX_RECHECKS:
                rechecks += 1
                continue
            rechecks = 0
            if selected.idle:
                self._idle(client)
            elif not self._stop.wait(self.poll_seconds):
                client.noop()  # RFC 3501 §6.1.2: lets the server announce new mail

    def _idle(self, client: IMAPClient) -> None:
        """Wait in IDLE until the server announces mail, we are stopped, or it is time to renew.

        RFC 2177 §3: IDLE is ended and re-issued at least every 29 minutes (``idle_seconds``) so
        the server does not log us off as inactive. Short checks let a stop end it within a second.
        """
        client.idle()
        log.debug("mailbox %s: idling for up to %.0fs", self.name, self.idle_seconds)
        deadline = time.monotonic() + self.idle_seconds
        early_empty = 0
        while not self._stop.is_set():
            wait = min(STOP_CHECK_SECONDS, deadline - time.monotonic())
            if wait <= 0:
                break
            began = time.monotonic()
            responses = client.idle_check(timeout=wait)
            if any(response[0] == b"BYE" for response in responses):
                raise ConnectionError(f"server ended the session during IDLE: {responses}")
            if any(isinstance(r[0], int) and r[1:2] == (b"EXISTS",) for r in responses):
                break
            # imapclient returns nothing, at once, when the server has closed the connection:
            # several such returns in a row mean the connection is gone, not that mail is quiet.
            returned_early = not responses and time.monotonic() - began < wait / 2
            early_empty = early_empty + 1 if returned_early else 0
            if early_empty >= 3:
                raise ConnectionError("connection closed by the server during IDLE")
        client.idle_done()

    def _take_new(self, client: IMAPClient, selected: Selected) -> int:
        """Queue every message above the last UID handled; return how many were newly queued."""
        last = self._position.last_uid
        criteria: list[str] = ["UID", f"{last + 1}:*"]
        if selected.keywords:
            criteria += ["NOT", "KEYWORD", STORED_KEYWORD]
        # RFC 3501 §6.4.8: "n:*" always matches the highest UID, even one below n.
        uids = sorted(uid for uid in client.search(criteria) if uid > last)
        queued = 0
        blocked = False  # a failed message holds the saved position so it is tried again
        for start in range(0, len(uids), FETCH_CHUNK):
            chunk = uids[start:start + FETCH_CHUNK]
            sizes = client.fetch(chunk, ["RFC822.SIZE"])
            for uid in chunk:
                if self._stop.is_set():
                    return queued
                size = sizes.get(uid, {}).get(b"RFC822.SIZE")
                done, created = self._take(client, selected, uid, size)
                queued += created
                blocked = blocked or not done
                if done and not blocked:
                    self._position = Position(selected.uidvalidity, uid)
                    imap_state.save(self.engine, self.name, self._position)
        return queued

    def _take(self, client: IMAPClient, selected: Selected, uid: int,
              size: int | None) -> tuple[bool, bool]:
        """Store, then mark one message: ``(done with it, newly queued)``. Fails alone."""
        try:
            if size is not None and size > self.max_size:
                log.error("mailbox %s: UID %d is %d bytes, over the %d-byte limit; left in the "
                          "mailbox unmarked for a person to handle", self.name, uid, size,
                          self.max_size)
                return True, False
            fetched = client.fetch([uid], ["BODY.PEEK[]"])  # PEEK: no \Seen before it is stored
            raw = fetched.get(uid, {}).get(b"BODY[]")
            if raw is None:
                log.info("mailbox %s: UID %d was expunged before it could be fetched",
                         self.name, uid)
                return True, False
            try:
                inbound_id, created = self.store(selected.uidvalidity, uid, raw)
            except Exception as exc:  # whatever the cause, the mail stays unmarked on the server
                raise StoreFailed(f"cannot store UID {uid}: {type(exc).__name__}: {exc}") from exc
            if created:
                self.on_stored()
                log.info("mailbox %s: UID %d queued as inbound %d (%d bytes)", self.name, uid,
                         inbound_id, len(raw))
            else:
                log.info("mailbox %s: UID %d was already queued as inbound %d; marking it now",
                         self.name, uid, inbound_id)
            self._mark(client, selected, uid)
            return True, created
        except OUTAGES:
            raise  # retried as a whole after reconnecting; not this message's fault
        except Exception:
            key = (selected.uidvalidity, uid)
            attempts = self._attempts[key] = self._attempts.get(key, 0) + 1
            if attempts < MAX_ATTEMPTS:
                log.exception("mailbox %s: UID %d failed (attempt %d of %d); trying the next one",
                              self.name, uid, attempts, MAX_ATTEMPTS)
                return False, False
            log.exception("mailbox %s: UID %d failed %d times; giving up on it, it stays in the "
                          "mailbox for a person to handle", self.name, uid, attempts)
            return True, False

    def _mark(self, client: IMAPClient, selected: Selected, uid: int) -> None:
        """Flag the stored message, and move it if a folder is configured."""
        flags = [SEEN, STORED_KEYWORD.encode()] if selected.keywords else [SEEN]
        client.add_flags([uid], flags, silent=True)
        move_to = self.mailbox.move_to
        if not move_to:
            return
        if selected.move:
            client.move([uid], move_to)  # RFC 6851 §3.1: atomic
            return
        client.copy([uid], move_to)
        client.delete_messages([uid], silent=True)
        if selected.uidplus:
            client.uid_expunge([uid])  # RFC 4315 §2.1: expunges this message only
        # Without UIDPLUS a plain EXPUNGE would also purge what people marked \Deleted: leave
        # ours \Deleted (its keyword keeps it out of our searches) for the next expunge.


def tls_context(mailbox: ImapMailbox) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(mailbox.cafile) if mailbox.cafile else None)
    if not mailbox.verify:  # an operator's explicit verify=false, e.g. a self-signed server
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def envelope(raw: bytes) -> tuple[str, tuple[str, ...]]:
    """The envelope the delivering server recorded: Return-Path (RFC 5321 §4.4) and the
    recipients of Delivered-To / X-Original-To, where a signed reply address may survive."""
    head = re.split(rb"\r?\n\r?\n", raw, maxsplit=1)[0]
    headers = BytesHeaderParser().parsebytes(head)
    return_path = getaddresses([str(headers.get("Return-Path", ""))])
    recipients = getaddresses([str(value) for name in ("Delivered-To", "X-Original-To")
                               for value in headers.get_all(name, [])])
    mail_from = return_path[0][1] if return_path else ""
    return mail_from, tuple(dict.fromkeys(addr.lower() for _name, addr in recipients if addr))


def _announced_new_mail(client: IMAPClient) -> bool:
    """Whether the server announced new messages (EXISTS, RFC 3501 §7.3.1) since the last look.

    A mail that arrives while we SEARCH or FETCH is announced in that command's response, which
    imaplib files away, and an IDLE started afterwards does not announce it again (Dovecot would
    only find it at its next periodic check). imapclient has no public access to these responses.
    """
    return client._imap.untagged_responses.pop("EXISTS", None) is not None


def _close(client: IMAPClient, *, logout: bool) -> None:
    if logout:
        with contextlib.suppress(imaplib.IMAP4.error, OSError):
            client.logout()
            return
    with contextlib.suppress(OSError):
        client.shutdown()


def _server_text(exc: Exception) -> str:
    """imapclient puts the server's bytes in the message as ``b'...'``; show just the text."""
    text = str(exc)
    return text[2:-1] if text[:2] in {"b'", 'b"'} else text
