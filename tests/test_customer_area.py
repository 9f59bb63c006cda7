"""The customer area over HTTP: opening tickets, answering, files, contacts, lists, login; and the
rules that keep each organization to its own data and every change behind a CSRF token.

María is a manager of C0001, José a colleague who is not; Lucía belongs to C0002."""

from __future__ import annotations

import json
import re
import warnings

import pytest
from click.testing import CliRunner
from sqlmodel import Session, col, select
from starlette.exceptions import StarletteDeprecationWarning

from gateway.cli import main
from storage import inbound
from storage.db import transaction
from storage.models import (
    Application,
    Attachment,
    Contact,
    Message,
    Notification,
    Organization,
    StatusChange,
    Ticket,
    VerificationRequest,
)
from storage.tickets import contact_by_email, ticket_by_number
from tests.conftest import PASSWORD, deliver, load_mail
from web.app import create_app

with warnings.catch_warnings():
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

MARIA = "maria.garcia@ferreteria-lopez.es"
JOSE = "jose.fernandez@ferreteria-lopez.es"
LUCIA = "lucia.martin@clinicadental-sur.com"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
PNG = (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02\x00\x00"
       b"\x00\x90wS\xde\x00\x00\x00\x0cIDATx\x9cc\xf8\x0f\x00\x00\x01\x01\x00\x05\x18\xd8N\x00"
       b"\x00\x00\x00IEND\xaeB`\x82")
PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << >>\n%%EOF\n"
EXE = b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00" + b"\x00" * 200


@pytest.fixture
def client(parts, settings):
    with TestClient(create_app(settings, parts.engine, parts.workflow)) as test_client:
        yield test_client


@pytest.fixture
def other(parts, settings):
    """A second browser, for another person."""
    with TestClient(create_app(settings, parts.engine, parts.workflow)) as test_client:
        yield test_client


def log_in(client, email: str = MARIA) -> None:
    page = client.get("/login")
    response = client.post("/login", data={"email": email, "password": PASSWORD,
                                           "csrf_token": CSRF.search(page.text)[1]},
                           follow_redirects=False)
    assert response.status_code == 303


def token(client, path: str = "/tickets") -> str:
    return CSRF.search(client.get(path).text)[1]


def contact(parts, email: str) -> Contact:
    with Session(parts.engine) as session:
        found = contact_by_email(session, email)
        assert found is not None
        return found


def application_id(parts) -> int:
    with Session(parts.engine) as session:
        return session.exec(select(Application.id)).first()


def ticket(parts, number: int) -> Ticket:
    with Session(parts.engine) as session:
        found = ticket_by_number(session, number)
        assert found is not None
        return found


def open_form(client, parts, *, files=(), **fields):
    data = {"csrf_token": token(client, "/tickets/new"), "contact": str(contact(parts, MARIA).id),
            "application": str(application_id(parts)),
            "description": "No puedo imprimir la factura.\nSale en blanco.", "consent": "yes",
            **fields}
    data = {k: v for k, v in data.items() if v is not None}
    return client.post("/tickets/new", data=data, files=[("files", f) for f in files],
                       follow_redirects=False)


def ingest(parts, name: str, raw: bytes | None = None):
    queue_id = inbound.enqueue(parts.engine, parts.blobs, raw or load_mail(name), channel="file")
    return parts.ingestor.process_next(queue_id)


# --------------------------------------------------------------------------- open a ticket


def test_open_ticket_form_lists_only_the_organizations_contacts_and_applications(parts, client):
    # María's form offers her colleagues' addresses (not another organization's), the
    # applications, "+ Añadir contacto", and the consent with the privacy link.
    log_in(client)
    page = client.get("/tickets/new").text
    assert MARIA in page and JOSE in page and LUCIA not in page
    assert "ERP Clave" in page and "+ Añadir contacto" in page
    assert 'href="/privacy"' in page and "Consiento el tratamiento de mis datos" in page


