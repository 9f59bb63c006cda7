"""What the team's JSON API takes and gives (web.api): pydantic types, from which FastAPI
writes the OpenAPI description served at /api/openapi.json."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

Status = Literal["new", "qualified", "in_progress", "pending", "planned", "awaiting_customer",
                 "resolved", "closed", "cancelled", "held"]
Priority = Literal["low", "normal", "high", "urgent"]


class Problem(BaseModel):
    """An error, as RFC 9457 describes (``application/problem+json``)."""

    type: str = Field(default="about:blank", description="A URI naming the kind of problem.")
    title: str
    status: int
    detail: str | None = None
    errors: list[dict] | None = Field(default=None,
                                      description="The fields refused, for 422 answers.")


class Organization(BaseModel):
    code: str
    name: str
    tax_id: str
    sla_plan: str
    sender_auth: Literal["strict", "dmarc"] = "strict"


class Person(BaseModel):
    name: str
    email: str


class TicketSummary(BaseModel):
    number: int
    subject: str
    status: Status
    priority: Priority
    channel: str
    organization: Organization
    requester: Person
    application: str | None
    assignee: Person | None
    rating: int | None
    created_at: datetime
    updated_at: datetime
    version: int = Field(description="Changes with every change of the ticket: send it back "
                                     "as If-Match so as not to overwrite a change unseen.")
    sla_due_at: datetime | None = Field(
        default=None, description="The soonest due time of its running SLA clocks (as last "
                                  "worked out, within seconds).")


class TicketList(BaseModel):
    items: list[TicketSummary]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null "
                                                "on the last one.")


class SenderAuthOut(BaseModel):
    authenticated: bool | None = Field(description="null: not judged (off, or DNS failed).")
    summary: str = Field(description="spf=... dkim=... dmarc=...; aligned or not.")
    released_by: str | None = Field(description="Who let it out of quarantine, if anyone.")


class MessageOut(BaseModel):
    id: int
    direction: Literal["in", "out"]
    channel: str = Field(description="email, web, agent (an answer), note (internal: never "
                                     "shown to the customer)")
    internal: bool
    author: str
    subject: str
    new_text: str = Field(description="What this message adds, without quoted history.")
    text: str = Field(description="The whole text, quoted history included.")
    automatic: bool
    created_at: datetime
    sender_auth: SenderAuthOut | None = Field(
        default=None, description="For a mail: whether its From domain was authenticated "
        "(SPF or DKIM aligned) and how; null when not judged.")


class FileOut(BaseModel):
    id: int
    message_id: int
    filename: str
    content_type: str = Field(description="The type we detected, not the sender's claim.")
    size: int
    accepted: bool
    reason: str | None
    download_url: str | None = Field(description="Its path on this server (GET, same token).")


class HistoryEntry(BaseModel):
    from_status: str | None
    to_status: str
    actor: str
    note: str
    created_at: datetime


class NotificationOut(BaseModel):
    id: int
    event: str
    recipient: str
    state: Literal["queued", "sending", "sent", "failed", "bounced"] | str
    attempts: int
    failure: str | None
    last_error: str | None
    created_at: datetime
    sent_at: datetime | None


class SegmentOut(BaseModel):
    kind: Literal["running", "paused", "outside_hours", "holiday"]
    start: datetime
    end: datetime
    minutes: float


class ClockOut(BaseModel):
    target: Literal["first_response", "resolution", "qualify", "plan"]
    contractual: bool = Field(description="False: one of the team's internal targets.")
    minutes: int = Field(description="The target, in business minutes.")
    state: Literal["running", "paused", "met", "breached"]
    due_at: datetime | None = Field(description="None while paused.")
    met_at: datetime | None
    breached: bool
    over_minutes: float
    used: float = Field(description="Share of the target used (1 = all).")
    segments: list[SegmentOut] = Field(description="Why the due time is what it is.")


class TicketDetail(TicketSummary):
    rating_comment: str | None
    sla: list[ClockOut] = Field(default=[], description="Its SLA clocks, worked out now.")
    messages: list[MessageOut]
    files: list[FileOut]
    history: list[HistoryEntry]
    notifications: list[NotificationOut]


class StatusChangeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: Literal["qualified", "in_progress", "pending", "planned", "awaiting_customer",
                    "resolved", "closed", "cancelled"]
    note: str = Field(default="", max_length=5000)
    planned_for: date | None = Field(default=None, description="Required for planned.")
    request: str | None = Field(default=None, max_length=5000,
                                description="Required for awaiting_customer: exactly what "
                                            "the customer must send.")


class TextIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=1, max_length=100_000)


class TicketPatch(BaseModel):
    """Only the fields sent change; null clears application and assignee."""

    model_config = ConfigDict(extra="forbid")

    priority: Priority | None = None
    application: str | None = Field(default=None, description="An application's name.")
    assignee: str | None = Field(default=None, description="An active agent's email.")


class Done(BaseModel):
    """What an action did to the ticket."""

    number: int
    status: Status
    version: int
    notification_id: int | None = Field(default=None,
                                        description="The mail queued to the customer, if any.")
    message_id: int | None = None
    changed: list[str] = []


class AgentOut(BaseModel):
    id: int
    name: str
    email: str
    role: Literal["agent", "admin"]
    active: bool
    language: str


class AgentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    email: str = Field(min_length=3, max_length=320, pattern=r"^[^@\s]+@[^@\s]+$")
    role: Literal["agent", "admin"] = "agent"
    language: Literal["es", "en"] = "es"


class AgentPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    active: bool | None = None
    role: Literal["agent", "admin"] | None = None


class OrganizationIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: str = Field(min_length=1, max_length=20, pattern=r"^[A-Za-z0-9_-]+$")
    tax_id: str = Field(min_length=1, max_length=20)
    name: str = Field(min_length=1, max_length=200)
    domains: list[str] = Field(default=[], max_length=20,
                               description="Mail domains whose senders belong to it.")


class ContactOut(BaseModel):
    id: int
    organization: str
    name: str
    email: str
    role: str
    phone: str
    types: list[str]
    language: str
    is_manager: bool
    state: Literal["verified", "pending", "rejected", "external"] | str
    active: bool


class ContactIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    organization: str = Field(min_length=1, max_length=20, description="Its code.")
    name: str = Field(min_length=1, max_length=200)
    email: str = Field(min_length=3, max_length=320, pattern=r"^[^@\s]+@[^@\s]+$")
    role: str = Field(default="", max_length=100)
    phone: str = Field(default="", max_length=40)
    types: list[Literal["billing", "quotes", "technical"]] = ["technical"]
    language: Literal["es", "en"] = "es"
    is_manager: bool = False


class ContactPatch(BaseModel):
    """Only the fields sent change."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=200)
    email: str | None = Field(default=None, min_length=3, max_length=320,
                              pattern=r"^[^@\s]+@[^@\s]+$")
    role: str | None = Field(default=None, max_length=100)
    phone: str | None = Field(default=None, max_length=40)
    types: list[Literal["billing", "quotes", "technical"]] | None = None
    language: Literal["es", "en"] | None = None
    is_manager: bool | None = None
    active: bool | None = None


