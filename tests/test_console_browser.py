"""The team console as an agent uses it, in Debian's headless Chromium: a new mail's ticket
found under "Nuevos", assigned, qualified, the customer asked; their mailed answer arrives; an
answer with a file; resolved; the customer's star click shows on the ticket. A second agent's
change made on a page that was out of date is refused with the notice. Screenshots of each
console page at desktop and phone widths go to the test artifacts."""

from __future__ import annotations

import re
import smtplib

import pytest

from storage.agents import add_agent
from tests.conftest import load_mail, wait_for
from tests.test_customer_area import PDF
from tests.test_customer_area_browser import shot
from tests.test_web_browser import links_to, send_request

pytestmark = pytest.mark.browser

MARIA = "maria.garcia@ferreteria-lopez.es"
PASSWORD = "consola segura de soporte"


def sign_in(browser, gateway, email: str):
    context = browser.new_context(locale="es-ES")
    page = context.new_page()
    page.goto(gateway.web_url + "/team/login")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Contraseña").fill(PASSWORD)
    page.get_by_role("button", name="Entrar").click()
    page.wait_for_url("**/team/tickets")
    return context, page


def change_status(page, status: str, **fields: str) -> None:
    form = page.locator("#status-form form")
    form.get_by_label("Nuevo estado").select_option(label=status)
    for label, value in fields.items():
        form.get_by_label(label).fill(value)
    form.get_by_role("button", name="Cambiar el estado").click()
    page.wait_for_load_state()


def test_an_agent_takes_a_mail_from_new_to_resolved_and_sees_the_rating(gateway, directory,
                                                                        browser, smtp_sink):
    add_agent(directory, name="Ana Ruiz", email="ana@soporte.example", password=PASSWORD)
    add_agent(directory, name="Luis Gil", email="luis@soporte.example", password=PASSWORD)
    send_request(gateway, directory)
    context, page = sign_in(browser, gateway, "ana@soporte.example")
    new_tab = page.get_by_role("link", name=re.compile("^Nuevos"))
    assert new_tab.locator("[data-count]").inner_text() == "1"
    shot(page, "console-tickets-desktop")
    page.get_by_role("link", name="#1001").click()
    page.wait_for_url("**/team/tickets/1001")

    update = page.locator("#update form")
    update.get_by_label("Asignado a").select_option(label="Ana Ruiz")
    update.get_by_role("button", name="Guardar").click()
    page.wait_for_load_state()
    assert page.locator("#assignee").inner_text() == "Ana Ruiz"
    change_status(page, "Cualificado")
    assert page.locator("#status").inner_text() == "Cualificado"
    change_status(page, "Esperando al cliente",
                  **{"Qué necesitamos exactamente (para Esperando al cliente)":
                     "El PDF de la factura que falla"})
    assert page.locator("#status").inner_text() == "Esperando al cliente"

    # María answers by mail: the ticket goes back to work, and her answer is on the page.
    with smtplib.SMTP("127.0.0.1", gateway.smtp_port, timeout=10) as smtp:
        smtp.sendmail(MARIA, ["soporte@example.com"],
                      load_mail("gmail-reply-awaiting-customer-es.eml"))

    def answered() -> bool:
        page.reload()
        return page.locator("#status").inner_text() == "En curso"

    wait_for(answered, timeout=30)
    assert page.locator("article.message.customer").count() == 2

    reply = page.locator("#reply form")
    reply.get_by_label("Responder").fill("Adjunto la factura corregida.")
    reply.get_by_label("Archivos").set_input_files(
        files=[{"name": "factura.pdf", "mimeType": "application/pdf", "buffer": PDF}])
    reply.get_by_role("button", name="Enviar la respuesta").click()
    page.wait_for_load_state()
    assert page.get_by_role("link", name="factura.pdf").count() == 1
    page.locator("#note-text").fill("Revisar la plantilla de noviembre")
    page.get_by_role("button", name="Añadir la nota").click()
    page.wait_for_load_state()
    assert page.locator("article.message.note").count() == 1
    change_status(page, "Resuelto", **{
        "Nota (para el historial; al resolver se envía al cliente)": "Plantilla corregida"})
    assert page.locator("#status").inner_text() == "Resuelto"
    shot(page, "console-ticket-desktop")
    page.set_viewport_size({"width": 360, "height": 800})
    shot(page, "console-ticket-phone")
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    page.set_viewport_size({"width": 1280, "height": 900})

    # María clicks the fourth star in the "resolved" mail (and confirms: it is just sent).
    four = _star(smtp_sink, 4)
    customer = browser.new_context(locale="es-ES")
    star_page = customer.new_page()
    # The mail names the public URL; the test's gateway listens on a port of its own.
    star_page.goto(gateway.web_url + "/" + four.split("/", 3)[3])
    star_page.locator("button[name=confirm]").first.click()
    star_page.wait_for_load_state()
    customer.close()
    page.reload()
    assert "Valorado con 4 de 5" in page.locator("#rating").inner_text()

    # Luis had the ticket open on an older version: his change is refused, with the notice.
    luis_context, luis = sign_in(browser, gateway, "luis@soporte.example")
    luis.goto(gateway.web_url + "/team/tickets/1001")
    page.locator("#note-text").fill("Cerrar el viernes")
    page.get_by_role("button", name="Añadir la nota").click()
    page.wait_for_load_state()
    luis.locator("#update form").get_by_label("Prioridad").select_option("urgent")
    luis.locator("#update form").get_by_role("button", name="Guardar").click()
    luis.wait_for_load_state()
    assert luis.locator("#stale").is_visible()
    assert luis.locator("#priority").inner_text() == "normal"
    shot(luis, "console-stale-notice-desktop")
    luis_context.close()
    context.close()


