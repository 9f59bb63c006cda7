"""Passwords of the customer area: the forgotten-password request and the set-password link.

DESIGN "Web area": with the client code and the CIF of their company, anybody may ask for a
password; the answer on screen is the same whether or not they match, and if they do, each
manager of that organization gets a single-use, expiring link to set their own password. No
password is ever shown or mailed. The team can also send that link to one contact (``helpdesk
contact invite``), say to a new contact added without a password.
"""

from __future__ import annotations

import logging
import re
from datetime import datetime, timedelta

from sqlmodel import Session, col, func, select
from zxcvbn import zxcvbn

from gateway.links import BadLink, PasswordLinks
from gateway.workflow import Workflow
from storage import sessions
from storage.models import Contact, Notification, Organization, utcnow
from storage.passwords import hash_password
from storage.tickets import managers_of

log = logging.getLogger("gateway.accounts")

MIN_PASSWORD = 10
MAX_PASSWORD = 256  # argon2 takes any length; a bound keeps a huge form field from costing CPU


def normalized_tax_id(value: str) -> str:
    """A CIF as written on an invoice, "B-12.345.678" or "b12345678": B12345678."""
    return re.sub(r"[\s.\-/]", "", value).upper()


def organization_by_code_and_tax_id(session: Session, code: str,
                                    tax_id: str) -> Organization | None:
    code = code.strip().upper()
    wanted = normalized_tax_id(tax_id)
    if not code or not wanted:
        return None
    org = session.exec(select(Organization).where(func.upper(Organization.code) == code)).first()
    if org is None or normalized_tax_id(org.tax_id) != wanted:
        return None
    return org


def request_password_links(session: Session, workflow: Workflow, links: PasswordLinks, *,
                           code: str, tax_id: str) -> int:
    """Queue a set-password mail to each manager of the organization with this client code and
    CIF; how many were queued (0 when nothing matches; the caller must not tell the visitor)."""
    org = organization_by_code_and_tax_id(session, code, tax_id)
    if org is None:
        log.info("password request with a client code and CIF that match no organization")
        return 0
    assert org.id is not None
    managers = managers_of(session, org.id)
    queued = 0
    for manager in managers:
        assert manager.id is not None
        if password_mails_since(session, manager.id, utcnow() - MAIL_WINDOW) >= MAILS_PER_WINDOW:
            # Whoever repeats the request (anyone who knows a code and a CIF) cannot fill a
            # manager's mailbox: the links already sent still work.
            log.info("password request for %s: contact %s had %d set-password mails within %s, "
                     "no more", org.code, manager.id, MAILS_PER_WINDOW, MAIL_WINDOW)
            continue
        queue_password_link(session, workflow, links, manager)
        queued += 1
    if not managers:
        log.warning("password request for organization %s, which has no manager to mail", org.code)
    return queued


MAILS_PER_WINDOW = 3  # set-password mails one contact gets at most from the forgotten form
MAIL_WINDOW = timedelta(hours=1)


def password_mails_since(session: Session, contact_id: int, since: datetime) -> int:
    return int(session.exec(select(func.count()).select_from(Notification).where(
        Notification.contact_id == contact_id, Notification.event == "set_password",
        col(Notification.created_at) >= since)).one())


def queue_password_link(session: Session, workflow: Workflow, links: PasswordLinks,
                        contact: Contact, *, invited: bool = False) -> None:
    """Queue a set-password mail to one contact; ``invited`` words it as a welcome."""
    assert contact.id is not None
    workflow.queue_plain(
        session, event="set_password", recipient=contact.email, language=contact.language,
        contact_id=contact.id,
        context={"contact_name": contact.name, "contact_email": contact.email,
                 "set_password_url": links.url(contact.id, contact.password_hash),
                 "valid_hours": links.max_age // 3600, "invited": invited},
    )


def contact_for_link(session: Session, links: PasswordLinks, token: str) -> Contact:
    """The contact a set-password link is for; ``BadLink`` if expired, forged, already used,
    or for a contact who can no longer log in."""
    grant = links.read(token)
    contact = session.get(Contact, grant.contact_id)
    if contact is None or not contact.active or contact.state != "verified":
        raise BadLink("invalid")
    if not links.still_valid(grant, contact.password_hash):
        raise BadLink("used")
    return contact


def password_problem(password: str, repeated: str, contact: Contact) -> str | None:
    """Why a new password cannot be taken (a code the page words), or None."""
    if len(password) < MIN_PASSWORD:
        return "too_short"
    if len(password) > MAX_PASSWORD:
        return "too_long"
    if password.strip().lower() == contact.email:
        return "is_email"
    if password != repeated:
        return "mismatch"
    if guessable(password, contact):
        return "weak"
    return None


STRONG_ENOUGH = 3  # zxcvbn's score, 0-4: 3 is "safely unguessable: moderate protection
# from offline slow-hash scenario" (argon2 here), what zxcvbn's authors advise for such sites


def guessable(password: str, contact: Contact) -> bool:
    """Judged by zxcvbn (dictionaries, keyboard patterns, dates, repeats, l33t), with the
    person's own name and address as words an attacker would try first: "1234567890" or
    "maria.garcia@ferreteria-lopez.es1" are long enough and still guessed at once."""
    return guessable_for(password, contact.name, contact.email)


def guessable_for(password: str, name: str, email: str) -> bool:
    """``guessable`` for anybody with a name and an address (an agent of the console too)."""
    local, _, domain = email.partition("@")
    words = [name, email, local, domain, *re.split(r"[\s.@_\-]+", name),
             *re.split(r"[.@_\-]+", email)]
    score = zxcvbn(password[:100], user_inputs=[w for w in words if w])["score"]
    return int(score) < STRONG_ENOUGH


def set_password(session: Session, contact: Contact, password: str) -> None:
    contact.password_hash = hash_password(password)
    session.add(contact)
    assert contact.id is not None
    # Whoever was signed in with the old password (a copied cookie, a shared computer) is
    # signed out: a new password starts afresh.
    sessions.end_all(session, contact.id)
    log.info("contact %s set a password through a set-password link", contact.id)
