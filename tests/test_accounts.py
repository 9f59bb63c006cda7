"""Unknown senders verified by their managers, forgotten passwords, and the reminder at login.

Mails go through the real outbox sender to ``.eml`` files; links are taken from those mails, as a
person would click them, and opened with Starlette's TestClient (a real Chromium run is in
test_web_browser.py).
"""

from __future__ import annotations

import re
import warnings
from datetime import timedelta

import pytest
from click.testing import CliRunner
from sqlmodel import Session, col, select
from starlette.exceptions import StarletteDeprecationWarning

from gateway.cli import main
from gateway.links import PasswordLinks, VerificationLinks
from gateway.ratings import forget_old_openings
from gateway.service import Service
from storage import inbound
from storage.db import transaction
from storage.models import (
    Contact,
    Message,
    Notification,
    RatingOpening,
    StatusChange,
    ThrottleEvent,
    Ticket,
    VerificationRequest,
    utcnow,
)
from storage.passwords import verify_password
from storage.tickets import contact_by_email, ticket_by_number
from tests.conftest import PASSWORD, deliver, load_mail, parse_mail
from tests.test_ratings import CSRF, open_ticket, post_form
from web.app import create_app

with warnings.catch_warnings():
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

MARIA = "maria.garcia@ferreteria-lopez.es"  # manager of C0001
JOSE = "jose.fernandez@ferreteria-lopez.es"  # contact of C0001, not a manager
LUCIA = "lucia.martin@clinicadental-sur.com"  # C0002, which has no manager
ANA = "ana.ruiz@ferreteria-lopez.es"  # writes from C0001's domain, but is no contact
OLGA = "olga.ivanova@clinicadental-sur.com"  # writes from C0002's domain, no contact
URL = re.compile(r"https?://\S+")


@pytest.fixture
def client(parts, settings):
    with TestClient(create_app(settings, parts.engine, parts.workflow)) as test_client:
        yield test_client


def ingest(parts, name: str, raw: bytes | None = None):
    queue_id = inbound.enqueue(parts.engine, parts.blobs, raw or load_mail(name), channel="file",
                               source=name)
    outcome = parts.ingestor.process_next(queue_id)
    assert outcome is not None
    return outcome


def notifications(parts, event: str) -> list[Notification]:
    with Session(parts.engine) as session:
        return list(session.exec(select(Notification).where(Notification.event == event)
                                 .order_by(col(Notification.id))).all())


def mail_of(parts, notification: Notification):
    """The mail exactly as the sender delivers it (rendered, recorded, written as .eml)."""
    deliver(parts)
    (eml,) = parts.sender.outbox_dir.glob(f"{notification.id:06d}-*.eml")
    return parse_mail(eml.read_bytes())


def links_in(mail) -> list[str]:
    return URL.findall(mail.get_body(("plain",)).get_content())


def contact(parts, email: str) -> Contact:
    with Session(parts.engine) as session:
        found = contact_by_email(session, email)
        assert found is not None
        return found


def ticket(parts, number: int) -> Ticket:
    with Session(parts.engine) as session:
        found = ticket_by_number(session, number)
        assert found is not None
        return found


def path_of(url: str) -> str:
    return "/" + url.split("/", 3)[3]


# --------------------------------------------------------------------------- verification


def held_with_links(parts) -> tuple[str, str]:
    """Ana's mail is held; María's verification mail gives its approve and reject links."""
    outcome = ingest(parts, "outlook-unknown-sender-known-domain-es.eml")
    assert (outcome.outcome, outcome.ticket) == ("held", 1001)
    (request,) = notifications(parts, "verification_request")
    mail = mail_of(parts, request)
    approve, reject = (path_of(u) for u in links_in(mail) if "/verify/" in u)
    return approve, reject


