"""The customer area in a real headless Chromium: log in, find the ticket, remember the user."""

from __future__ import annotations

import re
import smtplib

import pytest
from sqlmodel import Session, select

from storage.models import Message, Ticket
from tests.conftest import PASSWORD, load_mail, parse_mail, wait_for

pytestmark = pytest.mark.browser


def send_request(gateway, directory) -> None:
    with smtplib.SMTP("127.0.0.1", gateway.smtp_port, timeout=10) as client:
        client.sendmail("maria.garcia@ferreteria-lopez.es", ["soporte@example.com"],
                        load_mail("outlook-new-request-es.eml"))

    def ticket_exists() -> bool:
        with Session(directory) as session:
            return session.exec(select(Ticket)).first() is not None

    wait_for(ticket_exists)


def log_in(browser, gateway):
    """María logs in through the login form of a fresh Spanish browser context."""
    context = browser.new_context(locale="es-ES")
    page = context.new_page()
    page.goto(gateway.web_url + "/login")
    page.get_by_label("Email").fill("maria.garcia@ferreteria-lopez.es")
    page.get_by_label("Contraseña").fill(PASSWORD)
    page.get_by_role("button", name="Entrar").click()
    page.wait_for_url("**/tickets")
    return context, page


def test_contact_logs_in_and_opens_the_ticket_from_the_open_list(gateway, directory, browser):
    # María logs in with "Recordar usuario", sees #1001 under "Tickets abiertos", opens it,
    # signs out, and finds her email (never her password) filled in on the login page.
    send_request(gateway, directory)
    context = browser.new_context(locale="es-ES")
    page = context.new_page()
    page.goto(gateway.web_url + "/tickets")
    assert page.url.endswith("/login?next=%2Ftickets")
    assert page.get_by_role("heading").inner_text() == "Acceso clientes"
    page.get_by_label("Email").fill("maria.garcia@ferreteria-lopez.es")
    page.get_by_label("Contraseña").fill(PASSWORD)
    page.get_by_label("Recordar usuario").check()
    page.get_by_role("button", name="Entrar").click()
    page.wait_for_url("**/tickets")
    assert page.locator("nav.tabs a.current").inner_text() == "Tickets abiertos"
    row = page.locator("table.list tbody tr")
    assert row.count() == 1
    assert "Error al generar la factura de noviembre" in row.inner_text()
    assert "Esperando por ayuda" in row.inner_text()

    page.get_by_role("link", name="#1001").click()
    page.wait_for_url("**/tickets/1001")
    assert "código 4012" in page.locator("article.message").inner_text()

    page.get_by_role("button", name="Cerrar sesión").click()
    page.wait_for_url("**/login")
    assert page.get_by_label("Email").input_value() == "maria.garcia@ferreteria-lopez.es"
    assert page.get_by_label("Contraseña").input_value() == ""
    context.close()


def test_completed_list_is_empty_for_a_new_ticket(gateway, directory, browser):
    # A ticket waiting for help is not in "Tickets completados".
    send_request(gateway, directory)
    context, page = log_in(browser, gateway)
    page.get_by_role("link", name="Tickets completados").click()
    page.wait_for_url("**/tickets?group=completed")
    assert page.locator("table.list").count() == 0
    assert page.get_by_text("No hay tickets en este grupo.").is_visible()
    context.close()


def test_ticket_page_shows_the_new_part_and_keeps_the_quote_one_click_away(gateway, directory,
                                                                            browser):
    # A quoted reply shows its new words once; the quoted history (only that, not the new words
    # again) is there behind "Mostrar el texto citado".
    send_request(gateway, directory)
    with smtplib.SMTP("127.0.0.1", gateway.smtp_port, timeout=10) as client:
        client.sendmail("maria.garcia@ferreteria-lopez.es", ["soporte@example.com"],
                        load_mail("gmail-reply-es-quoted.eml"))

    def replied() -> bool:
        with Session(directory) as session:
            return len(session.exec(select(Message)).all()) == 2

    wait_for(replied)
    context, page = log_in(browser, gateway)
    page.goto(gateway.web_url + "/tickets/1001")
    reply = page.locator("article.message").nth(1)
    assert "recargo de equivalencia" in reply.locator("div.body").first.inner_text()
    quoted = reply.locator("details.quoted div.body")
    assert not quoted.is_visible()
    reply.get_by_text("Mostrar el texto citado").click()
    assert quoted.is_visible()
    assert "escribió" in quoted.inner_text()
    assert "recargo de equivalencia" not in quoted.inner_text()
    context.close()


