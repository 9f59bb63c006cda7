"""Ticket status changes: history, and the notifications they queue in the same transaction.

The outbox rule of the design: a notification row is written by the transaction that makes the
change, so a ticket never exists without its "received" mail queued, and a rolled-back change
never mails anybody. Rendering and sending happen later, in ``gateway.outbound.sender``.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, timedelta
from typing import Any

from sqlalchemy import bindparam
from sqlmodel import Session, col, select

from gateway import events
from gateway.links import DECISIONS, RatingLinks, VerificationLinks
from gateway.outbound.render import new_message_id
from gateway.ratings import rating_links
from gateway.settings import Settings
from storage.db import insert_now, once_per_transaction, plain_row
from storage.models import (
    STATUS_GROUPS,
    Agent,
    Attachment,
    Contact,
    Message,
    Notification,
    Organization,
    SlaPlan,
    StatusChange,
    Ticket,
    VerificationRequest,
    utcnow,
)
from storage.tickets import FileRecord, add_files, managers_of, next_ticket_number

# Which status may follow which (DESIGN "Statuses"). Closed and cancelled are final: a customer's
# reply to them opens a new, linked ticket instead.
TRANSITIONS: dict[str, frozenset[str]] = {
    "new": frozenset({"qualified", "in_progress", "pending", "planned", "awaiting_customer",
                      "resolved", "cancelled"}),
    "qualified": frozenset({"in_progress", "pending", "planned", "awaiting_customer",
                            "resolved", "cancelled"}),
    "in_progress": frozenset({"qualified", "pending", "planned", "awaiting_customer",
                              "resolved", "cancelled"}),
    "pending": frozenset({"in_progress", "planned", "awaiting_customer", "resolved",
                          "cancelled"}),
    "planned": frozenset({"in_progress", "pending", "awaiting_customer", "resolved",
                          "cancelled"}),
    "awaiting_customer": frozenset({"in_progress", "pending", "planned", "resolved",
                                    "cancelled"}),
    "resolved": frozenset({"in_progress", "closed"}),
    "held": frozenset({"new", "cancelled"}),
    "closed": frozenset(),
    "cancelled": frozenset(),
}
# The mail the customer gets when a ticket enters a status; pending and closed send none.
STATUS_EVENTS = {"qualified": "qualified", "in_progress": "in_progress", "planned": "planned",
                 "awaiting_customer": "awaiting_customer", "cancelled": "cancelled"}
log = logging.getLogger("gateway.workflow")

THREAD_DEPTH = 20  # Message-IDs kept in References: enough to thread, short enough for headers
EXCERPT_LIMIT = 600  # characters of a held mail shown to the managers who verify its sender
LOW_RATING = 2  # a rating of this many stars or fewer is mailed to the team
# Our own ticket tag, as our subjects carry it (templates/email/*.subject).
OWN_TAG = re.compile(r"\s*\[#\d{1,9}\]\s*")


class TransitionError(ValueError):
    """A status change that the workflow does not allow, or that lacks what it needs."""


@dataclass(frozen=True)
class Thread:
    """The mail a notification answers, so that it threads in the customer's client."""

    in_reply_to: str | None = None
    references: tuple[str, ...] = ()

    def chain(self) -> tuple[str, ...]:
        """References for a mail answering this one (RFC 5322 §3.6.4): its References, then it."""
        return tuple(dict.fromkeys((*self.references, *filter(None, [self.in_reply_to]))))


@dataclass(frozen=True)
class RefusedFile:
    filename: str
    reason: str