def test_web_ticket_goes_through_the_same_workflow_as_a_mail(parts, client):
    # A web ticket gets the next number, a "received" mail to the requester, its message on the
    # thread (channel web) and a history entry; the page then shows the number.
    log_in(client)
    response = open_form(client, parts, files=[("captura.png", PNG, "image/png")])
    assert response.status_code == 303
    assert response.headers["location"] == "/tickets/1001?opened=1"
    created = ticket(parts, 1001)
    with Session(parts.engine) as session:
        (message,) = session.exec(select(Message).where(Message.ticket_id == created.id)).all()
        notes = session.exec(select(Notification).where(Notification.ticket_id == created.id)
                             ).all()
        history = session.exec(select(StatusChange).where(
            StatusChange.ticket_id == created.id)).all()
        (shot,) = session.exec(select(Attachment)).all()
    assert (created.channel, created.subject, created.status) == (
        "web", "No puedo imprimir la factura.", "new")
    assert created.application_id == application_id(parts)
    assert (message.channel, message.direction, message.text) == (
        "web", "in", "No puedo imprimir la factura.\nSale en blanco.")
    assert [(n.event, n.recipient) for n in notes] == [("received", MARIA)]
    assert [h.note for h in history] == ["opened by web"]
    assert (shot.filename, shot.content_type, shot.accepted) == ("captura.png", "image/png", True)
    page = client.get("/tickets/1001?opened=1").text
    assert "Hemos recibido tu ticket #1001" in page and "captura.png" in page


def test_refused_file_is_named_with_its_reason_and_the_rest_is_accepted(parts, client):
    # A .exe among the files: the ticket is opened with the PDF, the .exe is refused with its
    # reason on the page, and the "received" mail lists it too, as for a mail.
    log_in(client)
    response = open_form(client, parts, files=[("factura.pdf", PDF, "application/pdf"),
                                               ("setup.exe", EXE, "application/pdf")])
    assert response.status_code == 303
    with Session(parts.engine) as session:
        files = {a.filename: a for a in session.exec(select(Attachment))}
        note = session.exec(select(Notification)).one()
    assert files["factura.pdf"].accepted and files["factura.pdf"].content_type == "application/pdf"
    assert not files["setup.exe"].accepted and files["setup.exe"].reason == "type_not_allowed"
    assert json.loads(note.context)["refused"] == [{"filename": "setup.exe",
                                                    "reason": "type_not_allowed"}]
    page = client.get(response.headers["location"]).text
    assert "✗ setup.exe: este tipo de archivo no se admite" in page
    assert "✓ factura.pdf" in page


def test_a_missing_field_keeps_the_rest_of_the_form_and_the_files(parts, client):
    # No description and no consent: 400, each error tied to its field, the application and
    # the accepted file kept (no need to pick it again), the refused one named; nothing opened.
    log_in(client)
    response = open_form(client, parts, description="", consent=None,
                         files=[("captura.png", PNG, "image/png"), ("virus.exe", EXE, "x/y")])
    assert response.status_code == 400
    page = response.text
    assert 'aria-describedby="description-error"' in page and "Describe el problema." in page
    assert 'aria-describedby="consent-error"' in page
    assert f'value="{application_id(parts)}" selected' in page
    assert "virus.exe no se ha aceptado: este tipo de archivo no se admite" in page
    kept = re.search(r'name="kept" value="([^"]+)" checked> captura.png', page)
    assert kept
    with Session(parts.engine) as session:
        assert session.exec(select(Ticket)).all() == []
    again = open_form(client, parts, kept=kept[1])
    assert again.status_code == 303
    with Session(parts.engine) as session:
        (shot,) = session.exec(select(Attachment)).all()
    assert (shot.filename, shot.accepted) == ("captura.png", True)


def test_a_tampered_kept_file_is_ignored(parts, client):
    # A kept-file token is signed: a forged one names no file.
    log_in(client)
    assert open_form(client, parts, kept="forged.token").status_code == 303
    with Session(parts.engine) as session:
        assert session.exec(select(Attachment)).all() == []


def test_a_contact_of_another_organization_cannot_be_chosen(parts, client):
    # Lucía's id in María's form is refused like no choice at all; nothing is opened.
    log_in(client)
    response = open_form(client, parts, contact=str(contact(parts, LUCIA).id))
    assert response.status_code == 400 and "Elige para quién es el ticket." in response.text
    with Session(parts.engine) as session:
        assert session.exec(select(Ticket)).all() == []