def test_held_sender_makes_each_manager_get_a_verification_mail_with_two_signed_links(
        parts, settings):
    # Ana writes from Ferretería López's domain: only María, its manager, is asked (not José);
    # the mail names Ana and quotes her mail, and is not a mail of the held ticket.
    ingest(parts, "outlook-unknown-sender-known-domain-es.eml")
    (request,) = notifications(parts, "verification_request")
    assert (request.recipient, request.ticket_id) == (MARIA, None)
    mail = mail_of(parts, request)
    assert mail["Subject"] == f"¿Es Ana Ruiz ({ANA}) un contacto de tu empresa?"
    assert "[#" not in mail["Subject"]
    assert mail["Reply-To"].addresses[0].addr_spec == "soporte@example.com"
    assert mail["Auto-Submitted"] == "auto-generated"
    text = mail.get_body(("plain",)).get_content()
    assert "Hola, María García:" in text and "Acceso al módulo de pedidos" in text
    assert "no figura entre sus contactos" in text
    urls = [u for u in links_in(mail) if "/verify/" in u]
    assert len(urls) == 2
    links = VerificationLinks(str(settings.secret_key), settings.public_url)
    approve, reject = (links.read(u.rsplit("/", 1)[1]) for u in urls)
    maria = contact(parts, MARIA)
    assert (approve.decision, approve.manager_id) == ("approve", maria.id)
    assert (reject.decision, reject.request_id) == ("reject", approve.request_id)
    html = mail.get_body(("html",)).get_content()
    assert urls[0].replace("&", "&amp;") in html and "Aprobar contacto" in html


def test_opening_a_link_decides_nothing_and_the_button_approves(parts, client):
    # A scanner's GET or HEAD leaves Ana pending; María's click on the button approves her:
    # the ticket becomes new, Ana gets "received" answering her own mail, María is recorded.
    approve, _reject = held_with_links(parts)
    page = client.get(approve)
    assert client.head(approve).status_code == 200
    assert page.status_code == 200 and "Aprobar este contacto" in page.text
    assert "Ana Ruiz" in page.text and "Acceso al módulo de pedidos" in page.text
    assert contact(parts, ANA).state == "pending" and ticket(parts, 1001).status == "held"

    done = post_form(client, approve, page)
    assert done.status_code == 200 and "El contacto se ha aprobado" in done.text
    assert contact(parts, ANA).state == "verified"
    held = ticket(parts, 1001)
    assert held.status == "new"
    (received,) = notifications(parts, "received")
    assert received.recipient == ANA and received.ticket_id == held.id
    with Session(parts.engine) as session:
        first = session.exec(select(Message).where(Message.ticket_id == held.id)).one()
        assert received.in_reply_to == first.message_id is not None
        change = session.exec(select(StatusChange).where(StatusChange.to_status == "new")).one()
        assert change.actor == MARIA
        request = session.exec(select(VerificationRequest)).one()
        assert (request.state, request.decided_by) == ("approved", MARIA)


def test_the_other_link_after_a_decision_says_who_decided_and_changes_nothing(parts, client):
    approve, reject = held_with_links(parts)
    post_form(client, approve, client.get(approve))
    page = client.get(reject)
    assert page.status_code == 200
    assert f"Este contacto ya fue aprobado por {MARIA}" in page.text
    assert "Rechazar este contacto" not in page.text
    again = client.post(reject, data={"csrf_token": CSRF.search(client.get("/login").text)[1]})
    assert "ya fue aprobado" in again.text
    assert contact(parts, ANA).state == "verified" and ticket(parts, 1001).status == "new"


def test_rejection_cancels_the_ticket_tells_the_sender_nothing_and_refuses_later_mail(
        parts, client):
    _approve, reject = held_with_links(parts)
    done = post_form(client, reject, client.get(reject))
    assert "El contacto se ha rechazado" in done.text
    assert contact(parts, ANA).state == "rejected"
    assert ticket(parts, 1001).status == "cancelled"
    with Session(parts.engine) as session:
        to_ana = session.exec(select(Notification).where(Notification.recipient == ANA)).all()
        assert to_ana == []
    name = "outlook-unknown-sender-known-domain-es.eml"
    raw = load_mail(name).replace(b"Message-ID: <", b"Message-ID: <again-", 1)
    later = ingest(parts, name, raw)
    assert (later.outcome, later.reason) == ("rejected", "sender rejected by the organization")


