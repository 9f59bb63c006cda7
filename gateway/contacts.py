"""An organization's contacts as its managers manage them: what a contact holds, who may change
it, and what deactivation means.

The customer guide (§5): managers see and edit their organization's contacts (name, email, role,
phone, and whether the person is a billing, quotes or technical contact) and add new ones. A
deactivated contact can no longer sign in, and their mail is treated as a stranger's (held for
the managers to verify again). Everybody else sees their colleagues, read-only. A contact that a
colleague who is not a manager adds (opening a ticket on someone's behalf) waits, pending, for a
manager's verification, as an unknown sender's first mail does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from sqlmodel import Session

from gateway.i18n import LANGUAGES
from storage import sessions
from storage.models import Contact
from storage.tickets import contact_by_email

TYPES = ("billing", "quotes", "technical")
# Deliberately plain: one @, a dot in the domain, no spaces. The mail itself is the real test.
EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s.]{2,}$")


class ContactError(ValueError):
    """A change that is not allowed (a non-manager, another organization, one's own access)."""


@dataclass(frozen=True)
class ContactForm:
    """What the contact form (and `helpdesk contact add|edit`) sets."""

    name: str
    email: str
    role: str = ""
    phone: str = ""
    types: tuple[str, ...] = ("technical",)
    language: str = "es"
    is_manager: bool = False

    @classmethod
    def clean(cls, *, name: str, email: str, role: str = "", phone: str = "",
              types: tuple[str, ...] | list[str] = ("technical",), language: str = "es",
              is_manager: bool = False) -> ContactForm:
        return cls(name=" ".join(name.split())[:200], email=email.strip().lower()[:320],
                   role=" ".join(role.split())[:100], phone=" ".join(phone.split())[:40],
                   types=tuple(t for t in TYPES if t in set(types)),
                   language=language.strip().lower()[:8], is_manager=is_manager)


@dataclass(frozen=True)
class Problems:
    """Field name → problem code (templates turn codes into words)."""

    fields: dict[str, str] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.fields)


def problems(session: Session, form: ContactForm, contact: Contact | None = None) -> Problems:
    """What is wrong with a form, by field; ``contact`` is the one being edited, if any."""
    found: dict[str, str] = {}
    if not form.name:
        found["name"] = "missing"
    if not form.email:
        found["email"] = "missing"
    elif not EMAIL.match(form.email):
        found["email"] = "invalid"
    else:
        other = contact_by_email(session, form.email)
        if other is not None and (contact is None or other.id != contact.id):
            found["email"] = "taken"
    if form.phone and not re.fullmatch(r"[0-9+()./\s-]{6,40}", form.phone):
        found["phone"] = "invalid"
    if not form.types:
        found["types"] = "missing"
    if form.language not in LANGUAGES:
        found["language"] = "invalid"
    return Problems(found)


def ensure_manager(actor: Contact) -> None:
    if not (actor.is_manager and actor.active and actor.state == "verified"):
        raise ContactError("only a manager of the organization may change its contacts")


def add(session: Session, actor: Contact, form: ContactForm) -> Contact:
    """A manager adds a verified contact to their own organization."""
    ensure_manager(actor)
    contact = Contact(organization_id=actor.organization_id, state="verified", active=True,
                      **_fields(form))
    session.add(contact)
    session.flush()
    return contact


def propose(session: Session, actor: Contact, form: ContactForm) -> Contact:
    """A colleague who is not a manager names a new person: a pending contact, for a manager
    to verify (the caller opens the verification request, with the ticket it concerns)."""
    contact = Contact(organization_id=actor.organization_id, state="pending", active=True,
                      **{**_fields(form), "is_manager": False})
    session.add(contact)
    session.flush()
    return contact


def edit(session: Session, actor: Contact, contact: Contact, form: ContactForm) -> None:
    ensure_manager(actor)
    _same_organization(actor, contact)
    if contact.id == actor.id and not form.is_manager:
        raise ContactError("a manager cannot take away their own manager rights")
    for name, value in _fields(form).items():
        setattr(contact, name, value)
    session.add(contact)


def set_active(session: Session, actor: Contact, contact: Contact, active: bool) -> None:
    """Deactivate (no more sign-in; their mail is a stranger's) or reactivate a contact."""
    ensure_manager(actor)
    _same_organization(actor, contact)
    if contact.id == actor.id and not active:
        raise ContactError("a manager cannot deactivate their own access")
    contact.active = active
    session.add(contact)
    if not active:
        assert contact.id is not None
        sessions.end_all(session, contact.id)  # signed out everywhere, at once


def _same_organization(actor: Contact, contact: Contact) -> None:
    if contact.organization_id != actor.organization_id:
        raise ContactError("that contact belongs to another organization")


def _fields(form: ContactForm) -> dict[str, object]:
    return {"name": form.name, "email": form.email, "role": form.role, "phone": form.phone,
            "types": ",".join(form.types), "language": form.language,
            "is_manager": form.is_manager}