def test_a_manager_adds_a_contact_while_opening_a_ticket(parts, client):
    # María adds Pedro in the form: he becomes a verified contact of C0001 and the requester.
    log_in(client)
    response = open_form(client, parts, contact="new", new_name="Pedro Ruiz",
                         new_email="Pedro.Ruiz@ferreteria-lopez.es")
    assert response.status_code == 303
    pedro = contact(parts, "pedro.ruiz@ferreteria-lopez.es")
    maria = contact(parts, MARIA)
    assert (pedro.state, pedro.organization_id) == ("verified", maria.organization_id)
    assert ticket(parts, 1001).requester_id == pedro.id


def test_a_colleague_adds_a_person_who_waits_for_the_managers(parts, client):
    # José (no manager) adds Pedro: Pedro is pending, the ticket held, and María gets the
    # verification mail saying José added him; José's form says so.
    log_in(client, JOSE)
    response = open_form(client, parts, contact="new", new_name="Pedro Ruiz",
                         new_email="pedro.ruiz@ferreteria-lopez.es")
    assert response.status_code == 200
    assert "Hemos pedido a los responsables de tu organización que confirmen a Pedro Ruiz" \
        in response.text
    assert contact(parts, "pedro.ruiz@ferreteria-lopez.es").state == "pending"
    assert ticket(parts, 1001).status == "held"
    with Session(parts.engine) as session:
        (note,) = session.exec(select(Notification)).all()
    assert (note.event, note.recipient) == ("verification_request", MARIA)
    assert json.loads(note.context)["requested_by_email"] == JOSE


def test_adding_an_existing_address_points_to_the_list(parts, client):
    log_in(client)
    response = open_form(client, parts, contact="new", new_name="Otra", new_email=JOSE)
    assert response.status_code == 400
    assert "Esa dirección ya pertenece a un contacto: elígelo en la lista." in response.text


# --------------------------------------------------------------------------- a ticket's page


def test_answer_from_the_web_puts_an_awaiting_ticket_back_to_work(parts, client):
    # The ticket waits for María with a request shown prominently; her answer with a file goes
    # on the thread (channel web) and the ticket is in progress again.
    log_in(client)
    open_form(client, parts)
    with transaction(parts.engine) as session:
        parts.workflow.move(session, ticket_by_number(session, 1001), "awaiting_customer",
                            actor="Ana (soporte)", request="La versión del programa.")
    page = client.get("/tickets/1001").text
    assert "Necesitamos información por tu parte" in page and "La versión del programa." in page
    response = client.post("/tickets/1001/answer", data={
        "csrf_token": token(client), "text": "Es la versión 8.2."},
        files=[("files", ("version.png", PNG, "image/png"))], follow_redirects=False)
    assert response.status_code == 303
    assert ticket(parts, 1001).status == "in_progress"
    with Session(parts.engine) as session:
        last = session.exec(select(Message).order_by(col(Message.id).desc())).first()
        (shot,) = session.exec(select(Attachment).where(Attachment.message_id == last.id)).all()
    assert (last.channel, last.text, shot.filename) == ("web", "Es la versión 8.2.", "version.png")


def test_an_empty_answer_is_refused_with_the_field_named(parts, client):
    log_in(client)
    open_form(client, parts)
    response = client.post("/tickets/1001/answer", data={"csrf_token": token(client),
                                                         "text": "  "})
    assert response.status_code == 400 and "Escribe tu respuesta." in response.text


def test_a_closed_ticket_takes_no_answer_and_offers_a_new_one(parts, client):
    log_in(client)
    open_form(client, parts)
    with transaction(parts.engine) as session:
        found = ticket_by_number(session, 1001)
        parts.workflow.move(session, found, "cancelled", actor="Ana (soporte)")
    assert "Abre un ticket nuevo" in client.get("/tickets/1001").text
    client.post("/tickets/1001/answer", data={"csrf_token": token(client), "text": "Hola"})
    with Session(parts.engine) as session:
        assert len(session.exec(select(Message)).all()) == 1