def test_decision_without_csrf_token_is_refused(parts, client):
    approve, _reject = held_with_links(parts)
    refused = client.post(approve, data={})
    assert refused.status_code == 400 and "La página había caducado" in refused.text
    assert contact(parts, ANA).state == "pending"


def test_tampered_and_foreign_links_get_clear_pages(parts, client, settings):
    approve, _reject = held_with_links(parts)
    tampered = approve[:-3] + ("AAA" if not approve.endswith("AAA") else "BBB")
    page = client.get(tampered)
    assert page.status_code == 400 and "no es válido" in page.text
    links = VerificationLinks(str(settings.secret_key), settings.public_url)
    # A link made for a manager of another organization does not open this request.
    with Session(parts.engine) as session:
        request = session.exec(select(VerificationRequest)).one()
        lucia = contact_by_email(session, LUCIA)
    foreign = links.url(request.id, lucia.id, "approve")
    assert client.get(path_of(foreign)).status_code == 404
    # Nor one for a manager who is no longer a manager.
    with transaction(parts.engine) as session:
        maria = contact_by_email(session, MARIA)
        maria.is_manager = False
        session.add(maria)
    assert client.get(approve).status_code == 404
    assert contact(parts, ANA).state == "pending"


def test_expired_link_gets_a_clear_page(parts, client):
    approve, _reject = held_with_links(parts)
    client.app.state.verification_links.max_age = -1  # any age is older than that: expired now
    page = client.get(approve)
    assert page.status_code == 410 and "ha caducado" in page.text


def test_without_managers_the_team_decides_from_the_command_line(parts, settings):
    # Clínica Dental Sur has no manager: Olga's mail is held, nobody is mailed, and the team
    # approves her after a phone call.
    outcome = ingest(parts, "thebat-koi8r-ru.eml")
    assert outcome.outcome == "held"
    assert notifications(parts, "verification_request") == []
    env = {"HELPDESK_DATABASE_URL": settings.database_url,
           "HELPDESK_VAR_DIR": str(settings.var_dir),
           "HELPDESK_SECRET_KEY": str(settings.secret_key)}
    result = CliRunner().invoke(main, ["contact", "verify", OLGA, "--approve",
                                       "--by", "Ana (soporte), por teléfono"], env=env)
    assert result.exit_code == 0, result.output
    assert "approved" in result.output and "1001" in result.output
    assert contact(parts, OLGA).state == "verified"
    assert ticket(parts, 1001).status == "new"
    (received,) = notifications(parts, "received")
    assert received.recipient == OLGA
    again = CliRunner().invoke(main, ["contact", "verify", OLGA, "--reject", "--by", "x"],
                               env=env)
    assert again.exit_code != 0 and "no pending verification" in again.output


# --------------------------------------------------------------------------- passwords


def forgot(client, code: str, tax_id: str):
    page = client.get("/password/forgot")
    return post_form(client, "/password/forgot", page, code=code, tax_id=tax_id)


def test_forgotten_password_answers_the_same_and_mails_only_the_managers(parts, client):
    wrong = forgot(client, "C0001", "B00000000")
    unknown = forgot(client, "C9999", "B12345678")
    right = forgot(client, "c0001", "b-12.345.678")  # as written on an invoice
    assert wrong.status_code == unknown.status_code == right.status_code == 200
    notice = re.compile(r'<p class="notice".*?</p>', re.S)
    assert notice.search(wrong.text)[0] == notice.search(right.text)[0] \
        == notice.search(unknown.text)[0]
    (link_mail,) = notifications(parts, "set_password")
    assert link_mail.recipient == MARIA  # the manager, not José
    mail = mail_of(parts, link_mail)
    assert mail["Subject"] == "Crea tu contraseña del área de clientes"
    text = mail.get_body(("plain",)).get_content()
    assert "caduca en 24 horas" in text and PASSWORD not in text
    assert "Nunca enviamos contraseñas por correo" in text