class Workflow:
    def __init__(self, *, support_address: str, public_url: str, brand: str,
                 rating_links: RatingLinks | None = None,
                 verification_links: VerificationLinks | None = None) -> None:
        self.domain = support_address.rpartition("@")[2]
        self.public_url = public_url
        self.brand = brand
        self.rating_links = rating_links
        self.verification_links = verification_links

    @classmethod
    def from_settings(cls, settings: Settings) -> Workflow:
        secret = str(settings.secret_key)
        return cls(
            support_address=settings.support_address, public_url=settings.public_url,
            brand=settings.from_name,
            rating_links=RatingLinks(secret, settings.public_url, settings.rating_link_days),
            verification_links=VerificationLinks(secret, settings.public_url,
                                                 settings.verification_link_days),
        )

    def open_ticket(
        self,
        session: Session,
        *,
        requester: Contact,
        subject: str,
        channel: str,
        thread: Thread = Thread(),
        refused: Sequence[RefusedFile] = (),
        application_id: int | None = None,
        linked_ticket: Ticket | None = None,
        notify: bool = True,
    ) -> Ticket:
        """Create a ticket in status new, record it, and queue the "received" mail."""
        ticket = self._new_ticket(session, requester, subject, channel, "new", application_id,
                                  linked_ticket)
        note = f"opened by {channel}"
        if linked_ticket is not None:
            note += f", follows ticket {linked_ticket.number}"
        self._record(session, ticket, None, "new", requester.email, note)
        events.ticket_created(session, ticket)
        if not notify:
            return ticket
        self.queue(
            session,
            event="received",
            ticket=ticket,
            contact=requester,
            thread=thread,
            extra={"refused": [{"filename": r.filename, "reason": r.reason} for r in refused]},
        )
        return ticket

    def hold_for_verification(
        self, session: Session, *, sender: Contact, subject: str, channel: str,
        request: bool = True, excerpt: str = "", requested_by: Contact | None = None,
    ) -> Ticket:
        """A ticket from an unknown person of a known organization, held until a manager says who
        they are. With ``request``, the verification request is recorded and every manager of
        the organization gets a mail with signed approve and reject links."""
        ticket = self._new_ticket(session, sender, subject, channel, "held", None, None)
        self._record(session, ticket, None, "held", sender.email, "sender pending verification")
        assert ticket.id is not None and sender.id is not None
        if request:
            pending = VerificationRequest(organization_id=sender.organization_id,
                                          contact_id=sender.id, ticket_id=ticket.id)
            session.add(pending)
            session.flush()
            self.ask_managers(session, pending, sender, ticket, excerpt, requested_by)
        return ticket

    def ask_managers(self, session: Session, pending: VerificationRequest, sender: Contact,
                     ticket: Ticket, excerpt: str = "",
                     requested_by: Contact | None = None) -> list[Notification]:
        """Queue the "verification_request" mail to each manager of the sender's organization.
        Not a mail of the ticket: no [#NUMBER], and a reply goes to the plain support address,
        so a manager's answer never lands on a ticket the sender cannot see yet."""
        assert self.verification_links is not None, "Workflow needs verification_links"
        assert pending.id is not None
        managers = managers_of(session, sender.organization_id)  # the sender is not verified
        organization = session.get(Organization, sender.organization_id)
        queued = []
        for manager in managers:
            assert manager.id is not None
            links = {decision: self.verification_links.url(pending.id, manager.id, decision)
                     for decision in DECISIONS}
            context = {
                "contact_name": manager.name, "requester_name": sender.name,
                "requester_email": sender.email, "ticket_subject": ticket.subject,
                "organization_name": organization.name if organization else "",
                "excerpt": excerpt.strip()[:EXCERPT_LIMIT], "approve_url": links["approve"],
                "reject_url": links["reject"],
                # A colleague who added this person in the web area, rather than a stranger's mail.
                "requested_by_name": requested_by.name if requested_by else "",
                "requested_by_email": requested_by.email if requested_by else "",
            }
            queued.append(self.queue_plain(session, event="verification_request",
                                           recipient=manager.email, language=manager.language,
                                           contact_id=manager.id, context=context))
        if not managers:
            log.warning("organization %s has no manager to verify %s; request %s waits for the "
                        "team (helpdesk contact verify)", sender.organization_id, sender.email,
                        pending.id)
        return queued

    def release(self, session: Session, ticket: Ticket, sender: Contact, actor: str) -> None:
        """A held ticket whose sender was verified becomes new; the sender gets the "received"
        mail with its number, answering their first mail."""
        self.change_status(session, ticket, "new", actor, "sender verified by the organization")
        events.ticket_created(session, ticket)  # the team's from now on
        self.queue(session, event="received", ticket=ticket, contact=sender,
                   extra={"refused": refused_files(session, ticket)})

    def customer_replied(self, session: Session, ticket: Ticket, author: Contact) -> None:
        """A customer's reply puts a ticket waiting for them, or just resolved, back to work."""
        if ticket.status == "awaiting_customer":
            self.change_status(session, ticket, "in_progress", author.email, "customer replied")
        elif ticket.status == "resolved":
            self.change_status(session, ticket, "in_progress", author.email,
                               "reopened by the customer's reply")
        ticket.updated_at = utcnow()
        session.add(ticket)

    def change_status(
        self, session: Session, ticket: Ticket, to_status: str, actor: str, note: str = "",
    ) -> None:
        """Move a ticket to another status and record who, when and why."""
        if to_status not in STATUS_GROUPS:
            raise ValueError(f"unknown status {to_status!r}")
        if to_status == ticket.status:
            return
        from_status = ticket.status
        ticket.status = to_status
        ticket.updated_at = utcnow()
        if to_status == "resolved":
            ticket.resolved_at = ticket.updated_at
        session.add(ticket)
        self._record(session, ticket, from_status, to_status, actor, note)
        events.status_changed(session, ticket, from_status, to_status, actor, note)

    def resolve(
        self, session: Session, ticket: Ticket, actor: str, note: str = "",
        thread: Thread | None = None,
    ) -> Notification | None:
        """Resolve a ticket and queue the "resolved" mail with its five signed star links."""
        if ticket.status == "resolved":
            return None
        self.change_status(session, ticket, "resolved", actor, note)
        requester = session.get(Contact, ticket.requester_id)
        if requester is None or not requester.active or requester.id is None:
            return None
        assert self.rating_links is not None, "Workflow needs rating_links to resolve tickets"
        links = rating_links(self.rating_links, ticket.number, requester.id)
        return self.queue(session, event="resolved", ticket=ticket, contact=requester,
                          thread=thread, extra={"rating_links": links, "note": note})

    def _new_ticket(
        self, session: Session, requester: Contact, subject: str, channel: str, status: str,
        application_id: int | None, linked_ticket: Ticket | None,
    ) -> Ticket:
        assert requester.id is not None
        ticket = plain_row(
            Ticket,
            number=next_ticket_number(session),
            priority=_default_priority(session, requester.organization_id),
            organization_id=requester.organization_id,
            requester_id=requester.id,
            application_id=application_id,
            subject=untagged(subject)[:500],
            status=status,
            channel=channel,
            linked_ticket_id=linked_ticket.id if linked_ticket else None,
        )
        return insert_now(session, ticket, keep=True)

    def _record(self, session: Session, ticket: Ticket, from_status: str | None,
                to_status: str, actor: str, note: str) -> None:
        assert ticket.id is not None
        insert_now(session, plain_row(StatusChange, ticket_id=ticket.id, from_status=from_status,
                                      to_status=to_status, actor=actor[:320], note=note))

    def queue(
        self,
        session: Session,
        *,
        event: str,
        ticket: Ticket,
        contact: Contact,
        thread: Thread | None = None,
        extra: dict[str, Any] | None = None,
    ) -> Notification:
        """Write one outgoing mail to the outbox, with the context its template needs. Without
        a thread given, it answers the ticket's latest mail and references the ones before, so
        every mail of a ticket threads in the customer's client."""
        if thread is None:
            thread = ticket_thread(session, ticket)
        context = {
            "brand": self.brand,
            "contact_name": contact.name,
            "ticket_number": ticket.number,
            "ticket_subject": ticket.subject,
            "ticket_status": ticket.status,
            "ticket_url": f"{self.public_url}/tickets/{ticket.number}",
            "portal_url": self.public_url,
            **(extra or {}),
        }
        references = thread.chain()
        notification = plain_row(
            Notification,
            ticket_id=ticket.id,
            contact_id=contact.id,
            event=event,
            recipient=contact.email,
            language=contact.language,
            context=json.dumps(context, ensure_ascii=False),
            message_id=new_message_id(self.domain, f"t{ticket.number}.{event}"),
            in_reply_to=thread.in_reply_to,
            references=" ".join(references) or None,
            next_attempt_at=utcnow(),
        )
        return insert_now(session, notification)

    # ------------------------------------------------------------------ agents' actions

    def move(
        self, session: Session, ticket: Ticket, to_status: str, *, actor: str, note: str = "",
        planned_for: date | None = None, request: str | None = None,
    ) -> Notification | None:
        """An agent's status change: checked, recorded, and mailed to the customer where the
        design says so. Planned needs its date, awaiting-customer what exactly we need."""
        if to_status not in TRANSITIONS.get(ticket.status, frozenset()):
            raise TransitionError(f"ticket {ticket.number}: {ticket.status} cannot become "
                                  f"{to_status}")
        if to_status == "planned" and planned_for is None:
            raise TransitionError("a planned ticket needs its planned date")
        if to_status == "awaiting_customer" and not (request or "").strip():
            raise TransitionError("say exactly what the customer must send")
        if to_status == "resolved":
            return self.resolve(session, ticket, actor=actor, note=note)
        self.change_status(session, ticket, to_status, actor, note)
        event = STATUS_EVENTS.get(to_status)
        if event is None:
            return None
        requester = session.get(Contact, ticket.requester_id)
        assert requester is not None
        extra: dict[str, Any] = {"note": note}
        if planned_for is not None:
            extra["planned_for"] = planned_for.isoformat()
        if request:
            extra["request"] = request.strip()
        return self.queue(session, event=event, ticket=ticket, contact=requester, extra=extra)

    def agent_reply(self, session: Session, ticket: Ticket, *, agent_name: str,
                    text: str, files: Sequence[FileRecord] = ()) -> Notification:
        """An agent's answer: kept on the ticket's thread (with its files) and mailed to the
        requester (the files attached: the sender reads them from the blob store)."""
        requester = session.get(Contact, ticket.requester_id)
        assert requester is not None and ticket.id is not None
        sent = [{"key": f.storage_key, "filename": f.filename, "type": f.type}
                for f in files if f.accepted and f.storage_key]
        notification = self.queue(session, event="agent_reply", ticket=ticket, contact=requester,
                                  extra={"agent_name": agent_name, "reply_text": text,
                                         "files": sent})
        message = Message(ticket_id=ticket.id, direction="out", channel="agent",
                          from_address=agent_name[:320], subject=ticket.subject, text=text,
                          new_text=text, message_id=notification.message_id,
                          notification_id=notification.id)
        session.add(message)
        session.flush()
        add_files(session, message, [f for f in files if f.accepted])
        ticket.updated_at = utcnow()
        session.add(ticket)
        return notification


    # ------------------------------------------------------------------ what the team hears

    def message_received(self, session: Session, ticket: Ticket, message: Message) -> None:
        """A customer's message on an existing ticket (a mail reply, an answer from the web):
        the team's helpdesk tool hears of it, and the assignee (or every agent) gets a mail."""
        events.message_received(session, ticket, message)
        self.alert_team(session, ticket, "team_customer_replied", {
            "author": message.from_address,
            "excerpt": (message.new_text or message.text).strip()[:EXCERPT_LIMIT]})

    def rating_received(self, session: Session, ticket: Ticket) -> None:
        """A rating given (by a star link, on the web): the event, and a mail to the team when
        the customer was unhappy (1 or 2 stars)."""
        events.rating_received(session, ticket)
        if ticket.rating is not None and ticket.rating <= LOW_RATING:
            self.alert_team(session, ticket, "team_low_rating", {
                "stars": ticket.rating, "comment": ticket.rating_comment or ""})

    def verification_decided(self, session: Session, sender: Contact, approved: bool,
                             actor: str, tickets: Sequence[Ticket]) -> None:
        """A manager (or the team) decided who an unknown sender is: the event when approved,
        and a mail to the team naming the tickets released or cancelled."""
        if approved:
            events.contact_verified(session, sender, actor)
        organization = session.get(Organization, sender.organization_id)
        context = {"person_name": sender.name, "person_email": sender.email,
                   "organization_name": organization.name if organization else "",
                   "approved": approved, "decided_by": actor,
                   "tickets": [{"number": t.number, "subject": t.subject} for t in tickets],
                   "console_url": f"{self.public_url}/team"}
        for agent in self._agents_for(session, None):
            self.queue_plain(session, event="team_verification", recipient=agent.email,
                             language=agent.language, contact_id=None, context=context)

    def alert_team(self, session: Session, ticket: Ticket, event: str,
                   extra: dict[str, Any]) -> list[Notification]:
        """A mail to the ticket's assignee, or to every active agent while nobody has it, from
        the same outbox as the customers' mails. Kept with the ticket (the API lists it), never
        shown to the customer."""
        agents = self._agents_for(session, ticket.assignee_id)
        if not agents:  # (nobody to tell: nothing to look up)
            return []
        organization = session.get(Organization, ticket.organization_id)
        # "number", not "ticket_number": a mail to the team carries no reply address of the
        # ticket (an agent's answer by mail would land on the customer's ticket as a stranger's).
        context = {"number": ticket.number, "subject": ticket.subject, "status": ticket.status,
                   "organization_name": organization.name if organization else "",
                   "console_url": f"{self.public_url}/team/tickets/{ticket.number}", **extra}
        queued = []
        for agent in agents:
            queued.append(self.queue_plain(session, event=event, recipient=agent.email,
                                           language=agent.language, contact_id=None,
                                           context=context, ticket_id=ticket.id))
        return queued

    @staticmethod
    def _agents_for(session: Session, assignee_id: int | None) -> list[Agent]:
        if assignee_id is not None:
            assignee = session.get(Agent, assignee_id)
            if assignee is not None and assignee.active:
                return [assignee]
        return once_per_transaction(session, "helpdesk.active_agents", lambda: list(
            session.exec(select(Agent).where(col(Agent.active)).order_by(col(Agent.id)))))

    def notify_refused_sender(self, session: Session, *, address: str, name: str,
                              subject: str, thread: Thread) -> Notification | None:
        """Tell a sender we do not know that their mail was not accepted, at most once a day
        per address, so that a spammer's forged address gets one mail, not one per spam."""
        since = utcnow() - timedelta(days=1)
        already = session.exec(select(Notification.id).where(
            Notification.event == "refused_sender", Notification.recipient == address,
            col(Notification.created_at) >= since).limit(1)).first()
        if already is not None:
            return None
        context = {"sender_name": name or address, "contact_name": name,
                   "original_subject": subject}
        return self.queue_plain(session, event="refused_sender", recipient=address,
                                language="es", contact_id=None, context=context, thread=thread)

    def queue_plain(self, session: Session, *, event: str, recipient: str, language: str,
                    contact_id: int | None, context: dict[str, Any],
                    thread: Thread = Thread(), ticket_id: int | None = None) -> Notification:
        """Write to the outbox a mail without the ticket's tag and signed Reply-To (kept with
        ``ticket_id`` when it is about one: a mail to the team)."""
        context = {"brand": self.brand, "portal_url": self.public_url, **context}
        notification = Notification(
            ticket_id=ticket_id,
            contact_id=contact_id, event=event, recipient=recipient, language=language,
            context=json.dumps(context, ensure_ascii=False),
            message_id=new_message_id(self.domain, event.replace("_", "-")),
            in_reply_to=thread.in_reply_to, references=" ".join(thread.chain()) or None,
        )
        return insert_now(session, notification)


