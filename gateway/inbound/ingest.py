"""Runs one queued mail: parse → rules → correlate → store, in one transaction.

Its sole purpose in life is to turn a row of the inbound queue into a ticket, a reply, or a
recorded rejection. The rules are walked in the order of ``_dispose``; if anything raises, the
mail's savepoint is rolled back and the loop goes on with the next mail. A temporary error (disk
full, database gone) sends the mail back to the queue to be tried again by itself; any other is
kept as failed with its error (``helpdesk inbound retry`` queues it again).
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import bindparam, update
from sqlalchemy.engine import Engine
from sqlmodel import Session, col

from gateway.inbound import attachments, sender_auth
from gateway.inbound.correlate import Clues, clues
from gateway.inbound.parse import STREAM_FROM, ParsedMail
from gateway.inbound.prepare import Prepared, PreparedFile, prepare, reply_text
from gateway.inbound.rules import autoreply, bounce, flood, loop
from gateway.links import ReplyAddresses
from gateway.verification import pending_request_of
from gateway.workflow import RefusedFile, Thread, Workflow, reopenable
from storage import inbound
from storage.blobs import BlobStore
from storage.db import insert_now, plain_row, transaction
from storage.faults import describe, is_temporary
from storage.models import Contact, InboundMessage, Message, Organization, Ticket, utcnow
from storage.queues import new_holder
from storage.tickets import (
    add_files,
    catchall_organization,
    contact_by_email,
    contacts_by_email,
    messages_from_each_since,
    messages_from_since,
    notifications_by_message_ids,
    organization_id_for_domain,
    ticket_by_message_ids,
    ticket_by_number,
)

log = logging.getLogger("gateway.ingest")

OUTCOMES = ("created", "threaded", "duplicate", "autoreply", "bounce", "held", "quarantined",
            "rejected", "failed")
# Not an outcome: the mail met a temporary error and waits in the queue to be tried again.
RETRY = "retry"


@dataclass(frozen=True)
class Policy:
    """The settings ingestion acts on."""

    support_address: str
    support_domains: tuple[str, ...]
    unknown_senders: str = "reject"  # or "accept": tickets go to the catch-all organization
    catchall_org_code: str = "SIN-CLASIFICAR"
    reopen_days: int = 7
    flood_limit: int = 40
    flood_window_minutes: int = 10
    max_attachment_size: int = attachments.DEFAULT_MAX_SIZE
    lease_seconds: float = 30.0
    retry_days: float = 5.0  # a mail meeting temporary errors is retried this long
    sender_auth: str = "off"  # off / report / enforce (gateway.inbound.sender_auth)
    smtp_auth_results: str = ""  # trust this authserv-id's Authentication-Results on SMTP
    lmtp_auth_results: str = ""  # ... on LMTP (the MTA in front: Postfix with OpenDMARC)
    mailbox_auth_results: tuple[tuple[str, str], ...] = ()  # (mailbox name, authserv-id)


# The attachment fields of the `ingest --json` contract.
ATTACHMENT_FIELDS = ("filename", "type", "size", "sha256", "accepted", "reason")


@dataclass(frozen=True)
class Outcome:
    inbound_id: int
    outcome: str  # one of OUTCOMES
    ticket: int | None
    reason: str | None
    sender: str
    subject: str
    attachments: tuple[PreparedFile, ...] = field(default=())

    def as_json(self) -> dict:
        """The `helpdesk ingest --json` contract (without the file name)."""
        return {
            "outcome": self.outcome,
            "ticket": self.ticket,
            "reason": self.reason,
            "from": self.sender,
            "subject": self.subject,
            "attachments": [{key: getattr(a, key) for key in ATTACHMENT_FIELDS}
                            for a in self.attachments],
        }


class Ingestor:
    def __init__(self, engine: Engine, blobs: BlobStore, workflow: Workflow,
                 reply: ReplyAddresses, policy: Policy, worker_id: str | None = None) -> None:
        self.engine = engine
        self.blobs = blobs
        self.workflow = workflow
        self.reply = reply
        self.policy = policy
        # Who holds a lease on a queued mail: unique per process and per Ingestor (a worker's
        # supervisor names it, to put its leases back if it dies).
        self.worker_id = worker_id or new_holder("ingest")

    @property
    def preparer(self) -> Preparer:
        return Preparer(self.policy, self.blobs.root)

    def process_next(self, inbound_id: int | None = None) -> Outcome | None:
        """Process the oldest queued mail (or the one named) here and now; None when none is
        waiting. The gateway's worker processes do the same in batches (gateway.worker)."""
        leased = self.lease(1, inbound_id)
        if not leased:
            return None
        try:
            prepared: Prepared | BaseException = self.prepare(leased[0])
        except Exception as exc:
            prepared = exc
        outcomes = self.apply([(leased[0].id, prepared)])
        return outcomes[0] if outcomes else None

    def lease(self, limit: int, inbound_id: int | None = None) -> list[inbound.Leased]:
        return inbound.lease(self.engine, self.worker_id, limit, inbound_id,
                             stale=timedelta(seconds=self.policy.lease_seconds))

    def prepare(self, leased: inbound.Leased) -> Prepared:
        """Parse the mail and judge its sender (DNS lookups, outside any transaction). Raises
        DnsUnavailable when the verdict must wait (enforce): the mail is tried again later."""
        # A large mail by its file, read as it is parsed (never whole in memory); a small one
        # read once, for the parser and the sender's authentication alike.
        path = self.blobs.path(leased.raw_key)
        return self.preparer.prepare(
            leased, path if path.stat().st_size > STREAM_FROM else path.read_bytes())

    def apply(self, batch: list[tuple[int, Prepared | BaseException]]) -> list[Outcome]:
        """Write the outcomes of prepared mails in one transaction.

        All at once first; if anything raises (a mail's rules, or the database refusing a
        mail's rows when they are written, maybe at commit), that transaction is rolled back and
        the batch is written again with each mail in a savepoint and flushed there, so that the
        failing mail is kept as failed (or queued for a retry) without undoing the others.
        Savepoints and a flush per mail cost a third of a mail's time: paid only for a batch
        where something failed."""
        try:
            outcomes = self._apply(batch, careful=False)
        except Exception as exc:  # a mail raised, or a write of one failed at flush or commit
            log.debug("batch of %d written again mail by mail: %s", len(batch), describe(exc))
            outcomes = self._apply(batch, careful=True)
        for outcome in outcomes:
            level = logging.WARNING if outcome.outcome in {RETRY, "failed"} else logging.INFO
            log.log(level, "inbound %s %s ticket=%s reason=%s from=%s", outcome.inbound_id,
                    outcome.outcome, outcome.ticket, outcome.reason, outcome.sender,
                    extra={"ticket": outcome.ticket, "inbound_id": outcome.inbound_id})
        return outcomes

    def _apply(self, batch: list[tuple[int, Prepared | BaseException]],
               careful: bool) -> list[Outcome]:
        outcomes: list[Outcome] = []
        with transaction(self.engine) as session:
            rows = inbound.leased_rows(session, [queue_id for queue_id, _ in batch],
                                       self.worker_id)
            # Mail by mail in savepoints, a mail's reads may be rolled back: read one by one.
            reads = None if careful else _BatchReads(session, [
                prepared.mail for _, prepared in batch if not isinstance(prepared, BaseException)])
            for queue_id, prepared in batch:
                row = rows.get(queue_id)
                if row is None:  # our lease ran out and another worker took the mail
                    continue
                if isinstance(prepared, BaseException):
                    outcomes.append(self._failed(session, row, prepared))
                    continue
                if not careful:
                    try:
                        outcomes.append(_Run(self, session, row, prepared, reads).dispose())
                    except Exception as exc:  # the whole batch again, this mail in a savepoint
                        raise _MailFailed(queue_id) from exc
                    continue
                try:
                    with session.begin_nested():  # (its release flushes the mail's rows)
                        outcome = _Run(self, session, row, prepared).dispose()
                except Exception as exc:
                    if not is_temporary(exc):
                        log.exception("inbound %s failed", queue_id)
                    session.refresh(row)
                    outcome = self._failed(session, row, exc)
                outcomes.append(outcome)
        return outcomes

    def _failed(self, session: Session, row: InboundMessage, exc: BaseException) -> Outcome:
        """A mail whose processing raised: back to the queue if the error is temporary (the disk
        is full, the database went away), else kept as failed with its error."""
        reason = describe(exc)[:4000]
        assert row.id is not None
        retry_for = timedelta(days=self.policy.retry_days)
        if is_temporary(exc) and inbound.retry_later(row, reason, retry_for):
            session.add(row)
            return Outcome(row.id, RETRY, None, f"{reason} (tried again at "
                           f"{row.next_attempt_at:%H:%M:%S} UTC)", "", "")
        if row.failing_since is not None:
            reason = f"still failing after {self.policy.retry_days:g} day(s): {reason}"
        row.state, row.outcome, row.error = "failed", "failed", reason
        row.processed_at = utcnow()
        session.add(row)
        return Outcome(row.id, "failed", None, reason, "", "")