class PendingContactIn(BaseModel):
    """A person not yet a contact who called: they wait for a manager of the organization to
    confirm them (the managers are mailed), with a held ticket for what they asked."""

    model_config = ConfigDict(extra="forbid")

    organization: str = Field(min_length=1, max_length=20)
    name: str = Field(min_length=1, max_length=200)
    email: str = Field(min_length=3, max_length=320, pattern=r"^[^@\s]+@[^@\s]+$")
    phone: str = Field(default="", max_length=40)
    subject: str = Field(min_length=1, max_length=500)
    description: str = Field(default="", max_length=20000)


class PendingContactOut(BaseModel):
    contact: ContactOut
    ticket: int = Field(description="The held ticket's number.")
    managers_asked: int


class ApplicationIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=120)


class WebhookIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(min_length=8, max_length=2000, pattern=r"^https?://")
    events: list[Literal["ticket.created", "message.received", "ticket.status_changed",
                         "rating.received", "contact.verified", "sla.warning",
                         "sla.breached"]] = Field(
        default=[], description="Empty: every event.")
    description: str = Field(default="", max_length=200)


class WebhookOut(BaseModel):
    id: int
    url: str
    events: list[str]
    description: str
    active: bool


class WebhookCreated(WebhookOut):
    secret: str = Field(description="The signing secret (Standard Webhooks): shown this once.")


