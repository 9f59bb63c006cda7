"""The customer area in a real headless Chromium: log in, find the ticket, remember the user."""

from __future__ import annotations

import smtplib

import pytest
from sqlmodel import Session, select

from storage.models import Message, Ticket
from tests.conftest import PASSWORD, load_mail, wait_for

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
    assert page.url.endswith("/login")
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
    # A quoted reply shows its new words; the quoted history is there behind "Mostrar...".
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
    reply.get_by_text("Mostrar el mensaje completo, con el texto citado").click()
    assert quoted.is_visible()
    assert "escribió" in quoted.inner_text()
    context.close()
