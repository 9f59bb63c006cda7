"""The tables: organizations, contacts, tickets and their thread, and the two queues.

Vocabulary and statuses follow ../shared/DESIGN.md. Times are stored in UTC. Enumerations are
plain strings checked by the code that writes them (``gateway.workflow``), so that a new status
is a code change, not a schema change.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import BigInteger, Column, Index, LargeBinary, Text, UniqueConstraint
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(UTC)


def aware(moment: datetime) -> datetime:
    """A stored time as UTC-aware, whether or not the database kept the zone."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


# Ticket statuses, in the order of the design, with the customer-area group of each.
STATUS_GROUPS: dict[str, str] = {
    "new": "open",
    "qualified": "open",
    "in_progress": "open",
    "pending": "open",
    "planned": "open",
    "awaiting_customer": "open",
    "resolved": "completed",
    "closed": "completed",
    "cancelled": "completed",
    # Held until an organization manager verifies the unknown sender; shown in no list.
    "held": "held",
}
OPEN_STATUSES = tuple(s for s, g in STATUS_GROUPS.items() if g == "open")
COMPLETED_STATUSES = tuple(s for s, g in STATUS_GROUPS.items() if g == "completed")


class Organization(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    code: str = Field(max_length=32, unique=True, index=True)  # código de cliente
    tax_id: str = Field(max_length=32)  # CIF
    name: str = Field(max_length=200)
    sla_plan: str = Field(default="standard", max_length=32)
    # Mail from its domain that fails sender authentication: held always ("strict"), or only
    # where the domain's DMARC policy says quarantine or reject ("dmarc"), for a customer whose
    # mail server cannot authenticate.
    sender_auth: str = Field(default="strict", max_length=8)
    created_at: datetime = Field(default_factory=utcnow)
    # Raised by the database (triggers of migration 0010) whenever one of the organization's
    # tickets is added, changed or removed: what the customer area's list cache is keyed by.
    ticket_version: int = Field(default=0, sa_column=Column(
        BigInteger, nullable=False, server_default="0"))


class OrganizationDomain(SQLModel, table=True):
    """A mail domain of an organization; a domain belongs to one organization only."""

    __tablename__ = "organization_domain"
    domain: str = Field(primary_key=True, max_length=255)
    organization_id: int = Field(foreign_key="organization.id", index=True)


class Contact(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    organization_id: int = Field(foreign_key="organization.id", index=True)
    name: str = Field(max_length=200)
    email: str = Field(max_length=320, unique=True, index=True)  # stored lower-case
    phone: str = Field(default="", max_length=40)
    role: str = Field(default="", max_length=100)  # cargo
    types: str = Field(default="technical", max_length=64)  # billing,quotes,technical
    is_manager: bool = Field(default=False)
    state: str = Field(default="verified", max_length=16)  # verified / pending / rejected
    language: str = Field(default="es", max_length=8)
    password_hash: str | None = Field(default=None, max_length=255)
    active: bool = Field(default=True)
    created_at: datetime = Field(default_factory=utcnow)


class Application(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=120, unique=True)
    active: bool = Field(default=True)


class Counter(SQLModel, table=True):
    """Named counters, such as the human ticket number, incremented inside a transaction."""

    name: str = Field(primary_key=True, max_length=32)
    value: int = Field(default=0)


class Ticket(SQLModel, table=True):
    # The customer area lists an organization's tickets newest first, a page at a time, and
    # counts those of a group (an index-only count).
    __table_args__ = (Index("ix_ticket_org_created", "organization_id", "created_at"),
                      Index("ix_ticket_org_status", "organization_id", "status"))
    id: int | None = Field(default=None, primary_key=True)
    number: int = Field(unique=True, index=True)
    organization_id: int = Field(foreign_key="organization.id", index=True)
    requester_id: int = Field(foreign_key="contact.id", index=True)
    application_id: int | None = Field(default=None, foreign_key="application.id")
    subject: str = Field(max_length=500)
    status: str = Field(default="new", max_length=24, index=True)
    channel: str = Field(default="email", max_length=16)
    linked_ticket_id: int | None = Field(default=None, foreign_key="ticket.id")
    rating: int | None = Field(default=None)
    rating_comment: str | None = Field(default=None, sa_column=Column(Text))
    rating_source: str | None = Field(default=None, max_length=16)
    rated_at: datetime | None = Field(default=None)  # when the rating was first given
    rating_reminded_at: datetime | None = Field(default=None)  # the one reminder, when sent
    # A star link's automatic rating, until it stands (gateway.ratings.promote_pending).
    pending_rating: int | None = None
    pending_rating_at: datetime | None = None
    resolved_at: datetime | None = Field(default=None)
    created_at: datetime = Field(default_factory=utcnow, index=True)
    updated_at: datetime = Field(default_factory=utcnow)
    priority: str = Field(default="normal", max_length=8, index=True)  # PRIORITIES
    assignee_id: int | None = Field(default=None, foreign_key="agent.id", index=True)
    # Raised by the database on every change of the row (migration 0015): what an agent's
    # If-Match names, so that two agents never overwrite each other's change unseen.
    version: int = Field(default=1)


PRIORITIES = ("low", "normal", "high", "urgent")


class Message(SQLModel, table=True):
    """One entry of a ticket's thread."""

    id: int | None = Field(default=None, primary_key=True)
    ticket_id: int = Field(foreign_key="ticket.id", index=True)
    direction: str = Field(max_length=4)  # in / out
    channel: str = Field(max_length=16)  # email / web / agent
    author_contact_id: int | None = Field(default=None, foreign_key="contact.id")
    from_address: str = Field(default="", max_length=320, index=True)
    subject: str = Field(default="", max_length=500)
    automatic: bool = Field(default=False)  # an auto-reply kept on the ticket, acted on never
    text: str = Field(default="", sa_column=Column(Text, nullable=False))
    html: str | None = Field(default=None, sa_column=Column(Text))  # sanitized
    new_text: str = Field(default="", sa_column=Column(Text, nullable=False))
    message_id: str | None = Field(default=None, max_length=998, index=True)
    in_reply_to: str | None = Field(default=None, sa_column=Column(Text))
    references: str | None = Field(default=None, sa_column=Column(Text))
    raw_key: str | None = Field(default=None, max_length=80)  # blob key of the raw mail
    inbound_id: int | None = Field(default=None, foreign_key="inbound_message.id")
    notification_id: int | None = Field(default=None, foreign_key="notification.id")
    created_at: datetime = Field(default_factory=utcnow)
    # An agent's internal note: for the team only, never shown to the customer nor mailed.
    internal: bool = Field(default=False)
    author_agent_id: int | None = Field(default=None, foreign_key="agent.id")


class Attachment(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    message_id: int = Field(foreign_key="message.id", index=True)
    ticket_id: int = Field(foreign_key="ticket.id", index=True)
    filename: str = Field(max_length=255)
    content_type: str = Field(max_length=127)
    size: int
    sha256: str = Field(max_length=64)
    storage_key: str | None = Field(default=None, max_length=80)
    content_id: str | None = Field(default=None, max_length=255)
    accepted: bool = Field(default=True)
    reason: str | None = Field(default=None, max_length=255)


class StatusChange(SQLModel, table=True):
    __tablename__ = "status_change"
    id: int | None = Field(default=None, primary_key=True)
    ticket_id: int = Field(foreign_key="ticket.id", index=True)
    from_status: str | None = Field(default=None, max_length=24)
    to_status: str = Field(max_length=24)
    actor: str = Field(max_length=320)  # "system", an agent's name, a contact's email
    note: str = Field(default="", sa_column=Column(Text, nullable=False))
    created_at: datetime = Field(default_factory=utcnow)


class RatingOpening(SQLModel, table=True):
    """One opening of a star link, kept to tell a scanner's burst of openings from a person."""

    __tablename__ = "rating_opening"
    id: int | None = Field(default=None, primary_key=True)
    ticket_id: int = Field(foreign_key="ticket.id", index=True)
    stars: int
    opened_at: datetime = Field(default_factory=utcnow, index=True)


class ThrottleEvent(SQLModel, table=True):
    """One failed login or password request, kept as long as the throttle looks back, so that
    every gateway process sharing the database counts the same attempts (web/throttle.py)."""

    __tablename__ = "throttle_event"
    __table_args__ = (Index("ix_throttle_event_key_at", "key", "at"),)
    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(max_length=400)  # "login:email:…", "login:ip:…", "forgot:ip:…"
    at: datetime = Field(default_factory=utcnow, index=True)


AGENT_ROLES = ("agent", "admin")


class Agent(SQLModel, table=True):
    """A member of the support team: answers tickets through the API, the console or the CLI.
    An admin also manages agents and tokens."""

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=200)
    email: str = Field(max_length=320, unique=True)
    role: str = Field(default="agent", max_length=16)
    active: bool = Field(default=True)
    language: str = Field(default="es", max_length=8)
    password_hash: str | None = Field(default=None, sa_column=Column(Text))  # console login
    created_at: datetime = Field(default_factory=utcnow)


class AgentSession(SQLModel, table=True):
    """A signed-in browser of the team console: the customer area's sessions (WebSession), for
    an agent, under a cookie of its own (path /team)."""

    __tablename__ = "agent_session"
    id: str = Field(primary_key=True, max_length=64)  # sha256 hex of the cookie's token
    agent_id: int = Field(foreign_key="agent.id", index=True)
    created_at: datetime = Field(default_factory=utcnow)
    expires_at: datetime = Field(index=True)
    revoked_at: datetime | None = None
    address: str = Field(default="", max_length=64)
    user_agent: str = Field(default="", max_length=200)


class ApiToken(SQLModel, table=True):
    """A named key to the JSON API, acting as its agent. The token is shown once, when made;
    only its SHA-256 is stored, with a short prefix to tell tokens apart in lists."""

    __tablename__ = "api_token"
    id: int | None = Field(default=None, primary_key=True)
    agent_id: int = Field(foreign_key="agent.id", index=True)
    name: str = Field(max_length=100)
    token_hash: str = Field(max_length=64, unique=True)
    prefix: str = Field(max_length=16)
    created_at: datetime = Field(default_factory=utcnow)
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None


class WebSession(SQLModel, table=True):
    """A signed-in browser of the customer area. The cookie carries a random token; only its
    SHA-256 is stored, so the table cannot be used to sign in. A session ends when it expires
    (idle for HELPDESK_SESSION_HOURS) or is revoked: logout, a password set, the contact
    deactivated, ``helpdesk contact signout``."""

    __tablename__ = "web_session"
    id: str = Field(primary_key=True, max_length=64)  # sha256 hex of the cookie's token
    contact_id: int = Field(foreign_key="contact.id", index=True)
    created_at: datetime = Field(default_factory=utcnow)
    expires_at: datetime = Field(index=True)
    revoked_at: datetime | None = None
    address: str = Field(default="", max_length=64)  # where it signed in from
    user_agent: str = Field(default="", max_length=200)


class Notification(SQLModel, table=True):
    """The outbox: one outgoing mail, written in the transaction of the change that causes it."""

    id: int | None = Field(default=None, primary_key=True)
    ticket_id: int | None = Field(default=None, foreign_key="ticket.id", index=True)
    contact_id: int | None = Field(default=None, foreign_key="contact.id")
    event: str = Field(max_length=40)
    recipient: str = Field(max_length=320)
    language: str = Field(default="es", max_length=8)
    context: str = Field(default="{}", sa_column=Column(Text, nullable=False))  # JSON
    message_id: str = Field(max_length=255, index=True)
    in_reply_to: str | None = Field(default=None, sa_column=Column(Text))
    references: str | None = Field(default=None, sa_column=Column(Text))
    subject: str | None = Field(default=None, max_length=998)
    raw: bytes | None = Field(default=None, sa_column=Column(LargeBinary))  # as first rendered
    # queued / sending / sent / failed / bounced
    state: str = Field(default="queued", max_length=12, index=True)
    attempts: int = Field(default=0)
    next_attempt_at: datetime = Field(default_factory=utcnow, index=True)
    claimed_at: datetime | None = Field(default=None)
    claimed_by: str | None = Field(default=None, max_length=128)  # the sender delivering it
    last_error: str | None = Field(default=None, sa_column=Column(Text))
    # Since when delivery keeps failing for temporary reasons (retried until the retry time is
    # over); cleared by `helpdesk outbox retry`.
    failing_since: datetime | None = Field(default=None)
    # Why a failed notification failed: refused (5xx), unwritable, expired (temporary failures
    # for longer than HELPDESK_OUTBOX_RETRY_DAYS).
    failure: str | None = Field(default=None, max_length=16)
    created_at: datetime = Field(default_factory=utcnow)
    sent_at: datetime | None = Field(default=None)


class VerificationRequest(SQLModel, table=True):
    """An unknown sender of a known organization, waiting for a manager to approve or reject."""

    __tablename__ = "verification_request"
    id: int | None = Field(default=None, primary_key=True)
    organization_id: int = Field(foreign_key="organization.id", index=True)
    contact_id: int = Field(foreign_key="contact.id", index=True)
    ticket_id: int | None = Field(default=None, foreign_key="ticket.id")
    state: str = Field(default="pending", max_length=12, index=True)  # pending/approved/rejected
    decided_by: str | None = Field(default=None, max_length=320)
    created_at: datetime = Field(default_factory=utcnow)
    decided_at: datetime | None = Field(default=None)


class InboundMessage(SQLModel, table=True):
    """The inbound queue: every accepted mail, recorded before the channel acknowledges it."""

    __tablename__ = "inbound_message"
    __table_args__ = (UniqueConstraint("channel", "source", "source_ref"),)
    id: int | None = Field(default=None, primary_key=True)
    channel: str = Field(max_length=8)  # smtp / lmtp / imap / file
    source: str = Field(default="", max_length=255)  # peer address, mailbox, or file name
    source_ref: str | None = Field(default=None, max_length=255)  # e.g. "UIDVALIDITY:UID"
    mail_from: str = Field(default="", max_length=320)
    helo: str = Field(default="", max_length=255)  # the SMTP client's HELO/EHLO name
    rcpt_to: str = Field(default="", sa_column=Column(Text, nullable=False))
    raw_key: str = Field(max_length=80)
    raw_sha256: str = Field(max_length=64)
    size: int
    state: str = Field(default="queued", max_length=12, index=True)  # queued/processing/done/failed
    claimed_by: str | None = Field(default=None, max_length=128)  # the worker leasing it
    claimed_at: datetime | None = Field(default=None)
    # Leases that ended without an outcome (a worker died on the mail): counted to give up on a
    # mail that kills its worker; reset when a temporary error sends the mail back to the queue.
    attempts: int = Field(default=0)
    # Temporary errors (disk full, database gone): the mail waits until next_attempt_at, and
    # is kept as failed once it has been failing for HELPDESK_INBOUND_RETRY_DAYS.
    next_attempt_at: datetime | None = Field(default=None)
    failing_since: datetime | None = Field(default=None)
    outcome: str | None = Field(default=None, max_length=16)
    reason: str | None = Field(default=None, sa_column=Column(Text))
    ticket_id: int | None = Field(default=None, foreign_key="ticket.id")
    header_message_id: str | None = Field(default=None, max_length=998)
    error: str | None = Field(default=None, sa_column=Column(Text))
    received_at: datetime = Field(default_factory=utcnow)
    processed_at: datetime | None = Field(default=None)
    # Sender authentication (gateway.inbound.sender_auth): the verdict as JSON, whether the
    # From domain passed aligned (None: not judged), and who released it from quarantine.
    sender_auth: str | None = Field(default=None, sa_column=Column(Text))
    authenticated: bool | None = None
    released_by: str | None = Field(default=None, max_length=200)


class InboundClaim(SQLModel, table=True):
    """The first mail seen with given raw bytes or a given Message-ID: a later copy finds the
    key taken and is recorded as a duplicate of it.

    The primary key makes the database itself refuse a second claim, so two workers (or two
    gateway processes) applying two copies at the same moment cannot both win: on PostgreSQL
    the second insert waits for the first transaction and then finds the key."""

    __tablename__ = "inbound_claim"
    key: str = Field(primary_key=True, max_length=80)  # "raw:<sha256>" or "mid:<sha256 of id>"
    inbound_id: int = Field(foreign_key="inbound_message.id")


class ImapMailboxState(SQLModel, table=True):
    """Where the IMAP poller is in each mailbox: the last UID handled under one UIDVALIDITY.

    UIDs and UIDVALIDITY are unsigned 32-bit numbers (RFC 3501 §2.3.1.1), hence BIGINT.
    """

    __tablename__ = "imap_mailbox_state"
    mailbox: str = Field(primary_key=True, max_length=255)  # the poller's name: user@host/folder
    uidvalidity: int = Field(sa_column=Column(BigInteger, nullable=False))
    last_uid: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    updated_at: datetime = Field(default_factory=utcnow)


class TeamAction(SQLModel, table=True):
    """What an agent did, and with which token (none: the console): every write of the team's
    API and console records one, with its details as JSON."""

    __tablename__ = "team_action"
    id: int | None = Field(default=None, primary_key=True)
    ticket_id: int | None = Field(default=None, foreign_key="ticket.id", index=True)
    agent_id: int = Field(foreign_key="agent.id", index=True)
    token_id: int | None = Field(default=None, foreign_key="api_token.id")
    action: str = Field(max_length=40)
    detail: str = Field(default="{}", sa_column=Column(Text, nullable=False))
    created_at: datetime = Field(default_factory=utcnow)


class IdempotentRequest(SQLModel, table=True):
    """A POST of the API sent with an ``Idempotency-Key``: its answer, kept so that the same
    request sent again gets it again instead of acting twice (status 0 while it runs)."""

    __tablename__ = "idempotent_request"
    __table_args__ = (UniqueConstraint("agent_id", "key"),)
    id: int | None = Field(default=None, primary_key=True)
    agent_id: int = Field(foreign_key="agent.id")
    key: str = Field(max_length=200)
    fingerprint: str = Field(max_length=64)  # SHA-256 of method, path and body
    status_code: int = Field(default=0)
    headers: str = Field(default="{}", sa_column=Column(Text, nullable=False))  # JSON
    body: bytes | None = Field(default=None, sa_column=Column(LargeBinary))
    created_at: datetime = Field(default_factory=utcnow, index=True)


WEBHOOK_EVENTS = ("ticket.created", "message.received", "ticket.status_changed",
                  "rating.received", "contact.verified", "sla.warning", "sla.breached")


class Webhook(SQLModel, table=True):
    """A subscription of the team's helpdesk tool: the events it wants, where to POST them, and
    the secret they are signed with (Standard Webhooks: ``whsec_`` and base64)."""

    id: int | None = Field(default=None, primary_key=True)
    url: str = Field(sa_column=Column(Text, nullable=False))
    secret: str = Field(max_length=100)
    events: str = Field(default="*", sa_column=Column(Text, nullable=False))  # "*" or a,b
    description: str = Field(default="", max_length=200)
    active: bool = Field(default=True)
    created_at: datetime = Field(default_factory=utcnow)

    def wants(self, event: str) -> bool:
        return self.events == "*" or event in self.events.split(",")


class WebhookDelivery(SQLModel, table=True):
    """The webhooks' outbox: one event for one subscription, written in the transaction of the
    change it tells of, delivered in order, with retries (gateway.webhooks)."""

    __tablename__ = "webhook_delivery"
    __table_args__ = (Index("ix_webhook_delivery_due", "webhook_id", "state", "id"),)
    id: int | None = Field(default=None, primary_key=True)
    webhook_id: int = Field(foreign_key="webhook.id")
    event_id: str = Field(max_length=40, index=True)  # webhook-id: the same for every retry
    event: str = Field(max_length=40)
    payload: str = Field(sa_column=Column(Text, nullable=False))  # the JSON body, as signed
    state: str = Field(default="queued", max_length=12)  # queued, sent, failed
    attempts: int = Field(default=0)
    next_attempt_at: datetime = Field(default_factory=utcnow)
    claimed_at: datetime | None = None
    claimed_by: str | None = Field(default=None, max_length=128)
    last_status: int | None = None  # the receiver's HTTP status, none if it could not be reached
    last_error: str | None = Field(default=None, sa_column=Column(Text))
    created_at: datetime = Field(default_factory=utcnow)
    delivered_at: datetime | None = None


class SlaCalendar(SQLModel, table=True):
    """Working hours for SLA clocks (gateway.business_time): JSON columns, as
    ``{"mon": [["09:00", "14:00"], ...], ...}``, seasons ``[{"from": "06-15", "to": "09-15",
    "hours": {...}}]`` and extra holidays ``["2026-01-29", ...]``."""

    __tablename__ = "sla_calendar"
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=64, unique=True)
    timezone: str = Field(default="Europe/Madrid", max_length=64)
    country: str | None = Field(default="ES", max_length=8)
    subdivision: str | None = Field(default=None, max_length=16)
    hours: str = Field(sa_column=Column(Text, nullable=False))
    seasons: str = Field(default="[]", sa_column=Column(Text, nullable=False))
    extra_holidays: str = Field(default="[]", sa_column=Column(Text, nullable=False))


class SlaPlan(SQLModel, table=True):
    """An organization's SLA (``Organization.sla_plan`` names it): business minutes per target
    and priority (``{"first_response": {"normal": 240, ...}, ...}``), on a calendar."""

    __tablename__ = "sla_plan"
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=32, unique=True)
    calendar_id: int = Field(foreign_key="sla_calendar.id")
    default_priority: str = Field(default="normal", max_length=8)
    targets: str = Field(sa_column=Column(Text, nullable=False))
    warn_at: str = Field(default="[0.75, 0.9]", sa_column=Column(Text, nullable=False))