class DeliveryOut(BaseModel):
    id: int
    event_id: str
    event: str
    state: Literal["queued", "sent", "failed"] | str
    attempts: int
    last_status: int | None
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None


class TargetReport(BaseModel):
    organization: str
    target: Literal["first_response", "resolution", "qualify", "plan"]
    contractual: bool
    tickets: int
    met: int
    breached: int
    median_minutes: float | None
    p90_minutes: float | None


class RatingsReport(BaseModel):
    organization: str
    count: int
    average: float | None
    stars: dict[str, int] = Field(description="How many of each, \"1\" to \"5\".")


class SlaReport(BaseModel):
    since: datetime
    until: datetime
    targets: list[TargetReport]
    ratings: list[RatingsReport]


Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
Target = Literal["first_response", "resolution", "qualify", "plan"]
WindowText = Annotated[str, Field(pattern=r"^[0-2][0-9]:[0-5][0-9]-[0-2][0-9]:[0-5][0-9]$",
                                  examples=["09:00-14:00"])]
MonthDay = Annotated[str, Field(pattern=r"^[01][0-9]-[0-3][0-9]$", examples=["06-15"])]
Minutes = Annotated[int, Field(ge=1, le=1_000_000)]


class SlaSeason(BaseModel):
    """Hours of their own between two days of every year (both included)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    start: MonthDay = Field(alias="from")
    end: MonthDay = Field(alias="to")
    hours: dict[Day, list[WindowText]] = Field(max_length=7)


class SlaCalendarIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    timezone: str = Field(default="Europe/Madrid", min_length=1, max_length=64)
    country: str | None = Field(default="ES", min_length=2, max_length=3,
                                description="Its public holidays (holidays package); null: none.")
    region: str | None = Field(default=None, min_length=1, max_length=8,
                               description='And its region\'s: "AR", "MD", "CT"...')
    hours: dict[Day, list[WindowText]] = Field(
        max_length=7, description="Working windows per day; a day left out is not worked.",
        examples=[{d: ["09:00-14:00", "15:30-18:30"] for d in ("mon", "tue", "wed", "thu",
                                                                "fri")}])
    seasons: list[SlaSeason] = Field(default=[], max_length=12)
    holidays: list[date] = Field(default=[], max_length=366,
                                 description="Extra days off: local holidays, company days.")


class SlaCalendarOut(SlaCalendarIn):
    name: str


class SlaPlanIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    calendar: str = Field(min_length=1, max_length=64)
    default_priority: Priority = "normal"
    targets: dict[Target, dict[Priority, Minutes]] = Field(
        min_length=1, description="Business minutes per target and priority; each target "
        "names the default priority's (others left out take them). first_response and "
        "resolution are contractual (the customer sees them), qualify and plan internal.")
    warn_at: list[Annotated[float, Field(gt=0, lt=1)]] = Field(
        default=[0.75, 0.9], max_length=5,
        description="Shares of a target used at which the team is warned (and at breach).")


class SlaPlanOut(SlaPlanIn):
    name: str
    organizations: list[str] = Field(description="The codes of the organizations on it.")


class OrganizationPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sla_plan: str | None = Field(default=None, min_length=1, max_length=32,
                                 description="The SLA plan it is on; its open tickets follow.")
    sender_auth: Literal["strict", "dmarc"] | None = Field(
        default=None, description="Mail from its domain that fails sender authentication is "
        "held always (strict), or only where the domain's DMARC policy says quarantine or "
        "reject (dmarc: for a customer whose mail server cannot authenticate).")


class Released(BaseModel):
    id: int
    released_by: str


class QuarantinedOut(BaseModel):
    id: int
    received_at: datetime
    channel: str
    sender: str = Field(description="The From address the mail claims.")
    subject: str
    reason: str = Field(description="Why it was held: the authentication verdict.")