def test_ticket_page_shows_mails_sent_history_and_readable_sizes(parts, client):
    # The "received" mail is on the page with its text; sizes read "KB", history is in words.
    log_in(client)
    open_form(client, parts, files=[("factura.pdf", PDF * 200, "application/pdf")])
    deliver(parts)
    page = client.get("/tickets/1001").text
    assert "Correos que te hemos enviado sobre este ticket" in page
    assert "[#1001] Hemos recibido tu solicitud" in page and "enviado" in page
    assert "abierto en el área de clientes" in page
    assert re.search(r"factura\.pdf</a> <span class=\"size\">\d+ KB</span>", page)


def test_inline_images_of_an_html_mail_are_shown_in_place(parts, client):
    # Outlook's signature logo (Content-ID) shows inside the message, from this ticket's files.
    assert ingest(parts, "outlook-new-request-logo-es.eml").outcome == "created"
    log_in(client, JOSE)
    page = client.get("/tickets/1001").text
    with Session(parts.engine) as session:
        logo = session.exec(select(Attachment).where(col(Attachment.content_id).is_not(None))
                            ).one()
    assert f'src="/tickets/1001/files/{logo.id}"' in page
    assert "cid:" not in page


def test_files_download_for_their_organization_only(parts, client, other):
    # María gets the PDF as an attachment with the detected type and nosniff, the PNG inline;
    # Lucía (another organization) gets 404 for both, as for a missing file.
    log_in(client)
    open_form(client, parts, files=[("factura.pdf", PDF, "text/html"),
                                    ("captura.png", PNG, "application/pdf")])
    with Session(parts.engine) as session:
        files = {a.filename: a for a in session.exec(select(Attachment))}
    pdf = client.get(f"/tickets/1001/files/{files['factura.pdf'].id}")
    assert pdf.status_code == 200 and pdf.content == PDF
    assert pdf.headers["content-type"] == "application/pdf"
    assert pdf.headers["content-disposition"].startswith("attachment;")
    assert pdf.headers["x-content-type-options"] == "nosniff"
    png = client.get(f"/tickets/1001/files/{files['captura.png'].id}")
    assert png.headers["content-type"] == "image/png"
    assert png.headers["content-disposition"].startswith("inline;")
    log_in(other, LUCIA)
    for item in files.values():
        assert other.get(f"/tickets/1001/files/{item.id}").status_code == 404


def test_a_refused_file_and_a_file_of_another_ticket_are_not_served(parts, client):
    log_in(client)
    open_form(client, parts, files=[("setup.exe", EXE, "application/pdf")])
    open_form(client, parts, files=[("factura.pdf", PDF, "application/pdf")])
    with Session(parts.engine) as session:
        files = {a.filename: a for a in session.exec(select(Attachment))}
    assert client.get(f"/tickets/1001/files/{files['setup.exe'].id}").status_code == 404
    assert client.get(f"/tickets/1001/files/{files['factura.pdf'].id}").status_code == 404
    assert client.get(f"/tickets/1002/files/{files['factura.pdf'].id}").status_code == 200


def test_another_organizations_ticket_is_answered_like_a_missing_one(parts, client, other):
    log_in(client)
    open_form(client, parts)
    log_in(other, LUCIA)
    assert other.get("/tickets/1001").status_code == 404
    response = other.post("/tickets/1001/answer", data={"csrf_token": token(other),
                                                        "text": "intruso"})
    assert response.status_code == 404
    with Session(parts.engine) as session:
        assert len(session.exec(select(Message)).all()) == 1
    assert other.get("/tickets/99999999999999999999").status_code == 404


def test_a_held_ticket_is_for_the_managers_eyes_only(parts, client, other):
    # An unknown sender's held ticket: José gets 404, María sees it (and on the contacts page).
    ingest(parts, "outlook-unknown-sender-known-domain-es.eml")
    log_in(client, JOSE)
    assert client.get("/tickets/1001").status_code == 404
    log_in(other, MARIA)
    assert other.get("/tickets/1001").status_code == 200
    assert "#1001" in other.get("/contacts").text