# A mail's outcome on its queue row (_Run.finish): the values are bound at each run.
_FINISHED = update(InboundMessage).where(col(InboundMessage.id) == bindparam("row_id"))


class _MailFailed(Exception):
    """A mail of a batch raised: the batch is written again, each mail in a savepoint."""


class Preparer:
    """The part of ingesting a mail that needs no database: parse it, check and store its
    files, judge its sender. Runs in the ingest workers, or in the pool of processes of
    ``helpdesk ingest`` (gateway.inbound.batch)."""

    def __init__(self, policy: Policy, storage_root: Path) -> None:
        self.policy = policy
        self.storage_root = storage_root

    def prepare(self, leased: inbound.Leased, raw: bytes | Path) -> Prepared:
        prepared = prepare(raw, self.storage_root, self.policy.max_attachment_size)
        if self.policy.sender_auth == "off" or leased.released or prepared.mail.error:
            return prepared
        whole = raw if isinstance(raw, bytes) else raw.read_bytes()  # DKIM reads every byte
        return replace(prepared, auth=self.authenticate(leased, prepared, whole))

    def authenticate(self, leased: inbound.Leased, prepared: Prepared,
                     raw: bytes) -> sender_auth.Verdict:
        from_domain = sender_auth.domain_of(prepared.mail.from_address)
        trusted_id = (self.policy.smtp_auth_results if leased.channel == "smtp"
                      else self.policy.lmtp_auth_results if leased.channel == "lmtp"
                      else dict(self.policy.mailbox_auth_results).get(leased.source, ""))
        if trusted_id:
            return sender_auth.trusted(raw, trusted_id, from_domain) or sender_auth.Verdict(
                from_domain, by=trusted_id, notes=(f"no Authentication-Results of {trusted_id}",))
        try:
            return sender_auth.check(
                raw, from_domain=from_domain, mail_from=leased.mail_from,
                # Over LMTP the client is the MTA in front: SPF is not about its address.
                ip=leased.source if leased.channel == "smtp" else "", helo=leased.helo)
        except sender_auth.DnsUnavailable as exc:
            if self.policy.sender_auth == "enforce":
                raise
            return sender_auth.Verdict(from_domain, temporary=True, notes=(str(exc),))


