"""Runs one queued mail: parse → rules → correlate → store, in one transaction.

Its sole purpose in life is to turn a row of the inbound queue into a ticket, a reply, or a
recorded rejection. If anything raises, the transaction is rolled back and the mail is kept as
failed with its error (``helpdesk inbound retry`` queues it again); the loop goes on.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import asdict, dataclass, field

from sqlalchemy.engine import Engine
from sqlmodel import Session

from gateway import attachments
from gateway.correlate import Clues, clues
from gateway.links import ReplyAddresses
from gateway.parse import ParsedAttachment, ParsedMail, parse
from gateway.workflow import RefusedFile, Thread, Workflow
from storage import inbound
from storage.blobs import BlobStore
from storage.db import transaction
from storage.models import Attachment, Contact, InboundMessage, Message, Ticket, utcnow
from storage.tickets import contact_by_email, ticket_by_message_ids, ticket_by_number

log = logging.getLogger("gateway.ingest")


@dataclass(frozen=True)
class AttachmentOutcome:
    filename: str
    type: str
    size: int
    sha256: str
    accepted: bool
    reason: str | None


@dataclass(frozen=True)
class Outcome:
    inbound_id: int
    outcome: str  # created / threaded / duplicate / rejected / failed (more in later rules)
    ticket: int | None
    reason: str | None
    sender: str
    subject: str
    attachments: tuple[AttachmentOutcome, ...] = field(default=())

    def as_json(self) -> dict:
        data = asdict(self)
        data["from"] = data.pop("sender")
        data["attachments"] = [asdict(a) for a in self.attachments]
        return data


class Ingestor:
    def __init__(
        self,
        engine: Engine,
        blobs: BlobStore,
        workflow: Workflow,
        reply: ReplyAddresses,
        *,
        support_address: str,
        max_attachment_size: int = attachments.DEFAULT_MAX_SIZE,
    ) -> None:
        self.engine = engine
        self.blobs = blobs
        self.workflow = workflow
        self.reply = reply
        self.support_address = support_address.lower()
        self.max_attachment_size = max_attachment_size

    def process_next(self, inbound_id: int | None = None) -> Outcome | None:
        """Process the oldest queued mail (or the one named); None when there is none."""
        claimed_id: int | None = None
        try:
            with transaction(self.engine) as session:
                row = inbound.claim_next(session, inbound_id)
                if row is None:
                    return None
                claimed_id = row.id
                outcome = self._process(session, row)
        except Exception as exc:
            if claimed_id is None:
                raise
            log.exception("inbound %s failed; kept for retry", claimed_id)
            inbound.mark_failed(self.engine, claimed_id, f"{type(exc).__name__}: {exc}")
            return Outcome(claimed_id, "failed", None, f"{type(exc).__name__}: {exc}", "", "")
        log.info(
            "inbound %s %s ticket=%s reason=%s from=%s",
            outcome.inbound_id, outcome.outcome, outcome.ticket, outcome.reason, outcome.sender,
        )
        return outcome

    def _process(self, session: Session, row: InboundMessage) -> Outcome:
        assert row.id is not None
        mail = parse(self.blobs.get(row.raw_key))
        row.header_message_id = mail.message_id

        def finish(kind: str, ticket: Ticket | None, reason: str | None,
                   files: tuple[AttachmentOutcome, ...] = ()) -> Outcome:
            row.state = "done"
            row.outcome = kind
            row.reason = reason
            row.ticket_id = ticket.id if ticket else None
            row.processed_at = utcnow()
            session.add(row)
            return Outcome(row.id, kind, ticket.number if ticket else None, reason,  # type: ignore[arg-type]
                           mail.from_address, mail.subject, files)

        if mail.error:
            return finish("failed", None, f"unparsable: {mail.error}")
        earlier = inbound.earlier_copy(session, row)
        if earlier is not None:
            ticket = session.get(Ticket, earlier.ticket_id) if earlier.ticket_id else None
            return finish("duplicate", ticket, f"same mail as inbound {earlier.id}")
        if mail.from_address == self.support_address:
            return finish("rejected", None, "our own mail")
        contact = contact_by_email(session, mail.from_address) if mail.from_address else None
        if contact is None or contact.state != "verified" or not contact.active:
            return finish("rejected", None, "unknown sender")

        checked = [(a, attachments.check(a.payload, self.max_attachment_size))
                   for a in mail.attachments]
        found = clues(mail, row.rcpt_to.split(","), self.reply)
        ticket = self._find_ticket(session, contact, found)
        kind = "threaded"
        if ticket is None:
            kind = "created"
            ticket = self.workflow.open_ticket(
                session,
                requester=contact,
                subject=mail.subject or "(sin asunto)",
                channel="email",
                thread=Thread(mail.message_id, mail.references),
                refused=[RefusedFile(a.filename, v.reason or "") for a, v in checked
                         if not v.accepted],
            )
        else:
            ticket.updated_at = utcnow()
            session.add(ticket)
        message = self._store_message(session, ticket, contact, mail, row)
        files = tuple(self._store_attachment(session, ticket, message, a, v) for a, v in checked)
        return finish(kind, ticket, None, files)

    def _find_ticket(self, session: Session, contact: Contact, found: Clues) -> Ticket | None:
        """The design's order: reply token, then references, then subject tag; same organization."""
        same_org = [t for t in self._candidates(session, found)
                    if t is not None and t.organization_id == contact.organization_id]
        return same_org[0] if same_org else None

    def _candidates(self, session: Session, found: Clues) -> list[Ticket | None]:
        result: list[Ticket | None] = []
        if found.token_ticket is not None:
            result.append(ticket_by_number(session, found.token_ticket))
        result.extend(ticket_by_message_ids(session, found.referenced_ids))
        if found.subject_ticket is not None:
            result.append(ticket_by_number(session, found.subject_ticket))
        return result

    def _store_message(self, session: Session, ticket: Ticket, contact: Contact,
                       mail: ParsedMail, row: InboundMessage) -> Message:
        message = Message(
            ticket_id=ticket.id,  # type: ignore[arg-type]
            direction="in",
            channel="email",
            author_contact_id=contact.id,
            from_address=mail.from_address,
            subject=mail.subject[:500],
            text=mail.text,
            html=mail.html,
            new_text=mail.text,
            message_id=mail.message_id,
            in_reply_to=" ".join(mail.in_reply_to) or None,
            references=" ".join(mail.references) or None,
            raw_key=row.raw_key,
            inbound_id=row.id,
        )
        session.add(message)
        session.flush()
        return message

    def _store_attachment(
        self, session: Session, ticket: Ticket, message: Message,
        item: ParsedAttachment, verdict: attachments.Verdict,
    ) -> AttachmentOutcome:
        key = self.blobs.put(item.payload) if verdict.accepted else None
        digest = key or hashlib.sha256(item.payload).hexdigest()
        session.add(
            Attachment(
                message_id=message.id,  # type: ignore[arg-type]
                ticket_id=ticket.id,  # type: ignore[arg-type]
                filename=item.filename,
                content_type=verdict.detected_type[:127],
                size=len(item.payload),
                sha256=digest,
                storage_key=key,
                content_id=item.content_id,
                accepted=verdict.accepted,
                reason=verdict.reason,
            )
        )
        return AttachmentOutcome(item.filename, verdict.detected_type, len(item.payload), digest,
                                 verdict.accepted, verdict.reason)
