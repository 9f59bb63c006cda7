"""The customer area as people use it, in Debian's headless Chromium: opening a ticket with a
dragged screenshot, a pasted one and a refused file; managing contacts; downloading a file and
answering with one; landing back on a mailed link after logging in; every page on a phone.

Screenshots of every page, at desktop and phone widths, are written to
``var/test-artifacts/screens`` (``HELPDESK_TEST_ARTIFACTS`` elsewhere)."""

from __future__ import annotations

import base64
import os
import re
import smtplib
from pathlib import Path

import pytest
from sqlmodel import Session, select

from storage.models import Attachment, Contact, Ticket
from tests.conftest import PASSWORD, ROOT, wait_for
from tests.test_customer_area import EXE, PDF, PNG
from tests.test_web_browser import links_to, log_in, send_request

pytestmark = pytest.mark.browser

ARTIFACTS = Path(os.environ.get("HELPDESK_TEST_ARTIFACTS", ROOT / "var" / "test-artifacts"))
MARIA = "maria.garcia@ferreteria-lopez.es"

# Files handed to the page's own script as a drop or a paste (as a person's browser would).
MAKE_TRANSFER = """(files) => {
  const transfer = new DataTransfer();
  for (const f of files) {
    const bytes = Uint8Array.from(atob(f.data), c => c.charCodeAt(0));
    transfer.items.add(new File([bytes], f.name, {type: f.type}));
  }
  return transfer;
}"""


def transfer(page, *files: tuple[str, bytes, str]):
    return page.evaluate_handle(MAKE_TRANSFER, [
        {"name": name, "data": base64.b64encode(data).decode(), "type": kind}
        for name, data, kind in files])


def shot(page, name: str) -> None:
    ARTIFACTS.joinpath("screens").mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "screens" / f"{name}.png"), full_page=True)


def tickets(directory) -> list[Ticket]:
    with Session(directory) as session:
        return list(session.exec(select(Ticket)).all())


def test_open_a_ticket_with_a_dragged_a_pasted_and_a_refused_file(gateway, directory, browser,
                                                                  smtp_sink):
    # María drags a screenshot onto the form, pastes another and picks a .exe: the ticket is
    # opened with both images, the .exe is named with its reason, the ticket is under
    # "Tickets abiertos", and the "received" mail reaches the relay.
    context, page = log_in(browser, gateway)
    page.get_by_role("link", name="Abrir ticket").first.click()
    page.wait_for_url("**/tickets/new")
    page.get_by_label("Aplicación").select_option(label="ERP Clave")
    page.get_by_label("Descripción").fill("La factura sale en blanco al imprimir.")
    page.dispatch_event("[data-drop]", "drop",
                        {"dataTransfer": transfer(page, ("error.png", PNG, "image/png"))})
    page.evaluate("(t) => document.dispatchEvent(new ClipboardEvent('paste', "
                  "{clipboardData: t, bubbles: true}))",
                  transfer(page, ("image.png", PNG, "image/png")))
    page.set_input_files("#files", files=[{"name": "setup.exe", "mimeType": "application/pdf",
                                           "buffer": EXE}])
    chosen = page.locator("[data-chosen] li")
    assert chosen.count() == 3
    assert "error.png" in chosen.nth(0).inner_text()
    assert re.match(r"captura-\d{8}-\d{6}\.png", chosen.nth(1).inner_text())
    page.get_by_label(re.compile("Consiento el tratamiento")).check()
    shot(page, "new-ticket-filled-desktop")
    page.get_by_role("button", name="Enviar").click()
    page.wait_for_url("**/tickets/1001?opened=1")
    banner = page.locator("section.notice.success")
    assert "Hemos recibido tu ticket #1001" in banner.inner_text()
    assert "✗ setup.exe: este tipo de archivo no se admite" in banner.inner_text()
    assert banner.locator("li.ok").count() == 2
    shot(page, "ticket-opened-desktop")
    page.get_by_role("link", name="Mis tickets").first.click()
    assert "La factura sale en blanco al imprimir." in page.locator("table.list").inner_text()
    mails = links_to(smtp_sink, MARIA, "/tickets/1001")
    assert mails
    with Session(directory) as session:
        files = session.exec(select(Attachment)).all()
    assert sorted((f.content_type, f.accepted) for f in files) == [
        ("application/x-dosexec", False), ("image/png", True), ("image/png", True)]
    context.close()


