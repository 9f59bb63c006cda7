"""The organization's tickets: the lists (Abiertos / Completados / Valorar), a ticket's page with
its thread, files, history and every mail we sent about it, the customer's answer from the web,
and file downloads. Everything is limited to the contact's own organization."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from email import message_from_bytes, policy
from typing import Any

from markupsafe import Markup
from sqlmodel import Session, col, select
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response

from gateway import customer_requests
from gateway.ratings import RATEABLE_STATUSES, is_final
from gateway.workflow import reopenable
from storage.db import transaction
from storage.models import (
    Attachment,
    Contact,
    Message,
    Notification,
    SlaClock,
    StatusChange,
    Ticket,
)
from storage.tickets import GROUPS, ticket_by_number, ticket_page
from web import csrf
from web.auth import RATING_REMINDER, identify, signed_in
from web.forms import posted
from web.pages import language_of
from web.uploads import kept_tokens, received_files

PER_PAGE = 25
INLINE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif"})
ANSWER_LIMIT = 20000


async def list_page(request: Request) -> Response:
    """A ticket list: on the event loop when it is kept (web.fragments) under the ticket version
    read with the signed-in contact; the queries of one not kept yet (a count over thousands of
    tickets, a search through subjects) run in the thread pool."""
    group = request.query_params.get("group", "open")
    if group not in GROUPS:
        group = "open"
    search = request.query_params.get("q", "")[:200]
    page_number = _number(request.query_params.get("page"), 1)
    pages = request.app.state.pages
    await identify(request)
    contact = signed_in(request)
    if not isinstance(contact, Contact):
        return contact
    organization_id = contact.organization_id
    lang = language_of(request)

    def render() -> Markup:
        with Session(request.app.state.engine) as session:
            page = ticket_page(session, organization_id, group, page=page_number,
                               per_page=PER_PAGE, search=search)
        return pages.fragment("_ticket_list.html", lang,
                              {"page": page, "group": group, "search": search})

    # The version is read with the contact, before the tickets: a change that lands in
    # between is then shown under the older version at worst, never older tickets under the
    # newer one.
    fragments = request.app.state.fragments
    key = ("tickets", organization_id, request.state.ticket_version, lang, group, page_number,
           search)
    listing = fragments.kept(key)
    if listing is None:
        listing = await run_in_threadpool(fragments.get, key, render)
    # Only if there is one: a session changed is a cookie signed and sent again.
    unrated = request.session.pop(RATING_REMINDER) if RATING_REMINDER in request.session else 0
    return pages.render(
        request, "tickets.html",
        {"listing": listing, "group": group, "groups": list(GROUPS), "search": search,
         "unrated": unrated},
    )


@dataclass(frozen=True)
class SentMail:
    """A mail we sent about the ticket, as its page lists it."""

    notification: Notification
    text: str


def detail_page(request: Request) -> Response:
    return _detail(request, request.path_params["number"])


def _detail(request: Request, number: int, *, answer: str = "", errors: dict | None = None,
            refused: list | None = None, kept: list | None = None,
            status_code: int = 200) -> Response:
    pages = request.app.state.pages
    settings = request.app.state.settings
    contact = signed_in(request)
    if not isinstance(contact, Contact):
        return contact
    with Session(request.app.state.engine) as session:
        ticket = _visible_ticket(session, contact, number)
        if ticket is None:
            return pages.render(request, "error.html", {"error": "not_found"}, status_code=404)
        messages = session.exec(
            # An agent's internal note is the team's only: never on the customer's page.
            select(Message).where(Message.ticket_id == ticket.id, col(Message.internal).is_(False))
            .order_by(col(Message.created_at), col(Message.id))).all()
        files = session.exec(
            select(Attachment).where(Attachment.ticket_id == ticket.id)
            .order_by(col(Attachment.id))).all()
        history = session.exec(
            select(StatusChange).where(StatusChange.ticket_id == ticket.id)
            .order_by(col(StatusChange.id))).all()
        sent = session.exec(
            # The mails to the customer's people: not the team's own about the ticket.
            select(Notification).where(Notification.ticket_id == ticket.id,
                                       col(Notification.contact_id).is_not(None))
            .order_by(col(Notification.created_at), col(Notification.id))).all()
        authors = {c.id: c for c in session.exec(select(Contact).where(col(Contact.id).in_(
            {m.author_contact_id for m in messages if m.author_contact_id})))}
        # The customer sees the contractual targets of their SLA, never the team's internal:
        # as serve last worked them out (gateway.sla_clocks), not worked out per view.
        service = session.exec(select(SlaClock).where(
            SlaClock.ticket_id == ticket.id, col(SlaClock.contractual))
            .order_by(col(SlaClock.id))).all()
    by_message: dict[int, list[Attachment]] = {}
    for item in files:
        by_message.setdefault(item.message_id, []).append(item)
    shown = [_shown(ticket, message, by_message.get(message.id or 0, []), authors)
             for message in messages]
    request_text = _what_we_need(ticket, sent)
    opened = request.query_params.get("opened") == "1"
    context = {
        "ticket": ticket, "messages": shown,
        "history": [(change, note_code(change.note)) for change in history],
        "mails": [SentMail(n, _mail_text(n)) for n in sent],
        "request_text": request_text, "opened": opened,
        "opening_files": by_message.get(messages[0].id or 0, []) if opened and messages else [],
        "rateable": ticket.status in RATEABLE_STATUSES, "rating_final": is_final(ticket),
        "can_answer": reopenable(ticket, settings.reopen_days) and ticket.status != "held",
        "answer": answer, "errors": errors or {}, "refused": refused or [],
        "kept": kept or [], "max_size": settings.max_attachment_size, "service": service,
    }
    return pages.render(request, "ticket.html", context, status_code=status_code)


@dataclass(frozen=True)
class ShownMessage:
    """A message of the thread as the page shows it."""

    message: Message
    author: str  # a person's name, or the support team
    by_team: bool
    quoted: str  # what the new part leaves out (quoted history), if anything
    html: str | None  # the mail's sanitized HTML with its inline images, if it has any
    files: list[Attachment]


def _shown(ticket: Ticket, message: Message, files: list[Attachment],
           authors: dict[int | None, Contact]) -> ShownMessage:
    by_team = message.direction == "out"
    author = authors.get(message.author_contact_id)
    name = message.from_address if by_team else (author.name if author else
                                                 message.from_address)
    text, new = message.text, message.new_text
    quoted = ""
    if new != text:
        quoted = text[len(new.rstrip()):].strip() if text.startswith(new.rstrip()) else text
    inline = {f.content_id.strip("<>"): f for f in files if f.content_id and f.accepted}
    html = None
    if message.html and inline and re.search(r"(?i)src=[\"']?cid:", message.html):
        html = _with_inline_images(message.html, ticket.number, inline)
    return ShownMessage(message, name, by_team, quoted, html,
                        [f for f in files if not (html and f.content_id
                                                  and f.content_id.strip("<>") in inline)])


def _with_inline_images(markup: str, number: int, inline: dict[str, Attachment]) -> str:
    """The sanitized HTML with ``cid:`` images pointing at their files on this ticket."""
    def replace(found: re.Match[str]) -> str:
        item = inline.get(found.group(2))
        if item is None:
            return found.group(0)
        return f'{found.group(1)}/tickets/{number}/files/{item.id}'

    return re.sub(r"(?i)(src=[\"']?)cid:([^\"'\s>]+)", replace, markup)


# Notes the workflow writes itself (in English, for the log) and the words pages show for them;
# an agent's own note is shown as written.
NOTE_CODES = {
    "opened by email": "opened_email", "opened by web": "opened_web",
    "customer replied": "customer_replied", "reopened by the customer's reply": "reopened",
    "sender pending verification": "held", "sender verified by the organization": "verified",
    "sender rejected by the organization": "rejected",
}


def note_code(note: str) -> str | None:
    return NOTE_CODES.get(note.split(",")[0].strip())


def _what_we_need(ticket: Ticket, sent: list[Notification]) -> str | None:
    """What we asked the customer for, while the ticket waits for them."""
    if ticket.status != "awaiting_customer":
        return None
    for notification in reversed(sent):
        if notification.event == "awaiting_customer":
            request = json.loads(notification.context or "{}").get("request")
            return str(request) if request else None
    return None


def _mail_text(notification: Notification) -> str:
    """The text part of a mail we sent, as the customer got it."""
    if not notification.raw:
        return ""
    mail = message_from_bytes(notification.raw, policy=policy.default)
    body = mail.get_body(("plain",)) if hasattr(mail, "get_body") else None
    return body.get_content().strip() if body is not None else ""


@posted
def answer_submit(request: Request, form: FormData) -> Response:
    """The customer's answer from the ticket page, with files: it threads like a mail reply."""
    contact = signed_in(request)
    if not isinstance(contact, Contact):
        return contact
    number = request.path_params["number"]
    text = str(form.get("text", "")).strip()[:ANSWER_LIMIT]
    errors: dict[str, str] = {}
    if not csrf.valid(request, form.get(csrf.FIELD)):
        errors["form"] = "csrf"
    if not text:
        errors["text"] = "missing"
    files = received_files(request, form)
    if errors:
        return _detail(request, number, answer=text, errors=errors,
                       refused=[f for f in files if not f.accepted],
                       kept=kept_tokens(request, files), status_code=400)
    with transaction(request.app.state.engine) as session:
        ticket = _visible_ticket(session, contact, number)
        if ticket is None:
            return request.app.state.pages.render(request, "error.html",
                                                  {"error": "not_found"}, status_code=404)
        if not reopenable(ticket, request.app.state.settings.reopen_days) \
                or ticket.status == "held":
            return RedirectResponse(f"/tickets/{number}", status_code=303)
        customer_requests.answer(session, request.app.state.workflow, ticket=ticket,
                                 author=contact, text=text, files=files)
    refused = "&refused=1" if any(not f.accepted for f in files) else ""
    return RedirectResponse(f"/tickets/{number}?answered=1{refused}#answered",
                            status_code=303)