# --------------------------------------------------------------------------- contacts


def test_a_manager_adds_edits_deactivates_and_reactivates_a_contact(parts, client, other):
    log_in(client)
    added = client.post("/contacts/new", data={
        "csrf_token": token(client, "/contacts/new"), "name": "Pedro Ruiz",
        "email": "pedro.ruiz@ferreteria-lopez.es", "role": "Almacén", "phone": "976 123 456",
        "types": ["billing", "technical"], "language": "es"}, follow_redirects=False)
    assert added.headers["location"] == "/contacts?done=added"
    pedro = contact(parts, "pedro.ruiz@ferreteria-lopez.es")
    assert (pedro.role, pedro.phone, pedro.types, pedro.state, pedro.is_manager) == (
        "Almacén", "976 123 456", "billing,technical", "verified", False)
    client.post(f"/contacts/{pedro.id}", data={
        "csrf_token": token(client), "name": "Pedro Ruiz Gil", "email": pedro.email,
        "types": ["quotes"], "language": "en", "is_manager": "1"})
    pedro = contact(parts, pedro.email)
    assert (pedro.name, pedro.types, pedro.language, pedro.is_manager) == (
        "Pedro Ruiz Gil", "quotes", "en", True)
    client.post(f"/contacts/{contact(parts, JOSE).id}/active",
                data={"csrf_token": token(client), "active": "0"})
    assert not contact(parts, JOSE).active
    page = other.get("/login")
    refused = other.post("/login", data={"email": JOSE, "password": PASSWORD,
                                         "csrf_token": CSRF.search(page.text)[1]})
    assert refused.status_code == 401
    client.post(f"/contacts/{contact(parts, JOSE).id}/active",
                data={"csrf_token": token(client), "active": "1"})
    assert contact(parts, JOSE).active


def test_contact_form_names_each_wrong_field(parts, client):
    log_in(client)
    response = client.post("/contacts/new", data={
        "csrf_token": token(client), "name": "", "email": "no-es-un-email", "phone": "abc"})
    assert response.status_code == 400
    page = response.text
    for field in ("name", "email", "phone", "types"):
        assert f'id="{field}-error"' in page
    assert "Este campo es obligatorio." in page and "Elige al menos uno." in page


def test_a_manager_cannot_lock_themselves_out(parts, client):
    log_in(client)
    maria = contact(parts, MARIA)
    response = client.post(f"/contacts/{maria.id}/active",
                           data={"csrf_token": token(client), "active": "0"})
    assert response.status_code == 400 and contact(parts, MARIA).active
    response = client.post(f"/contacts/{maria.id}", data={
        "csrf_token": token(client), "name": maria.name, "email": MARIA,
        "types": ["technical"], "language": "es"})
    assert response.status_code == 400 and contact(parts, MARIA).is_manager


def test_a_colleague_sees_the_contacts_read_only(parts, client):
    # José sees his colleagues without edit links; the manager pages and actions are 404.
    log_in(client, JOSE)
    page = client.get("/contacts").text
    assert MARIA in page and "Editar" not in page and "Desactivar" not in page
    maria = contact(parts, MARIA)
    assert client.get("/contacts/new").status_code == 404
    assert client.get(f"/contacts/{maria.id}").status_code == 404
    response = client.post(f"/contacts/{maria.id}/active",
                           data={"csrf_token": token(client), "active": "0"})
    assert response.status_code == 404 and contact(parts, MARIA).active


def test_a_manager_cannot_touch_another_organizations_contacts(parts, client):
    log_in(client)
    lucia = contact(parts, LUCIA)
    assert client.get(f"/contacts/{lucia.id}").status_code == 404
    for path, data in ((f"/contacts/{lucia.id}/active", {"active": "0"}),
                       (f"/contacts/{lucia.id}", {"name": "X", "email": LUCIA,
                                                  "types": ["technical"]})):
        assert client.post(path, data={"csrf_token": token(client), **data}).status_code == 404
    lucia = contact(parts, LUCIA)
    assert lucia.active and lucia.name == "Lucía Martín"
    assert LUCIA not in client.get("/contacts").text


