"""The walking skeleton end to end: SMTP in → ticket → "received" mail out → visible after login."""

from __future__ import annotations

import re
import smtplib
from zoneinfo import ZoneInfo

import httpx
from sqlmodel import Session, select

from gateway.links import ReplyAddresses
from storage.models import Message, Notification, Ticket
from tests.conftest import PASSWORD, load_mail, parse_mail, wait_for


def login(client: httpx.Client, email: str, password: str) -> httpx.Response:
    page = client.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    return client.post("/login", data={"email": email, "password": password,
                                        "csrf_token": token})


def test_mail_over_smtp_becomes_ticket_notified_and_listed(gateway, smtp_sink, directory):
    # A contact's Outlook mail sent over real SMTP gets 250, becomes ticket 1001, the Spanish
    # "received" mail reaches the relay threaded and signed, and María sees the ticket after login.
    sink, _port = smtp_sink
    with smtplib.SMTP("127.0.0.1", gateway.smtp_port, timeout=10) as client:
        client.ehlo("mail.ferreteria-lopez.es")
        code, _ = client.mail("maria.garcia@ferreteria-lopez.es")
        assert code == 250
        code, _ = client.rcpt("soporte@example.com")
        assert code == 250
        code, reply = client.data(load_mail("outlook-new-request-es.eml"))
    assert code == 250, reply
    assert reply.startswith(b"2.0.0 OK: queued as ")

    wait_for(lambda: sink.messages, timeout=20)
    envelope_from, rcpts, raw = sink.messages[0]
    assert rcpts == ["maria.garcia@ferreteria-lopez.es"]
    assert envelope_from == "soporte@example.com"
    mail = parse_mail(raw)
    assert mail["Subject"] == (
        "[#1001] Hemos recibido tu solicitud: Error al generar la factura de noviembre")
    assert mail["To"].addresses[0].display_name == "María García"
    assert mail["Auto-Submitted"] == "auto-generated"
    customer_id = ("<AM6PR04MB5781C0D2B4E1F5A9E3B7C1D2A3F40@"
                   "AM6PR04MB5781.eurprd04.prod.outlook.com>")
    assert mail["In-Reply-To"] == customer_id
    assert mail["References"] == customer_id
    assert mail["Date"] is not None
    reply_to = mail["Reply-To"].addresses[0].addr_spec
    assert ReplyAddresses("test-secret-key-not-for-production",
                          "soporte@example.com").ticket_number(reply_to) == 1001
    text = mail.get_body(("plain",)).get_content()
    html = mail.get_body(("html",)).get_content()
    assert "Hemos recibido tu solicitud y hemos abierto el ticket número 1001." in text
    assert "/tickets/1001" in text
    assert "Ver el ticket 1001" in html

    def sent() -> Notification | None:
        # The relay has the mail a moment before the sender records it as sent.
        with Session(directory) as session:
            note = session.exec(select(Notification)).one()
            return note if note.state == "sent" else None

    note = wait_for(sent)
    with Session(directory) as session:
        ticket = session.exec(select(Ticket)).one()
        assert (ticket.number, ticket.status) == (1001, "new")
        assert note.message_id == mail["Message-ID"]  # the Message-ID we sent is recorded
        assert session.exec(select(Message)).one().ticket_id == ticket.id

    with httpx.Client(base_url=gateway.web_url, follow_redirects=True) as web:
        response = login(web, "maria.garcia@ferreteria-lopez.es", PASSWORD)
        assert response.status_code == 200
        assert str(response.url).endswith("/tickets")
        assert "Tickets abiertos" in response.text
        assert "#1001" in response.text
        assert "Error al generar la factura de noviembre" in response.text
        assert "Esperando por ayuda" in response.text
        madrid = ticket.created_at.astimezone(ZoneInfo("Europe/Madrid"))
        assert madrid.strftime("%d/%m/%Y %H:%M") in response.text  # shown in Madrid time
        page = web.get("/tickets/1001")
        assert page.status_code == 200
        assert "código 4012" in page.text


def test_other_organization_cannot_see_the_ticket(gateway, directory):
    # Lucía (Clínica Dental Sur) gets a 404 for ticket 1001 of Ferretería López, and no list row.
    with smtplib.SMTP("127.0.0.1", gateway.smtp_port, timeout=10) as client:
        client.sendmail("maria.garcia@ferreteria-lopez.es", ["soporte@example.com"],
                        load_mail("outlook-new-request-es.eml"))
    wait_for(lambda: _ticket_count(directory) == 1)
    with httpx.Client(base_url=gateway.web_url, follow_redirects=True) as web:
        login(web, "lucia.martin@clinicadental-sur.com", PASSWORD)
        listing = web.get("/tickets")
        assert listing.status_code == 200
        assert "#1001" not in listing.text
        page = web.get("/tickets/1001")
        assert page.status_code == 404
        assert "Error al generar" not in page.text


def test_wrong_password_is_refused_with_a_message(gateway):
    # A wrong password leaves the visitor on the login page with a clear Spanish message.
    with httpx.Client(base_url=gateway.web_url, follow_redirects=True) as web:
        response = login(web, "maria.garcia@ferreteria-lopez.es", "not the password")
        assert response.status_code == 401
        assert "El email o la contraseña no son correctos." in response.text
        assert web.get("/tickets").url.path == "/login"


def test_login_without_csrf_token_is_refused(gateway):
    # A POST without the form's CSRF token logs nobody in.
    with httpx.Client(base_url=gateway.web_url) as web:
        response = web.post("/login", data={"email": "maria.garcia@ferreteria-lopez.es",
                                            "password": PASSWORD})
        assert response.status_code == 400
        assert web.get("/tickets").status_code == 303


def _ticket_count(engine) -> int:
    with Session(engine) as session:
        return len(session.exec(select(Ticket)).all())


def test_pages_follow_the_contact_language(gateway):
    # Lucía's language is English: after login her ticket lists are in English.
    with httpx.Client(base_url=gateway.web_url, follow_redirects=True,
                      headers={"Accept-Language": "es-ES,es;q=0.9"}) as web:
        assert "Acceso clientes" in web.get("/login").text
        response = login(web, "lucia.martin@clinicadental-sur.com", PASSWORD)
        assert "Open tickets" in response.text
        assert "Tickets abiertos" not in response.text