def download(request: Request) -> Response:
    """A file of a ticket, for its organization only: served with the type we detected (never
    the sender's claim), as an attachment unless it is an image, and never sniffed."""
    contact = signed_in(request)
    if not isinstance(contact, Contact):
        return contact
    with Session(request.app.state.engine) as session:
        ticket = _visible_ticket(session, contact, request.path_params["number"])
        item = session.get(Attachment, request.path_params["file_id"])
    if (ticket is None or item is None or item.ticket_id != ticket.id or not item.accepted
            or not item.storage_key):
        return request.app.state.pages.render(request, "error.html", {"error": "not_found"},
                                              status_code=404)
    path = request.app.state.blobs.path(item.storage_key)
    if not path.exists():
        return request.app.state.pages.render(request, "error.html", {"error": "not_found"},
                                              status_code=404)
    inline = item.content_type in INLINE_TYPES
    return FileResponse(
        path, media_type=item.content_type, filename=item.filename,
        content_disposition_type="inline" if inline else "attachment",
        headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "private, max-age=3600",
                 "Content-Security-Policy": "default-src 'none'; sandbox"})


def _visible_ticket(session: Session, contact: Contact, number: int) -> Ticket | None:
    """The ticket if the contact may see it: their organization's, and a held one (its sender
    waits for verification) to its managers only. Anything else is answered like a missing one."""
    ticket = ticket_by_number(session, number)
    if ticket is None or ticket.organization_id != contact.organization_id:
        return None
    if ticket.status == "held" and not contact.is_manager:
        return None
    return ticket


def _number(value: Any, default: int) -> int:
    return int(value) if isinstance(value, str) and value.isdigit() and len(value) < 7 \
        else default