def _star(smtp_sink, stars: int) -> str:
    """The star link of ``stars`` in the "resolved" mail María got."""
    links = links_to(smtp_sink, MARIA, "/rate/")
    assert len(links) >= 5, links
    return links[-5:][stars - 1]


def test_an_agent_sees_why_a_ticket_is_due_and_lists_by_due_time(gateway, directory, browser):
    # Two tickets; the second made urgent from the console: the list sorted by SLA due puts it
    # first (as serve stores its clocks); its page shows each clock with its plan, and "why"
    # lists the stretches of time that make each due time; asking the customer pauses them.
    from sqlmodel import Session, select

    from storage.models import SlaClock

    add_agent(directory, name="Ana Ruiz", email="ana@soporte.example", password=PASSWORD)
    send_request(gateway, directory)
    with smtplib.SMTP("127.0.0.1", gateway.smtp_port, timeout=10) as smtp:
        smtp.sendmail(MARIA, ["soporte@example.com"],
                      load_mail("outlook-new-request-logo-es.eml"))
    context, page = sign_in(browser, gateway, "ana@soporte.example")
    wait_for(lambda: page.reload() or page.get_by_role("link", name="#1002").count() == 1,
             timeout=30)
    page.goto(gateway.web_url + "/team/tickets/1002")
    update = page.locator("#update form")
    update.get_by_label("Prioridad").select_option(label="urgente")
    update.get_by_role("button", name="Guardar").click()
    page.wait_for_load_state()
    assert page.locator("#priority").inner_text() == "urgente"

    def sorted_by_due() -> list[str]:
        page.goto(gateway.web_url + "/team/tickets?view=all&sort=due")
        return [cell.inner_text() for cell in page.locator("td.number").all()]

    wait_for(lambda: sorted_by_due() == ["#1002", "#1001"], timeout=30)
    assert page.locator("td.due").first.inner_text() != "—"
    shot(page, "console-sorted-by-due-desktop")

    page.goto(gateway.web_url + "/team/tickets/1002")
    sla = page.locator("#sla")
    assert "Plan standard, con el calendario spain (Europe/Madrid)" in sla.inner_text()
    first = sla.locator("tr[data-target='first_response']")
    assert "primera respuesta · 30 min" in first.inner_text()
    assert first.get_attribute("data-state") in ("running", "breached")
    with Session(directory) as session:
        stored = {c.target: c for c in session.exec(select(SlaClock))
                  if c.ticket_id == 2}
    assert first.locator("td").nth(2).inner_text() != "—"
    assert stored["first_response"].minutes == 30
    why = sla.locator("details[data-target='resolution']")
    why.locator("summary").click()
    kinds = [item.get_attribute("data-kind") for item in why.locator("li").all()]
    assert kinds and set(kinds) <= {"running", "outside_hours", "holiday"}
    assert why.locator("li").first.is_visible()
    # What is still ahead ends at the due time shown (480 business minutes: never today only).
    ahead = why.locator("li.ahead")
    assert ahead.count() >= 2 and "por venir" in ahead.last.inner_text()
    due = sla.locator("tr[data-target='resolution'] td").nth(2).inner_text()
    assert ahead.last.locator(".when").inner_text().endswith(due)
    assert "abierto por correo" in page.locator("ol.history").inner_text()
    assert "Solicitud recibida" in page.locator("ul.mails").inner_text()
    shot(page, "console-sla-explained-desktop")
    page.set_viewport_size({"width": 360, "height": 800})
    shot(page, "console-sla-explained-phone")
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    page.set_viewport_size({"width": 1280, "height": 900})

    change_status(page, "Cualificado")
    change_status(page, "Esperando al cliente",
                  **{"Qué necesitamos exactamente (para Esperando al cliente)": "El PDF"})
    sla = page.locator("#sla")
    assert sla.locator("tr[data-target='qualify']").get_attribute("data-state") in (
        "met", "breached")
    assert sla.locator("tr[data-target='resolution']").get_attribute("data-state") == "paused"
    assert sla.locator("tr[data-target='resolution'] td").nth(2).inner_text() == "—"
    why = sla.locator("details[data-target='resolution']")
    why.locator("summary").click()
    assert why.locator("li").last.get_attribute("data-kind") == "paused"
    assert "parado (esperando al cliente, o pendiente)" in why.locator("li").last.inner_text()
    context.close()
