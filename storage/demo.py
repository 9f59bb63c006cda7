"""Demo organizations that `make run` seeds into an empty database: someone to log in as."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.engine import Engine

from storage.directory import add_application, add_contact, add_organization, is_empty

DEMO_PASSWORD = "demo-clave-2026"  # noqa: S105 (a published demo login, for the local demo only)


@dataclass(frozen=True)
class DemoLogin:
    email: str
    password: str


def seed_if_empty(engine: Engine) -> DemoLogin | None:
    """Create the demo data if there is no organization yet; return the login to print."""
    if not is_empty(engine):
        return None
    add_organization(engine, code="C0001", tax_id="B12345678", name="Ferretería López S.L.",
                     domains=["ferreteria-lopez.es"])
    add_contact(engine, organization_code="C0001", name="María García",
                email="maria.garcia@ferreteria-lopez.es", password=DEMO_PASSWORD, is_manager=True,
                role="Gerente", types="billing,quotes,technical")
    add_contact(engine, organization_code="C0001", name="José Fernández",
                email="jose.fernandez@ferreteria-lopez.es", password=DEMO_PASSWORD,
                role="Administración", types="technical")
    add_organization(engine, code="C0002", tax_id="A87654321", name="Clínica Dental Sur",
                     domains=["clinicadental-sur.com"])
    add_contact(engine, organization_code="C0002", name="Lucía Martín",
                email="lucia.martin@clinicadental-sur.com", password=DEMO_PASSWORD,
                is_manager=True, language="en")
    for name in ("ERP Clave", "TPV Comercio", "Nóminas", "Portal web"):
        add_application(engine, name)
    return DemoLogin("maria.garcia@ferreteria-lopez.es", DEMO_PASSWORD)