def test_a_manager_approves_a_pending_person_from_the_page(parts, client):
    # The unknown sender waits on the contacts page; approving it there releases the ticket.
    ingest(parts, "outlook-unknown-sender-known-domain-es.eml")
    log_in(client)
    page = client.get("/contacts").text
    request_id = re.search(r'action="/contacts/requests/(\d+)"', page)[1]
    response = client.post(f"/contacts/requests/{request_id}",
                           data={"csrf_token": token(client), "decision": "approve"},
                           follow_redirects=False)
    assert response.headers["location"] == "/contacts?done=approved"
    assert ticket(parts, 1001).status == "new"
    with Session(parts.engine) as session:
        pending = session.get(VerificationRequest, int(request_id))
    assert (pending.state, pending.decided_by) == ("approved", MARIA)


def test_a_verification_request_of_another_organization_is_not_found(parts, client, other):
    ingest(parts, "outlook-unknown-sender-known-domain-es.eml")
    with Session(parts.engine) as session:
        pending = session.exec(select(VerificationRequest)).one()
    log_in(other, LUCIA)
    response = other.post(f"/contacts/requests/{pending.id}",
                          data={"csrf_token": token(other), "decision": "approve"})
    assert response.status_code == 404
    assert ticket(parts, 1001).status == "held"


def test_a_deactivated_contacts_mail_waits_for_a_manager_who_may_bring_them_back(parts, client):
    # José is deactivated: his mail is held as a stranger's and María is asked; approving him
    # reactivates him and releases the ticket.
    log_in(client)
    client.post(f"/contacts/{contact(parts, JOSE).id}/active",
                data={"csrf_token": token(client), "active": "0"})
    raw = load_mail("outlook-new-request-es.eml").replace(
        b"maria.garcia@ferreteria-lopez.es", JOSE.encode())
    outcome = ingest(parts, "", raw)
    assert (outcome.outcome, outcome.reason) == ("held", "sender deactivated by the organization")
    with Session(parts.engine) as session:
        pending = session.exec(select(VerificationRequest)).one()
    client.post(f"/contacts/requests/{pending.id}",
                data={"csrf_token": token(client), "decision": "approve"})
    assert contact(parts, JOSE).active
    assert ticket(parts, outcome.ticket).status == "new"


# --------------------------------------------------------------------------- CSRF


@pytest.mark.parametrize("path,data", [
    ("/tickets/new", {"description": "x", "consent": "yes"}),
    ("/tickets/1001/answer", {"text": "x"}),
    ("/contacts/new", {"name": "X", "email": "x@ferreteria-lopez.es", "types": "technical"}),
    ("/contacts/{jose}", {"name": "X", "email": JOSE, "types": "technical"}),
    ("/contacts/{jose}/active", {"active": "0"}),
    ("/language", {"lang": "en"}),
])
def test_no_change_without_the_csrf_token(parts, client, path, data):
    # Each form post without (or with a wrong) token changes nothing.
    log_in(client)
    open_form(client, parts)
    jose = contact(parts, JOSE)
    path = path.replace("{jose}", str(jose.id))
    for token_value in (None, "wrong"):
        form = dict(data, contact=str(contact(parts, MARIA).id),
                    application=str(application_id(parts)))
        if token_value:
            form["csrf_token"] = token_value
        client.post(path, data=form)
    with Session(parts.engine) as session:
        assert len(session.exec(select(Ticket)).all()) == 1
        assert len(session.exec(select(Message)).all()) == 1
        assert session.exec(select(Contact).where(
            Contact.email == "x@ferreteria-lopez.es")).first() is None
    jose = contact(parts, JOSE)
    assert jose.active and jose.name == "José Fernández"
    assert contact(parts, MARIA).language == "es"


def test_deciding_a_request_needs_the_csrf_token(parts, client):
    ingest(parts, "outlook-unknown-sender-known-domain-es.eml")
    log_in(client)
    with Session(parts.engine) as session:
        pending = session.exec(select(VerificationRequest)).one()
    response = client.post(f"/contacts/requests/{pending.id}", data={"decision": "approve"})
    assert response.status_code == 400 and ticket(parts, 1001).status == "held"


