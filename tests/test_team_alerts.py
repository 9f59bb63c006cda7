"""The team hears of what customers do: a reply, a rating of 1 or 2 stars, a verification
decided. A mail to the ticket's assignee (or every active agent while nobody has it), from
the same outbox and sender as the customers' mails, in the agent's language; kept with the
ticket for the API, never shown to the customer."""

from __future__ import annotations

from sqlmodel import Session, col, select

from gateway import ratings, team
from gateway.verification import decide, pending_request_of
from storage.agents import add_agent, set_active
from storage.db import transaction
from storage.models import Agent, Notification
from storage.tickets import ticket_by_number
from tests.test_accounts import ingest, mail_of
from tests.test_customer_area import log_in
from web.app import create_app

MARIA = "maria.garcia@ferreteria-lopez.es"


def agents(parts) -> None:
    add_agent(parts.engine, name="Ana Ruiz", email="ana@soporte.example")
    add_agent(parts.engine, name="Luis Gil", email="luis@soporte.example", language="en")
    add_agent(parts.engine, name="Eva Sanz", email="eva@soporte.example")
    set_active(parts.engine, "eva@soporte.example", False)


def team_mails(parts, event: str) -> list[Notification]:
    with Session(parts.engine) as session:
        return list(session.exec(select(Notification).where(Notification.event == event)
                                 .order_by(col(Notification.id))))


def assign(parts, number: int, email: str | None) -> None:
    with transaction(parts.engine) as session:
        ana = session.exec(select(Agent).where(Agent.email == "ana@soporte.example")).one()
        team.update(session, ticket_by_number(session, number), team.Actor(ana),
                    assignee=email)


def test_a_customers_reply_is_mailed_to_the_assignee_or_else_to_every_active_agent(parts):
    agents(parts)
    number = ingest(parts, "outlook-new-request-es.eml").ticket
    with transaction(parts.engine) as session:
        parts.workflow.move(session, ticket_by_number(session, number), "awaiting_customer",
                            actor="Ana Ruiz", request="El PDF")
    assert ingest(parts, "gmail-reply-awaiting-customer-es.eml").outcome == "threaded"
    sent = team_mails(parts, "team_customer_replied")
    assert [m.recipient for m in sent] == ["ana@soporte.example", "luis@soporte.example"]
    assert all(m.ticket_id is not None and m.contact_id is None for m in sent)
    spanish = mail_of(parts, sent[0])
    assert spanish["Subject"] == (f"Ticket {number}: el cliente ha respondido "
                                  "(Ferretería López S.L.)")
    assert spanish["To"].addresses[0].addr_spec == "ana@soporte.example"
    # No reply address of the ticket: an agent's answer by mail must not land on it.
    assert spanish["Reply-To"].addresses[0].addr_spec == "soporte@example.com"
    text = spanish.get_body(("plain",)).get_content()
    assert f"{MARIA} ha respondido al ticket {number}" in text
    assert f"/team/tickets/{number}" in text and "El ticket está ahora: in_progress" in text
    english = mail_of(parts, sent[1])
    assert english["Subject"] == f"Ticket {number}: the customer answered (Ferretería López S.L.)"
    # Assigned: only the assignee hears of the next answer.
    assign(parts, number, "luis@soporte.example")
    reply = ingest(parts, "gmail-reply-awaiting-customer-es.eml",
                   raw=_another(parts, "gmail-reply-awaiting-customer-es.eml"))
    assert reply.outcome == "threaded"
    assert [m.recipient for m in team_mails(parts, "team_customer_replied")][2:] == [
        "luis@soporte.example"]


def test_a_rating_of_one_or_two_stars_is_mailed_to_the_team_and_never_shown_to_the_customer(
        parts, settings):
    from tests.test_api import TestClient

    agents(parts)
    happy, unhappy = (ingest(parts, "outlook-new-request-es.eml",
                             raw=_another(parts, "outlook-new-request-es.eml", n)).ticket
                      for n in (1, 2))
    for number, stars in ((happy, 4), (unhappy, 2)):
        with transaction(parts.engine) as session:
            ticket = ticket_by_number(session, number)
            parts.workflow.resolve(session, ticket, "Ana Ruiz")
            assert ratings.record(ticket, stars, "Tardasteis mucho" if stars < 3 else None,
                                  "web")
            session.add(ticket)
            parts.workflow.rating_received(session, ticket)
    low = team_mails(parts, "team_low_rating")  # the 4 stars are nobody's concern
    assert [m.recipient for m in low] == ["ana@soporte.example", "luis@soporte.example"]
    mail = mail_of(parts, low[0])
    assert mail["Subject"].startswith(f"Ticket {unhappy} valorado con 2 de 5")
    assert "Tardasteis mucho" in mail.get_body(("plain",)).get_content()
    with TestClient(create_app(settings, parts.engine, parts.workflow)) as customer:
        log_in(customer)
        page = customer.get(f"/tickets/{unhappy}").text
    assert "valorado con 2 de 5" not in page and "equipo de soporte" not in page


def test_a_verification_decided_is_mailed_to_every_agent_with_the_tickets(parts):
    agents(parts)
    held = ingest(parts, "outlook-unknown-sender-known-domain-es.eml")
    assert held.outcome == "held"
    with transaction(parts.engine) as session:
        request = pending_request_of(session, "ana.ruiz@ferreteria-lopez.es")
        assert request is not None
        decide(session, parts.workflow, request, approve=True, actor=MARIA)
    sent = team_mails(parts, "team_verification")
    assert [m.recipient for m in sent] == ["ana@soporte.example", "luis@soporte.example"]
    mail = mail_of(parts, sent[0])
    assert mail["Subject"] == "Ana Ruiz ya es contacto de Ferretería López S.L."
    assert f"- {held.ticket}:" in mail.get_body(("plain",)).get_content()


def _another(parts, name: str, n: int = 9) -> bytes:
    """The same mail with a Message-ID of its own (not a duplicate of the first)."""
    from tests.conftest import load_mail
    return load_mail(name).replace(b"Message-ID: <", f"Message-ID: <again{n}.".encode(), 1)
