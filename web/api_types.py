"""What the team's JSON API takes and gives (web.api): pydantic types, from which FastAPI
writes the OpenAPI description served at /api/openapi.json."""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal

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


class TicketList(BaseModel):
    items: list[TicketSummary]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null "
                                                "on the last one.")


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


class TicketDetail(TicketSummary):
    rating_comment: str | None
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