class _BatchReads:
    """What every mail of a batch reads, read for the whole batch at once: the senders'
    contacts, and how many messages each sender had stored before the batch (the flood
    rule's count, from the batch's first look at it); what the batch's own mails add is
    counted as they are stored. Two queries a batch instead of two a mail."""

    def __init__(self, session: Session, mails: list[ParsedMail]) -> None:
        self.session = session
        self.addresses = sorted({m.from_address for m in mails if m.from_address})
        self._contacts: dict[str, Contact | None] | None = None
        self._written: dict[str, int] | None = None
        self.stored: Counter[str] = Counter()  # messages stored by this batch, by sender

    def contact(self, address: str) -> Contact | None:
        if self._contacts is None:
            self._contacts = contacts_by_email(self.session, self.addresses)
        key = address.strip().lower()
        if key not in self._contacts:
            return contact_by_email(self.session, address)
        return self._contacts[key]

    def made(self, contact: Contact) -> None:
        """A contact this batch created: the next mail of its sender finds it."""
        if self._contacts is not None:
            self._contacts[contact.email] = contact

    def messages_from_since(self, address: str, since: datetime) -> int:
        if self._written is None:
            self._written = messages_from_each_since(self.session, self.addresses, since)
        if address not in self._written:
            return messages_from_since(self.session, address, since)
        return self._written[address] + self.stored[address]