class SlaClock(SQLModel, table=True):
    """A ticket's clock for one target, as last worked out from its history (gateway.sla):
    what lists sort and filter by, and what explains a due time."""

    __tablename__ = "sla_clock"
    __table_args__ = (UniqueConstraint("ticket_id", "target"),)
    id: int | None = Field(default=None, primary_key=True)
    ticket_id: int = Field(foreign_key="ticket.id", index=True)
    target: str = Field(max_length=20)
    contractual: bool
    minutes: int
    due_at: datetime | None = Field(default=None, index=True)
    met_at: datetime | None = None
    state: str = Field(max_length=12)  # running, paused, met, breached
    breached: bool = False
    over_minutes: float = 0.0
    used: float = 0.0
    segments: str = Field(default="[]", sa_column=Column(Text, nullable=False))  # JSON
    ticket_version: int = 0  # the ticket's version it was worked out from
    computed_at: datetime = Field(default_factory=utcnow)
    # When to work it out again without a change to the ticket: the next warning share or due
    # time of a running clock; None when only a change can move it (paused, met, closed).
    recheck_at: datetime | None = Field(default=None, index=True)


class SlaWarning(SQLModel, table=True):
    """A warning given for a ticket's clock (a share of its target used, or its breach):
    written with the mail and the webhook event it causes, unique, so it is given once however
    many gateways look."""

    __tablename__ = "sla_warning"
    __table_args__ = (UniqueConstraint("ticket_id", "target", "level"),)
    id: int | None = Field(default=None, primary_key=True)
    ticket_id: int = Field(foreign_key="ticket.id")
    target: str = Field(max_length=20)
    level: str = Field(max_length=12)  # "75%", "90%"..., or "breached"
    created_at: datetime = Field(default_factory=utcnow)
