"""The team console (/team) over HTTP: its own login and cookie, the views with counts, a
ticket's page and forms on the same workflow as the API, the stale-change notice, admins'
agents page; on SQLite and PostgreSQL. (The browser walk-through is in test_console_browser.)"""

from __future__ import annotations

import re

import pytest
from sqlmodel import Session, select

from storage.agents import add_agent, set_active
from storage.db import transaction
from storage.models import Message, Notification
from storage.tickets import ticket_by_number
from tests.test_accounts import ingest
from tests.test_api import TestClient
from tests.test_customer_area import PDF, log_in
from web.app import create_app

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
VERSION = re.compile(r'name="version" value="(\d+)"')
PASSWORD = "consola segura de soporte"


@pytest.fixture
def app(parts, settings):
    add_agent(parts.engine, name="Ana Ruiz", email="ana@soporte.example", password=PASSWORD)
    add_agent(parts.engine, name="Luis Gil", email="luis@soporte.example", role="admin",
              password=PASSWORD, language="en")
    return create_app(settings, parts.engine, parts.workflow)


def sign_in(client, email: str = "ana@soporte.example", password: str = PASSWORD):
    page = client.get("/team/login")
    return client.post("/team/login", data={"email": email, "password": password,
                                            "csrf_token": CSRF.search(page.text)[1]},
                       follow_redirects=False)


def post(client, number: int, page_text: str, **fields):
    data = {"csrf_token": CSRF.search(page_text)[1], "version": VERSION.search(page_text)[1],
            **{k: v for k, v in fields.items() if k != "files"}}
    return client.post(f"/team/tickets/{number}", data=data, files=fields.get("files"),
                       follow_redirects=False)


def test_the_console_has_its_own_login_cookie_and_sessions(app, parts):
    with TestClient(app) as client:
        assert client.get("/team/tickets", follow_redirects=False).headers["location"] \
            == "/team/login"
        wrong = sign_in(client, password="no es esta")
        assert wrong.status_code == 401 and "not correct" not in wrong.text
        assert "no son correctos" in wrong.text  # Spanish first
        done = sign_in(client)
        assert done.status_code == 303
        cookie = done.headers["set-cookie"]
        assert "helpdesk_team=" in cookie and "Path=/team" in cookie
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie
        assert client.get("/team/tickets").status_code == 200
        # A customer's session opens nothing here, and an agent's opens nothing there.
        assert client.get("/tickets", follow_redirects=False).status_code == 303
        set_active(parts.engine, "ana@soporte.example", False)
        assert client.get("/team/tickets", follow_redirects=False).status_code == 303
    with TestClient(app) as customer:
        log_in(customer)
        assert customer.get("/team/tickets", follow_redirects=False).status_code == 303


def test_views_count_and_the_ticket_page_acts_through_the_workflow(app, parts):
    number = ingest(parts, "outlook-new-request-es.eml").ticket
    with TestClient(app) as client:
        sign_in(client)
        listing = client.get("/team/tickets?view=new").text
        assert f"/team/tickets/{number}" in listing
        assert re.search(r'data-count="new">1<', listing)
        assert re.search(r'data-count="mine">0<', listing)
        page = client.get(f"/team/tickets/{number}").text
        assert "Error al generar la factura" in page
        moved = post(client, number, page, action="update", assignee="ana@soporte.example",
                     priority="high", application="")
        assert moved.status_code == 303
        page = client.get(f"/team/tickets/{number}").text
        assert re.search(r'data-count="mine">1<', client.get("/team/tickets").text)
        assert post(client, number, page, action="status", status="qualified",
                    note="visto").status_code == 303
        page = client.get(f"/team/tickets/{number}").text
        refused = post(client, number, page, action="status", status="planned")
        assert refused.status_code == 422 and "planned date" in refused.text
        page = client.get(f"/team/tickets/{number}").text
        assert post(client, number, page, action="note",
                    text="Cliente con contrato premium").status_code == 303
        page = client.get(f"/team/tickets/{number}").text
        assert "internal note" not in page  # the Spanish page says it in Spanish
        assert "nota interna" in page.lower()
        answered = post(client, number, page, action="reply", text="Adjunto la guía.",
                        files=[("files", ("guia.pdf", PDF, "application/pdf"))])
        assert answered.status_code == 303
    with Session(parts.engine) as session:
        ticket = ticket_by_number(session, number)
        note = session.exec(select(Message).where(Message.internal)).one()
        reply = session.exec(select(Notification).where(
            Notification.event == "agent_reply")).one()
    assert (ticket.status, ticket.priority) == ("qualified", "high")
    assert note.text == "Cliente con contrato premium"
    assert "guia.pdf" in reply.context