def test_a_manager_manages_contacts_and_approves_a_pending_person(gateway, directory, browser):
    # María adds Pedro, corrects his phone, deactivates José, and approves from the page a
    # person who wrote to support from the company's domain.
    with smtplib.SMTP("127.0.0.1", gateway.smtp_port, timeout=10) as client:
        raw = (b"From: Ana Ruiz <ana.ruiz@ferreteria-lopez.es>\r\nTo: soporte@example.com\r\n"
               b"Subject: Alta en el programa\r\nMessage-ID: <ana-1@ferreteria-lopez.es>\r\n\r\n"
               b"Hola, soy nueva en el almacen.\r\n")
        client.sendmail("ana.ruiz@ferreteria-lopez.es", ["soporte@example.com"], raw)
    wait_for(lambda: tickets(directory))
    context, page = log_in(browser, gateway)
    page.get_by_role("link", name="Gestionar contactos").click()
    page.wait_for_url("**/contacts")
    assert "1 persona pendiente de verificación" in page.inner_text("section.pending")
    shot(page, "contacts-pending-desktop")
    page.get_by_role("link", name="Añadir contacto").click()
    page.get_by_label("Nombre").fill("Pedro Ruiz")
    page.get_by_label("Email").fill("pedro.ruiz@ferreteria-lopez.es")
    page.get_by_label("Teléfono").fill("976 000 111")
    page.get_by_label("presupuestos").check()
    page.get_by_role("button", name="Añadir contacto").click()
    page.wait_for_url("**/contacts?done=added")
    page.get_by_role("link", name="Editar Pedro Ruiz").click()
    page.get_by_label("Teléfono").fill("976 000 222")
    page.get_by_role("button", name="Guardar cambios").click()
    page.wait_for_url("**/contacts?done=changed")
    page.get_by_role("button", name="Desactivar José Fernández").click()
    page.wait_for_url("**/contacts?done=deactivated")
    page.get_by_role("button", name="Aprobar contacto").click()
    page.wait_for_url("**/contacts?done=approved")
    with Session(directory) as session:
        people = {c.email: c for c in session.exec(select(Contact))}
    assert people["pedro.ruiz@ferreteria-lopez.es"].phone == "976 000 222"
    assert people["pedro.ruiz@ferreteria-lopez.es"].types == "quotes,technical"
    assert not people["jose.fernandez@ferreteria-lopez.es"].active
    assert people["ana.ruiz@ferreteria-lopez.es"].state == "verified"
    assert tickets(directory)[0].status == "new"
    context.close()


def test_download_a_file_and_answer_with_one(gateway, directory, browser, tmp_path):
    # María downloads the PDF of her ticket and answers with a screenshot picked from disk.
    send_request(gateway, directory)
    context, page = log_in(browser, gateway)
    page.goto(gateway.web_url + "/tickets/1001")
    answer = tmp_path / "respuesta.pdf"
    answer.write_bytes(PDF)
    page.get_by_label("Tu respuesta").fill("Os adjunto la factura que sale en blanco.")
    page.set_input_files("#files", str(answer))
    page.get_by_role("button", name="Enviar respuesta").click()
    page.wait_for_url("**/tickets/1001?answered=1*")
    assert "Hemos añadido tu respuesta al ticket." in page.inner_text("main")
    with page.expect_download() as started:
        page.get_by_role("link", name="respuesta.pdf").click()
    download = started.value
    assert download.suggested_filename == "respuesta.pdf"
    assert Path(download.path()).read_bytes() == PDF
    shot(page, "ticket-answered-desktop")
    context.close()


def test_a_mailed_link_opened_signed_out_lands_there_after_login(gateway, directory, browser,
                                                                 smtp_sink):
    # The ticket link of the "received" mail, opened signed out, asks for the login and then
    # shows that ticket.
    send_request(gateway, directory)
    (url,) = set(links_to(smtp_sink, MARIA, "/tickets/1001"))
    context = browser.new_context(locale="es-ES")
    page = context.new_page()
    # The mail names the public URL; the test's gateway listens on a port of its own.
    page.goto(gateway.web_url + "/" + url.split("/", 3)[3])
    page.wait_for_url("**/login?next=%2Ftickets%2F1001")
    page.get_by_label("Email").fill(MARIA)
    page.get_by_label("Contraseña").fill(PASSWORD)
    page.get_by_role("button", name="Entrar").click()
    page.wait_for_url("**/tickets/1001")
    assert "#1001" in page.inner_text("h1")
    context.close()


SIGNED_OUT_PAGES = ["/login", "/password/forgot", "/privacy"]
SIGNED_IN_PAGES = ["/tickets", "/tickets?group=completed", "/tickets?group=to_rate",
                   "/tickets/1001", "/tickets/new", "/contacts", "/contacts/new",
                   "/contacts/{jose}", "/tickets/424242"]


def test_every_page_fits_a_phone_and_is_photographed(gateway, directory, browser):
    # At 360 px no page scrolls sideways; at 1280 px neither. Each is saved as a screenshot.
    send_request(gateway, directory)
    with Session(directory) as session:
        jose = session.exec(select(Contact).where(
            Contact.email == "jose.fernandez@ferreteria-lopez.es")).one()
    for width, label in ((360, "phone"), (1280, "desktop")):
        context = browser.new_context(locale="es-ES", viewport={"width": width, "height": 740})
        page = context.new_page()
        overflowing = []
        for path in [*SIGNED_OUT_PAGES, "sign in", *SIGNED_IN_PAGES]:
            if path == "sign in":
                page.goto(gateway.web_url + "/login")
                page.get_by_label("Email").fill(MARIA)
                page.get_by_label("Contraseña").fill(PASSWORD)
                page.get_by_role("button", name="Entrar").click()
                page.wait_for_url("**/tickets")
                continue
            page.goto(gateway.web_url + path.replace("{jose}", str(jose.id)))
            widths = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
            if widths[0] > widths[1]:
                overflowing.append((path, widths))
            name = path.strip("/").replace("{jose}", "edit").replace("/", "-")
            shot(page, f"{name.replace('?group=', '-')}-{label}")
        context.close()
        assert overflowing == [], f"pages wider than {width} px"