class _Run:
    """One mail's way through the rules, inside the caller's transaction."""

    def __init__(self, ingestor: Ingestor, session: Session, row: InboundMessage,
                 prepared: Prepared, reads: _BatchReads | None = None) -> None:
        self.ing = ingestor
        self.reads = reads
        self.policy = ingestor.policy
        self.session = session
        self.row = row
        self.prepared = prepared
        self.mail: ParsedMail = prepared.mail
        self.auth: dict[str, object] = {}  # the sender's verdict, written with the outcome

    def finish(self, kind: str, ticket: Ticket | None, reason: str | None) -> Outcome:
        """The mail's outcome on its queue row: one plain UPDATE (the row object is not used
        again; the ORM's flush of it would cost several times the statement)."""
        row = self.row
        assert row.id is not None
        self.session.connection().execute(_FINISHED, {
            "row_id": row.id, "state": "done", "outcome": kind, "reason": reason,
            "next_attempt_at": None, "failing_since": None, "error": None,
            "ticket_id": ticket.id if ticket else None, "processed_at": utcnow(),
            "header_message_id": self.mail.message_id, **self.auth})
        return Outcome(row.id, kind, ticket.number if ticket else None, reason,
                       self.mail.from_address, self.mail.subject, self.files())

    def dispose(self) -> Outcome:
        mail, session = self.mail, self.session
        if mail.error:
            return self.finish("failed", None, f"unparsable: {mail.error}")
        earlier = inbound.claim(session, self.row, mail.message_id)
        if earlier is not None and earlier.id != self.row.id:  # (itself: released, again)
            ticket = session.get(Ticket, earlier.ticket_id) if earlier.ticket_id else None
            return self.finish("duplicate", ticket, f"same mail as inbound {earlier.id}")
        found_bounce = bounce.check(mail, self._envelope_sender())
        if found_bounce is not None:
            return self._bounce(found_bounce)
        own_id = bool(mail.message_id) and any(
            mail.message_id.endswith(f"@{d}>") for d in self.policy.support_domains)  # type: ignore[union-attr]
        looped = loop.check(mail, self.policy.support_domains, own_id)
        if looped:
            return self.finish("rejected", None, looped)
        if not mail.from_address:
            return self.finish("rejected", None, "no sender address")
        with session.no_autoflush:  # (a contact made by a mail is flushed as it is made)
            contact = (self.reads.contact(mail.from_address) if self.reads is not None
                       else contact_by_email(session, mail.from_address))
        self._record_auth()
        unauthenticated = self._impersonation(contact)
        if unauthenticated:
            return self.finish("quarantined", None, unauthenticated)
        automatic = autoreply.check(mail)
        if automatic:
            return self._autoreply(contact, automatic)
        if contact is not None and contact.state == "verified" and contact.active:
            window = timedelta(minutes=self.policy.flood_window_minutes)
            since = utcnow() - window
            recent = (self.reads.messages_from_since(mail.from_address, since)
                      if self.reads is not None
                      else messages_from_since(session, mail.from_address, since))
            flooded = flood.check(recent, self.policy.flood_limit,
                                  self.policy.flood_window_minutes)
            if flooded:
                return self.finish("rejected", None, flooded)
            return self._from_contact(contact)
        return self._from_stranger(contact)

    # ------------------------------------------------------------------ outcomes

    def _from_contact(self, contact: Contact) -> Outcome:
        ticket = self._find_ticket(contact)
        if ticket is not None and not self._reopenable(ticket):
            new = self.ing.workflow.open_ticket(
                self.session, requester=contact, subject=self._subject(), channel="email",
                thread=self._thread(), refused=self._refused(), linked_ticket=ticket)
            self._store(new, contact, split=True, opening=True)
            return self.finish("created", new, f"follows {ticket.status} ticket {ticket.number}")
        if ticket is not None:
            self.ing.workflow.customer_replied(self.session, ticket, contact)
            self.ing.workflow.message_received(self.session, ticket,
                                               self._store(ticket, contact, split=True))
            refused = self._refused()
            if refused:  # the customer hears which files we could not take, and why
                self.ing.workflow.queue(
                    self.session, event="attachments_refused", ticket=ticket, contact=contact,
                    thread=self._thread(),
                    extra={"refused": [{"filename": r.filename, "reason": r.reason}
                                       for r in refused]})
            return self.finish("threaded", ticket, None)
        new = self.ing.workflow.open_ticket(
            self.session, requester=contact, subject=self._subject(), channel="email",
            thread=self._thread(), refused=self._refused())
        self._store(new, contact, split=False, opening=True)
        return self.finish("created", new, None)

    def _from_stranger(self, contact: Contact | None) -> Outcome:
        """Senders who are not verified contacts: held, accepted for the team, or rejected."""
        session, mail = self.session, self.mail
        if contact is not None and contact.state == "rejected":
            return self.finish("rejected", None, "sender rejected by the organization")
        if contact is not None and contact.state == "verified" and not contact.active:
            # Deactivated by a manager: a stranger again, held until a manager approves them
            # (which reactivates them) or rejects them.
            held = self._find_ticket(contact)
            if held is None or held.status != "held":
                held = self.ing.workflow.hold_for_verification(
                    session, sender=contact, subject=self._subject(), channel="email",
                    request=pending_request_of(session, contact.email) is None,
                    excerpt=mail.text)
            self._store(held, contact, split=True)
            return self.finish("held", held, "sender deactivated by the organization")
        if contact is not None and contact.state == "pending":
            held = self._find_ticket(contact)
            if held is None or held.status != "held":
                held = self.ing.workflow.hold_for_verification(
                    session, sender=contact, subject=self._subject(), channel="email",
                    request=False)
            self._store(held, contact, split=True)
            return self.finish("held", held, "sender pending verification")
        domain = mail.from_address.rpartition("@")[2]
        org_id = organization_id_for_domain(session, domain)
        if org_id is not None:
            stranger = self._new_contact(org_id, "pending")
            ticket = self.ing.workflow.hold_for_verification(
                session, sender=stranger, subject=self._subject(), channel="email",
                excerpt=mail.text)
            self._store(ticket, stranger, split=False, opening=True)
            return self.finish("held", ticket, "sender pending verification")
        if self.policy.unknown_senders == "accept":
            org = catchall_organization(session, self.policy.catchall_org_code)
            assert org.id is not None
            stranger = contact or self._new_contact(org.id, "external")
            # No mail back to a sender nobody knows: that would be backscatter to spammers.
            ticket = self.ing.workflow.open_ticket(
                session, requester=stranger, subject=self._subject(), channel="email",
                notify=False)
            self._store(ticket, stranger, split=False, opening=True)
            return self.finish("created", ticket, "unknown sender, kept for the team")
        if self.prepared.auth is not None and not self.prepared.auth.authenticated:
            # A refusal to a forged address would be backscatter: the mail is recorded only.
            return self.finish("rejected", None, "unknown sender (not authenticated: not "
                                                 "answered)")
        self.ing.workflow.notify_refused_sender(
            session, address=mail.from_address, name=mail.from_name, subject=mail.subject,
            thread=self._thread())
        return self.finish("rejected", None, "unknown sender")

    def _autoreply(self, contact: Contact | None, reason: str) -> Outcome:
        """Kept on the ticket it answers, if any; never notifies, never reopens."""
        found = clues(self.mail, self.row.rcpt_to.split(","), self.ing.reply)
        if contact is not None and contact.state == "verified":
            ticket = self._find_ticket(contact)
        else:  # a stranger's auto-reply: only our signed reply address is trusted
            number = found.token_ticket
            ticket = ticket_by_number(self.session, number) if number is not None else None
        if ticket is None:
            return self.finish("autoreply", None, reason)
        self._store(ticket, contact, split=True, automatic=True)
        return self.finish("autoreply", ticket, reason)

    def _bounce(self, found: bounce.Bounce) -> Outcome:
        notes = notifications_by_message_ids(self.session, found.message_ids)
        for note in notes:
            if found.permanent and note.state in {"sent", "sending", "queued"}:
                note.state = "bounced"
                note.last_error = found.reason
                self.session.add(note)
        ticket = self.session.get(Ticket, notes[0].ticket_id) if notes and notes[0].ticket_id \
            else None
        return self.finish("bounce", ticket, found.reason)

    # ------------------------------------------------------------------ sender authentication

    def _record_auth(self) -> None:
        verdict = self.prepared.auth
        if verdict is not None:  # (a mail released from quarantine keeps its first verdict)
            self.auth = {"sender_auth": verdict.to_json(),
                         "authenticated": verdict.authenticated}

    def _impersonation(self, contact: Contact | None) -> str | None:
        """Why the mail is held for the team instead of acting for someone we know (a contact,
        or anyone of an organization's domain): enforce, and no SPF or DKIM pass aligned with
        its From domain. An organization set to "dmarc" is held only where its domain's
        DMARC policy asks for quarantine or reject. None when it may go on."""
        verdict = self.prepared.auth
        if self.policy.sender_auth != "enforce" or verdict is None or verdict.authenticated:
            return None
        domain = self.mail.from_address.rpartition("@")[2]
        org_id = contact.organization_id if contact is not None \
            else organization_id_for_domain(self.session, domain)
        if org_id is None:  # nobody we know is claimed: the rules for strangers apply
            return None
        organization = self.session.get(Organization, org_id)
        if organization is not None and organization.sender_auth == "dmarc" \
                and verdict.dmarc_policy not in {"quarantine", "reject"}:
            return None
        return f"sender not authenticated: {verdict.summary()}"

    # ------------------------------------------------------------------ helpers

    def _envelope_sender(self) -> str | None:
        if self.row.channel in {"smtp", "lmtp"}:  # the MTA in front passes MAIL FROM on
            return self.row.mail_from
        return_path = self.mail.headers.get("return-path")
        return return_path.strip() if return_path is not None else None

    def _find_ticket(self, contact: Contact) -> Ticket | None:
        """The design's order: reply token, references, subject tag; same organization only."""
        found = clues(self.mail, self.row.rcpt_to.split(","), self.ing.reply)
        for ticket in self._candidates(found):
            if ticket is not None and ticket.organization_id == contact.organization_id:
                return ticket
        return None

    def _candidates(self, found: Clues) -> list[Ticket | None]:
        session = self.session
        result: list[Ticket | None] = []
        if found.token_ticket is not None:
            result.append(ticket_by_number(session, found.token_ticket))
        result.extend(ticket_by_message_ids(session, found.referenced_ids))
        if found.subject_ticket is not None:
            result.append(ticket_by_number(session, found.subject_ticket))
        return result

    def _reopenable(self, ticket: Ticket) -> bool:
        return reopenable(ticket, self.policy.reopen_days)

    def _subject(self) -> str:
        return self.mail.subject or "(sin asunto)"

    def _thread(self) -> Thread:
        return Thread(self.mail.message_id, self.mail.references)

    def _new_contact(self, organization_id: int, state: str) -> Contact:
        mail = self.mail
        contact = Contact(organization_id=organization_id, name=mail.from_name or mail.from_address,
                          email=mail.from_address.lower(), state=state, types="")
        self.session.add(contact)
        self.session.flush()
        if self.reads is not None:
            self.reads.made(contact)
        return contact

    def _refused(self) -> list[RefusedFile]:
        return [RefusedFile(f.filename, f.reason or "") for f in self.prepared.files
                if not f.accepted]

    def _store(self, ticket: Ticket, author: Contact | None, *, split: bool,
               automatic: bool = False, opening: bool = False) -> Message:
        """The message on its ticket, with its files: accepted ones stored, refused ones noted."""
        mail, row = self.mail, self.row
        message = plain_row(
            Message,
            ticket_id=ticket.id,
            direction="in", channel="email", automatic=automatic,
            # The mail that opens a ticket comes before the "received" mail queued for it, so
            # the ticket's thread (and what our next mail answers) keeps the customer's order.
            created_at=ticket.created_at if opening else utcnow(),
            author_contact_id=author.id if author else None,
            from_address=mail.from_address, subject=mail.subject[:500],
            text=mail.text, html=mail.html,
            new_text=reply_text(self.prepared) if split else mail.text,
            message_id=mail.message_id,
            in_reply_to=" ".join(mail.in_reply_to) or None,
            references=" ".join(mail.references) or None,
            raw_key=row.raw_key, inbound_id=row.id,
        )
        insert_now(self.session, message)
        if self.reads is not None:
            self.reads.stored[mail.from_address] += 1
        add_files(self.session, message, self.prepared.files)
        return message

    def files(self) -> tuple[PreparedFile, ...]:
        return self.prepared.files