def test_a_change_on_a_version_another_agent_already_changed_is_refused_with_a_notice(app,
                                                                                       parts):
    number = ingest(parts, "outlook-new-request-es.eml").ticket
    with TestClient(app) as ana, TestClient(app) as luis:
        sign_in(ana)
        sign_in(luis, "luis@soporte.example")
        seen_by_ana = ana.get(f"/team/tickets/{number}").text
        seen_by_luis = luis.get(f"/team/tickets/{number}").text
        assert post(luis, number, seen_by_luis, action="status",
                    status="in_progress").status_code == 303
        stale = post(ana, number, seen_by_ana, action="reply", text="Mi respuesta larga")
        assert stale.status_code == 409
        assert "Otro agente ha cambiado este ticket" in stale.text
        assert "Mi respuesta larga" in stale.text  # what she typed is kept
    with transaction(parts.engine) as session:
        assert ticket_by_number(session, number).status == "in_progress"
        assert session.exec(select(Notification).where(
            Notification.event == "agent_reply")).all() == []


def test_only_admins_manage_agents(app, parts):
    with TestClient(app) as ana:
        sign_in(ana)
        assert ana.get("/team/agents").status_code == 404
    with TestClient(app) as luis:
        sign_in(luis, "luis@soporte.example")
        page = luis.get("/team/agents")
        assert page.status_code == 200 and "Ana Ruiz" in page.text
        token = CSRF.search(page.text)[1]
        added = luis.post("/team/agents", data={
            "csrf_token": token, "action": "add", "name": "Eva Sanz",
            "email": "eva@soporte.example", "role": "agent", "language": "es",
            "password": PASSWORD}, follow_redirects=False)
        assert added.status_code == 303
        weak = luis.post("/team/agents", data={
            "csrf_token": token, "action": "add", "name": "Pablo", "role": "agent",
            "email": "pablo@soporte.example", "language": "es", "password": "pablo12345"})
        assert weak.status_code == 422 and "too easy to guess" in weak.text
        luis.post("/team/agents", data={"csrf_token": token, "action": "deactivate",
                                        "email": "ana@soporte.example"})
        assert "deactivated" in luis.get("/team/agents").text
    with TestClient(app) as ana:
        assert sign_in(ana).status_code == 401  # deactivated
    with TestClient(app) as eva:
        assert sign_in(eva, "eva@soporte.example").status_code == 303


def test_a_guesser_is_slowed_and_the_agent_in_their_own_browser_still_gets_in(app, parts):
    with TestClient(app) as ana:
        assert sign_in(ana).status_code == 303  # her browser is known from now on
        ana.post("/team/logout", data={"csrf_token": CSRF.search(
            ana.get("/team/tickets").text)[1]})
        with TestClient(app) as guesser:
            answers = [sign_in(guesser, password=f"intento {n}").status_code
                       for n in range(6)]
            assert answers[:3] == [401, 401, 401] and 429 in answers
            assert sign_in(guesser).status_code == 429  # even with the right password
        assert sign_in(ana).status_code == 303


def test_the_console_shows_sla_clocks_and_sorts_by_the_soonest_due(app, parts):
    from gateway.sla_clocks import refresh_changed

    first = ingest(parts, "outlook-new-request-es.eml").ticket
    with TestClient(app) as client:
        sign_in(client)
        page = client.get(f"/team/tickets/{first}").text
        post(client, first, page, action="update", priority="urgent", assignee="",
             application="")
        refresh_changed(parts.engine)
        page = client.get(f"/team/tickets/{first}").text
        assert 'data-target="first_response" data-state="running"' in page
        assert "primera respuesta" in page and "(interno)" in page  # qualify and plan
        listing = client.get("/team/tickets?view=all&sort=due").text
        assert f"/team/tickets/{first}" in listing
        assert "Vencimiento de SLA más próximo primero" not in listing  # sorted already
        assert "Actualizados más recientemente primero" in listing