# --------------------------------------------------------------------------- lists and login


def many_tickets(parts, count: int, subject: str = "Consulta número {n}") -> None:
    with transaction(parts.engine) as session:
        maria = contact_by_email(session, MARIA)
        for n in range(count):
            parts.workflow.open_ticket(session, requester=maria, channel="web",
                                       subject=subject.format(n=n), notify=False)


def test_lists_are_paginated_newest_first_with_correct_plurals(parts, client):
    many_tickets(parts, 27)
    log_in(client)
    first = client.get("/tickets").text
    assert "27 tickets abiertos" in first and "Página 1 de 2" in first
    assert first.index("#1027") < first.index("#1026")
    second = client.get("/tickets?page=2").text
    assert "#1002" in second and "#1001" in second and "#1027" not in second
    assert client.get("/tickets?page=99").status_code == 200  # the last page, not an error
    with transaction(parts.engine) as session:
        for found in session.exec(select(Ticket).where(Ticket.number > 1001)):
            parts.workflow.change_status(session, found, "cancelled", "test")
    assert "1 ticket abierto" in client.get("/tickets").text


def organization_version(parts, email: str = MARIA) -> int:
    with Session(parts.engine) as session:
        return session.get(Organization, contact(parts, email).organization_id).ticket_version


def test_a_kept_list_is_shown_until_a_change_to_what_it_shows(parts, client):
    # The rendered list is kept per organization (web.fragments) under the ticket version the
    # database raises: asked twice it is rendered once; a status change, a new ticket or a
    # rating shows at once; a change the list does not show (a reminder's time) keeps it.
    many_tickets(parts, 2)
    log_in(client)
    fragments = client.app.state.fragments
    first = client.get("/tickets").text
    hits = fragments.hits
    assert client.get("/tickets").text.count("#100") == first.count("#100") == 2
    assert fragments.hits == hits + 1
    before = organization_version(parts)
    with transaction(parts.engine) as session:
        found = ticket_by_number(session, 1002)
        parts.workflow.change_status(session, found, "in_progress", "Ana")
    assert organization_version(parts) > before
    page = client.get("/tickets").text
    assert re.search(r'<a href="/tickets/1002">.*?status-in_progress', page, re.S)
    with transaction(parts.engine) as session:
        found = ticket_by_number(session, 1001)
        parts.workflow.resolve(session, found, "Ana")
    assert "#1001" not in client.get("/tickets").text
    assert "#1001" in client.get("/tickets?group=completed").text
    many_tickets(parts, 1)
    assert "#1003" in client.get("/tickets").text
    with transaction(parts.engine) as session:
        found = ticket_by_number(session, 1001)
        found.rating = 4
        session.add(found)
    assert "4 estrellas" in client.get("/tickets?group=to_rate").text
    unchanged = organization_version(parts)
    with transaction(parts.engine) as session:
        found = ticket_by_number(session, 1001)
        found.rating_reminded_at = found.updated_at
        session.add(found)
    assert organization_version(parts) == unchanged
    # Lucía's organization has its own version: María's changes leave it alone.
    assert organization_version(parts, LUCIA) == 0


def test_search_finds_by_number_or_by_words_of_the_subject(parts, client):
    many_tickets(parts, 3)
    with transaction(parts.engine) as session:
        parts.workflow.open_ticket(session, requester=contact_by_email(session, MARIA),
                                   channel="web", subject="La IMPRESORA no imprime")
    log_in(client)
    by_number = client.get("/tickets?q=%231002").text
    assert "#1002" in by_number and "#1001" not in by_number
    by_words = client.get("/tickets?q=impresora+imprime").text
    assert "#1004" in by_words and "#1002" not in by_words
    assert "1 ticket encontrado para «impresora imprime»" in by_words
    # "%" and "_" are letters here, not patterns that match everything.
    assert "0 tickets encontrados para «%_»" in client.get("/tickets?q=%25_").text