def test_forgotten_password_form_names_the_missing_field_and_throttles(parts, client):
    page = forgot(client, "C0001", "")
    assert page.status_code == 400 and "Indica el CIF de tu empresa." in page.text
    page = forgot(client, "", "B12345678")
    assert page.status_code == 400 and "Indica tu código de cliente." in page.text
    for _ in range(5):
        assert forgot(client, "C0001", "B00000000").status_code == 200
    blocked = forgot(client, "C0001", "B12345678")
    assert blocked.status_code == 429 and "Demasiadas solicitudes" in blocked.text
    assert notifications(parts, "set_password") == []


def set_password_link(parts, client) -> str:
    forgot(client, "C0001", "B12345678")
    (link_mail,) = notifications(parts, "set_password")
    (url,) = [u for u in links_in(mail_of(parts, link_mail)) if "/password/set/" in u]
    return path_of(url)


def test_set_password_link_works_once_and_the_new_password_logs_in(parts, client):
    link = set_password_link(parts, client)
    page = client.get(link)
    assert page.status_code == 200 and MARIA in page.text
    short = post_form(client, link, page, password="corta", password_repeat="corta")
    assert short.status_code == 400 and "Contraseña: usa al menos 10 caracteres." in short.text
    mismatch = post_form(client, link, page, password="una-clave-nueva-1",
                         password_repeat="una-clave-nueva-2")
    assert mismatch.status_code == 400 and "Repite la contraseña: las dos" in mismatch.text
    as_email = post_form(client, link, page, password=MARIA, password_repeat=MARIA)
    assert "no puede ser tu dirección de correo" in as_email.text
    assert verify_password(contact(parts, MARIA).password_hash, PASSWORD)

    done = post_form(client, link, page, password="una-clave-nueva-1",
                     password_repeat="una-clave-nueva-1")
    assert done.status_code == 200 and "Tu contraseña se ha guardado" in done.text
    hashed = contact(parts, MARIA).password_hash
    assert verify_password(hashed, "una-clave-nueva-1") and not verify_password(hashed, PASSWORD)
    assert hashed.startswith("$argon2")

    used = client.get(link)
    assert used.status_code == 410 and "ya se ha utilizado" in used.text
    replay = post_form(client, link, page, password="otra-clave-nueva",
                       password_repeat="otra-clave-nueva")
    assert replay.status_code == 410
    assert verify_password(contact(parts, MARIA).password_hash, "una-clave-nueva-1")

    login = client.get("/login")
    signed_in = post_form(client, "/login", login, email=MARIA, password="una-clave-nueva-1")
    assert signed_in.status_code == 200 and signed_in.url.path == "/tickets"


def test_set_password_link_tampered_or_expired(parts, client, settings):
    link = set_password_link(parts, client)
    tampered = client.get(link[:-4] + "abcd")
    assert tampered.status_code == 400 and "no es válido" in tampered.text
    client.app.state.password_links.max_age = -1  # any age is older than that: expired now
    expired = client.get(link)
    assert expired.status_code == 410 and "ha caducado" in expired.text


def test_password_links_of_other_kinds_are_not_accepted(parts, client, settings):
    # A star link's token, or a verification token, is not a set-password token (own salts).
    number, contact_id = open_ticket(parts)
    star = parts.rating_links.token(number, contact_id, 5)
    assert client.get(f"/password/set/{star}").status_code == 400
    links = PasswordLinks(str(settings.secret_key), settings.public_url)
    own = links.url(contact_id, contact(parts, MARIA).password_hash)
    assert client.get(path_of(own)).status_code == 200
    assert client.get(path_of(own).replace("/password/set/", "/verify/")).status_code == 400


def test_invite_command_mails_a_welcome_link(parts, settings):
    env = {"HELPDESK_DATABASE_URL": settings.database_url,
           "HELPDESK_VAR_DIR": str(settings.var_dir),
           "HELPDESK_SECRET_KEY": str(settings.secret_key)}
    result = CliRunner().invoke(main, ["contact", "invite", JOSE], env=env)
    assert result.exit_code == 0, result.output
    (invite,) = notifications(parts, "set_password")
    assert invite.recipient == JOSE
    text = mail_of(parts, invite).get_body(("plain",)).get_content()
    assert "Ya tienes una cuenta en nuestra área de clientes" in text
    assert "Si no lo has solicitado" not in text
    missing = CliRunner().invoke(main, ["contact", "invite", "nadie@example.com"], env=env)
    assert missing.exit_code != 0 and "no active, verified contact" in missing.output