def untagged(subject: str) -> str:
    """The customer's subject without our [#NUMBER] tags: a new ticket opened by a reply to
    another ticket's mail ("Re: RV: [#1001] ...") would otherwise carry both numbers in every
    mail about it ("[#1002] ... Re: RV: [#1001] ...")."""
    return " ".join(OWN_TAG.sub(" ", subject).split()) or subject.strip()


_DEFAULT_PRIORITY = select(SlaPlan.default_priority).join(
    Organization, col(Organization.sla_plan) == SlaPlan.name).where(
    Organization.id == bindparam("org"))


def _default_priority(session: Session, organization_id: int) -> str:
    """A new ticket's priority: its organization's SLA plan's default, else normal."""
    known: dict[int, str] = once_per_transaction(session, "helpdesk.default_priorities", dict)
    if organization_id not in known:
        plan = session.exec(_DEFAULT_PRIORITY, params={"org": organization_id}).first()
        known[organization_id] = plan or "normal"
    return known[organization_id]


def reopenable(ticket: Ticket, reopen_days: int) -> bool:
    """Whether a customer's answer goes on this ticket (and puts it back to work) rather than
    opening a new, linked one: closed and cancelled tickets stay closed, a resolved one is
    reopened only within the reopen window (HELPDESK_REOPEN_DAYS)."""
    if ticket.status in {"closed", "cancelled"}:
        return False
    if ticket.status == "resolved":
        resolved = ticket.resolved_at or ticket.updated_at
        if resolved.tzinfo is None:
            resolved = resolved.replace(tzinfo=UTC)
        return utcnow() - resolved <= timedelta(days=reopen_days)
    return True


def refused_files(session: Session, ticket: Ticket) -> list[dict[str, str]]:
    """The attachments refused on a ticket, as the "received" mail lists them."""
    rows = session.exec(select(Attachment.filename, Attachment.reason).where(
        Attachment.ticket_id == ticket.id, col(Attachment.accepted).is_(False))).all()
    return [{"filename": name, "reason": reason or ""} for name, reason in rows]


def ticket_thread(session: Session, ticket: Ticket) -> Thread:
    """The Message-IDs of a ticket's mails, oldest first: its last one is the one to answer."""
    received = select(Message.message_id, Message.created_at).where(
        Message.ticket_id == ticket.id, col(Message.message_id).is_not(None))
    sent = select(Notification.message_id, Notification.created_at).where(
        Notification.ticket_id == ticket.id)
    rows = sorted(list(session.exec(received).all()) + list(session.exec(sent).all()),
                  key=lambda row: row[1])
    ids = list(dict.fromkeys(mid for mid, _ in rows if mid))[-THREAD_DEPTH:]
    if not ids:
        return Thread()
    return Thread(in_reply_to=ids[-1], references=tuple(ids[:-1]))
