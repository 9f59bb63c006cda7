"""Organizations, their domains, contacts and applications: creating them from setup tools."""

from __future__ import annotations

from sqlalchemy.engine import Engine
from sqlmodel import Session, func, select

from storage import sessions
from storage.db import transaction
from storage.models import Application, Contact, Organization, OrganizationDomain
from storage.passwords import hash_password


class DirectoryError(ValueError):
    """A setup request that cannot be done as asked (unknown organization, duplicate email...)."""


def add_organization(
    engine: Engine, *, code: str, tax_id: str, name: str, domains: list[str],
    sla_plan: str = "standard",
) -> Organization:
    with transaction(engine) as session:
        if session.exec(select(Organization).where(Organization.code == code)).first():
            raise DirectoryError(f"organization {code} already exists")
        org = Organization(code=code, tax_id=tax_id.upper(), name=name, sla_plan=sla_plan)
        session.add(org)
        session.flush()
        assert org.id is not None
        for domain in domains:
            domain = domain.strip().lower()
            if session.get(OrganizationDomain, domain):
                raise DirectoryError(f"domain {domain} already belongs to an organization")
            session.add(OrganizationDomain(domain=domain, organization_id=org.id))
        return org


def add_contact(
    engine: Engine, *, organization_code: str, name: str, email: str, password: str | None = None,
    is_manager: bool = False, language: str = "es", role: str = "", phone: str = "",
    types: str = "technical",
) -> Contact:
    with transaction(engine) as session:
        query = select(Organization).where(Organization.code == organization_code)
        org = session.exec(query).first()
        if org is None:
            raise DirectoryError(f"no organization with code {organization_code}")
        email = email.strip().lower()
        if session.exec(select(Contact).where(Contact.email == email)).first():
            raise DirectoryError(f"a contact with email {email} already exists")
        contact = Contact(
            organization_id=org.id,  # type: ignore[arg-type]
            name=name, email=email, is_manager=is_manager, language=language, role=role,
            phone=phone, types=types, state="verified",
            password_hash=hash_password(password) if password else None,
        )
        session.add(contact)
        return contact


def edit_contact(engine: Engine, email: str, /, **changes: object) -> Contact:
    """Change a contact's fields (the team's command line); ``email`` names it, ``changes``
    may hold a new ``email`` too."""
    with transaction(engine) as session:
        contact = session.exec(select(Contact).where(Contact.email == email.strip().lower())
                               ).first()
        if contact is None:
            raise DirectoryError(f"no contact with email {email.strip().lower()}")
        new_email = changes.get("email")
        if isinstance(new_email, str):
            new_email = changes["email"] = new_email.strip().lower()
            taken = session.exec(select(Contact).where(Contact.email == new_email)).first()
            if taken is not None and taken.id != contact.id:
                raise DirectoryError(f"a contact with email {new_email} already exists")
        for name, value in changes.items():
            if not hasattr(contact, name):
                raise DirectoryError(f"a contact has no {name}")
            setattr(contact, name, value)
        session.add(contact)
        if changes.get("active") is False:
            assert contact.id is not None
            sessions.end_all(session, contact.id)  # signed out everywhere, at once
        return contact


def add_application(engine: Engine, name: str) -> Application:
    with transaction(engine) as session:
        if session.exec(select(Application).where(Application.name == name)).first():
            raise DirectoryError(f"application {name} already exists")
        app = Application(name=name)
        session.add(app)
        return app


def is_empty(engine: Engine) -> bool:
    with Session(engine) as session:
        return session.exec(select(func.count()).select_from(Organization)).one() == 0


def set_sender_auth(engine: Engine, code: str, rule: str) -> Organization:
    """How mail from an organization's domain that fails sender authentication is treated:
    "strict" (held for the team) or "dmarc" (held only where the domain's DMARC policy says
    quarantine or reject: for a customer whose mail server cannot authenticate)."""
    if rule not in ("strict", "dmarc"):
        raise DirectoryError(f"sender authentication rule {rule!r}: strict or dmarc")
    with transaction(engine) as session:
        found = session.exec(select(Organization).where(Organization.code == code)).first()
        if found is None:
            raise DirectoryError(f"no organization with code {code}")
        found.sender_auth = rule
        session.add(found)
        session.flush()
        session.refresh(found)
        session.expunge(found)
        return found