def test_to_rate_holds_rated_and_waiting_tickets_closed_unrated_included(parts, client):
    # Resolved, closed-unrated and rated tickets are under "Valorar"; the login count matches
    # the unrated ones.
    many_tickets(parts, 4)
    with transaction(parts.engine) as session:
        found = {t.number: t for t in session.exec(select(Ticket))}
        parts.workflow.resolve(session, found[1001], "Ana")
        parts.workflow.resolve(session, found[1002], "Ana")
        parts.workflow.move(session, found[1002], "closed", actor="Ana")
        parts.workflow.resolve(session, found[1003], "Ana")
        found[1003].rating = 5
        session.add(found[1003])
    log_in(client)
    assert "Tienes 2 tickets pendientes de valorar" in client.get("/tickets").text
    page = client.get("/tickets?group=to_rate").text
    assert all(f"#{n}" in page for n in (1001, 1002, 1003)) and "#1004" not in page


def test_login_brings_the_visitor_back_to_the_page_asked_for(parts, client):
    many_tickets(parts, 1)
    first = client.get("/tickets/1001", follow_redirects=False)
    assert first.headers["location"] == "/login?next=%2Ftickets%2F1001"
    page = client.get(first.headers["location"])
    assert 'name="next" value="/tickets/1001"' in page.text
    response = client.post("/login", data={"email": MARIA, "password": PASSWORD,
                                           "csrf_token": CSRF.search(page.text)[1],
                                           "next": "/tickets/1001"}, follow_redirects=False)
    assert response.headers["location"] == "/tickets/1001"


@pytest.mark.parametrize("target", ["//evil.example/x", "https://evil.example/", "/\\evil",
                                    "javascript:alert(1)"])
def test_login_never_sends_the_visitor_to_another_site(parts, client, target):
    page = client.get("/login")
    response = client.post("/login", data={"email": MARIA, "password": PASSWORD,
                                           "csrf_token": CSRF.search(page.text)[1],
                                           "next": target}, follow_redirects=False)
    assert response.headers["location"] == "/tickets"


def test_login_page_offers_support_by_mail(client):
    page = client.get("/login").text
    assert "¿Necesitas ayuda?" in page and 'href="mailto:soporte@example.com"' in page


def test_language_switch_changes_the_pages_and_the_contacts_language(parts, client):
    # Anonymous: a cookie; signed in: the contact's own language (pages and mails).
    switched = client.post("/language", data={"csrf_token": token(client, "/login"),
                                              "lang": "en", "next": "/login"})
    assert "Customer access" in switched.text
    log_in(client)
    client.post("/language", data={"csrf_token": token(client), "lang": "en",
                                   "next": "/tickets"})
    assert contact(parts, MARIA).language == "en"
    assert "Open tickets" in client.get("/tickets").text


def test_contact_commands_take_role_phone_and_types(parts, settings):
    env = {"HELPDESK_DATABASE_URL": settings.database_url,
           "HELPDESK_VAR_DIR": str(settings.var_dir)}
    runner = CliRunner()
    added = runner.invoke(main, ["contact", "add", "--org", "C0001", "--name", "Pedro Ruiz",
                                 "--email", "pedro.ruiz@ferreteria-lopez.es", "--role", "Almacén",
                                 "--phone", "976 000 111", "--types", "quotes,billing"], env=env)
    assert added.exit_code == 0, added.output
    pedro = contact(parts, "pedro.ruiz@ferreteria-lopez.es")
    assert (pedro.role, pedro.phone, pedro.types) == ("Almacén", "976 000 111", "billing,quotes")
    edited = runner.invoke(main, ["contact", "edit", pedro.email, "--types", "technical",
                                  "--inactive", "--manager"], env=env)
    assert edited.exit_code == 0, edited.output
    pedro = contact(parts, pedro.email)
    assert (pedro.types, pedro.active, pedro.is_manager) == ("technical", False, True)
    wrong = runner.invoke(main, ["contact", "edit", pedro.email, "--types", "cocina"], env=env)
    assert wrong.exit_code != 0 and "billing, quotes, technical" in wrong.output
    missing = runner.invoke(main, ["contact", "edit", "nadie@x.es", "--name", "X"], env=env)
    assert missing.exit_code != 0 and "no contact with email" in missing.output