def links_to(smtp_sink, recipient: str, path: str) -> list[str]:
    """The links to ``path`` in the mails the relay got for ``recipient`` (waits for one)."""
    handler, _port = smtp_sink

    def found() -> list[str]:
        with handler.lock:
            mails = [parse_mail(raw) for _sender, rcpts, raw in handler.messages
                     if recipient in rcpts]
        return [url for mail in mails
                for url in re.findall(r"https?://\S+", mail.get_body(("plain",)).get_content())
                if path in url]

    return wait_for(found)


def test_forgotten_password_then_the_mailed_link_sets_a_password_that_signs_in(
        gateway, directory, browser, smtp_sink):
    # From the login page's link: client code + CIF, the mail reaches María (the manager), her
    # link opens the form, a short password is refused naming the field, a good one signs in.
    context = browser.new_context(locale="es-ES")
    page = context.new_page()
    page.goto(gateway.web_url + "/login")
    page.get_by_role("link", name="Si no recuerdas tu contraseña haz clic aquí.").click()
    page.wait_for_url("**/password/forgot")
    page.get_by_label("Código de cliente").fill("C0001")
    page.get_by_label("CIF").fill("B12345678")
    page.get_by_role("button", name="Aceptar").click()
    assert "recibirán un correo" in page.locator("p.notice").inner_text()

    (link,) = links_to(smtp_sink, "maria.garcia@ferreteria-lopez.es", "/password/set/")
    page.goto(link.replace("http://127.0.0.1:8000", gateway.web_url))
    page.get_by_label("Nueva contraseña").fill("corta")
    page.get_by_label("Repite la contraseña").fill("corta")
    page.evaluate("document.getElementById('password').removeAttribute('minlength')")
    page.get_by_role("button", name="Guardar contraseña").click()
    assert "usa al menos 10 caracteres" in page.locator("p.error").inner_text()
    page.get_by_label("Nueva contraseña").fill("nueva-clave-de-maria")
    page.get_by_label("Repite la contraseña").fill("nueva-clave-de-maria")
    page.get_by_role("button", name="Guardar contraseña").click()
    assert "Tu contraseña se ha guardado" in page.locator("p.notice").inner_text()

    page.get_by_role("link", name="Entrar").click()
    page.get_by_label("Email").fill("maria.garcia@ferreteria-lopez.es")
    page.get_by_label("Contraseña").fill("nueva-clave-de-maria")
    page.get_by_role("button", name="Entrar").click()
    page.wait_for_url("**/tickets")
    page.goto(link.replace("http://127.0.0.1:8000", gateway.web_url))
    assert "ya se ha utilizado" in page.locator("h1").inner_text()
    context.close()


def test_manager_approves_an_unknown_sender_from_the_mailed_link(gateway, directory, browser,
                                                                 smtp_sink):
    # Ana is no contact: her mail is held; María's approve link shows Ana and a button; after
    # the click Ana's ticket is waiting for help and Ana gets the "received" mail.
    with smtplib.SMTP("127.0.0.1", gateway.smtp_port, timeout=10) as client:
        client.sendmail("ana.ruiz@ferreteria-lopez.es", ["soporte@example.com"],
                        load_mail("outlook-unknown-sender-known-domain-es.eml"))
    approve = [u for u in links_to(smtp_sink, "maria.garcia@ferreteria-lopez.es", "/verify/")][0]
    context = browser.new_context(locale="es-ES")
    page = context.new_page()
    page.goto(approve.replace("http://127.0.0.1:8000", gateway.web_url))
    assert "ana.ruiz@ferreteria-lopez.es" in page.locator("main").inner_text()
    with Session(directory) as session:
        assert session.exec(select(Ticket)).one().status == "held"
    page.get_by_role("button", name="Aprobar este contacto").click()
    assert "se ha aprobado" in page.locator("p.notice").inner_text()
    with Session(directory) as session:
        assert session.exec(select(Ticket)).one().status == "new"
    (received,) = wait_for(lambda: [raw for _s, rcpts, raw in smtp_sink[0].messages
                                    if "ana.ruiz@ferreteria-lopez.es" in rcpts])
    assert parse_mail(received)["Subject"].startswith("[#1001] ")
    context.close()