# --------------------------------------------------------------------------- ratings upkeep


def test_login_reminds_of_unrated_tickets_once(parts, client):
    open_ticket(parts)
    open_ticket(parts)
    login = client.get("/login")
    first = post_form(client, "/login", login, email=JOSE, password=PASSWORD)
    assert "Tienes 2 tickets pendientes de valorar" in first.text
    assert 'href="/tickets?group=to_rate"' in first.text
    assert "pendientes de valorar" not in client.get("/tickets").text


def test_no_reminder_when_everything_is_rated(parts, client):
    number, _ = open_ticket(parts)
    with transaction(parts.engine) as session:
        rated = ticket_by_number(session, number)
        rated.rating, rated.rated_at, rated.rating_source = 5, utcnow(), "web"
        session.add(rated)
    first = post_form(client, "/login", client.get("/login"), email=JOSE, password=PASSWORD)
    assert first.url.path == "/tickets" and "pendiente" not in first.text


def test_housekeeping_queues_due_reminders_and_forgets_old_openings(parts, settings):
    number, _ = open_ticket(parts)
    long_ago = utcnow() - timedelta(days=settings.rating_reminder_days + 1)
    with transaction(parts.engine) as session:
        resolved = ticket_by_number(session, number)
        resolved.resolved_at = long_ago
        session.add(resolved)
        session.add(RatingOpening(ticket_id=resolved.id, stars=3, opened_at=long_ago))
        session.add(RatingOpening(ticket_id=resolved.id, stars=4, opened_at=utcnow()))
    service = Service(settings, parts.engine)
    service.housekeeping()
    service.housekeeping()
    assert len(notifications(parts, "rating_reminder")) == 1
    with Session(parts.engine) as session:
        kept = session.exec(select(RatingOpening)).all()
        assert [o.stars for o in kept] == [4]
    assert forget_old_openings(parts.engine) == 0


# --------------------------------------------------------------------------- throttling


def log_in(client, email: str, password: str):
    return post_form(client, "/login", client.get("/login"), email=email, password=password)


def test_failed_logins_are_throttled_across_processes(parts, settings):
    # Three wrong passwords for José from a browser he never signed in with: the next try
    # must wait, even with the right password, and so it must on another gateway process
    # sharing the database (here a second app).
    with TestClient(create_app(settings, parts.engine, parts.workflow)) as first, \
            TestClient(create_app(settings, parts.engine, parts.workflow)) as second:
        for _ in range(3):
            wrong = log_in(first, JOSE, "not-his-password")
            assert wrong.status_code == 401 and "no son correctos" in wrong.text
        blocked = log_in(first, JOSE, PASSWORD)
        assert blocked.status_code == 429 and "Demasiados intentos fallidos" in blocked.text
        assert blocked.headers["retry-after"] == "2"
        elsewhere = log_in(second, JOSE, PASSWORD)
        assert elsewhere.status_code == 429
    with Session(parts.engine) as session:
        keys = {e.key for e in session.exec(select(ThrottleEvent)).all()}
    assert keys == {f"login:email:{JOSE}", "login:ip:testclient"}


def test_a_successful_login_clears_the_email_failures(parts, client):
    for _ in range(2):
        assert log_in(client, JOSE, "wrong").status_code == 401
    assert log_in(client, JOSE, PASSWORD).url.path == "/tickets"
    with Session(parts.engine) as session:
        left = {e.key for e in session.exec(select(ThrottleEvent)).all()}
    assert left == {"login:ip:testclient"}  # the office's address keeps its count


def test_housekeeping_forgets_old_throttle_events(parts, settings):
    with transaction(parts.engine) as session:
        session.add(ThrottleEvent(key="login:ip:old", at=utcnow() - timedelta(days=2)))
        session.add(ThrottleEvent(key="login:ip:new", at=utcnow()))
    Service(settings, parts.engine).housekeeping()
    with Session(parts.engine) as session:
        assert [e.key for e in session.exec(select(ThrottleEvent)).all()] == ["login:ip:new"]
