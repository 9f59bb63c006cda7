"""The customer area against an attacker (issue 10): sessions that end on the server, headers
on every response, passwords judged by an estimator, throttles that slow attackers but let the
owner in, forwarded addresses believed only from trusted proxies.

María is a manager of C0001, José a colleague who is not; Lucía belongs to C0002."""

from __future__ import annotations

import re
import warnings

import pytest
from click.testing import CliRunner
from sqlmodel import Session, select
from starlette.datastructures import Secret
from starlette.exceptions import StarletteDeprecationWarning

from gateway.cli import main
from storage.models import Attachment
from tests.conftest import PASSWORD
from tests.test_accounts import contact, post_form, set_password_link
from tests.test_customer_area import PDF, open_form
from web.app import create_app

with warnings.catch_warnings():
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

MARIA = "maria.garcia@ferreteria-lopez.es"
JOSE = "jose.fernandez@ferreteria-lopez.es"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture
def app(parts, settings):
    return create_app(settings, parts.engine, parts.workflow)


def browser(app) -> TestClient:
    return TestClient(app, follow_redirects=False)


def log_in(client, email: str = MARIA, password: str = PASSWORD):
    page = client.get("/login")
    return client.post("/login", data={"email": email, "password": password,
                                       "csrf_token": CSRF.search(page.text)[1]})


def copied(app, client) -> TestClient:
    """Another browser holding a copy of this one's cookies (as an attacker who took them)."""
    other = browser(app)
    other.cookies.update(client.cookies)
    return other


def signed_in(client) -> bool:
    answer = client.get("/tickets")
    return answer.status_code == 200


# --------------------------------------------------------------------------- sessions end


def test_a_copied_cookie_is_useless_after_logout(app):
    with browser(app) as client:
        assert log_in(client).status_code == 303
        with copied(app, client) as thief:
            assert signed_in(thief)
            page = client.get("/tickets")
            client.post("/logout", data={"csrf_token": CSRF.search(page.text)[1]})
            assert not signed_in(client)
            answer = thief.get("/tickets")
            assert answer.status_code == 303 and answer.headers["location"].startswith("/login")


def test_setting_a_password_ends_every_session_of_the_contact(parts, app):
    with browser(app) as client, browser(app) as mailbox:
        log_in(client)
        with copied(app, client) as thief:
            link = set_password_link(parts, mailbox)
            page = mailbox.get(link)
            done = post_form(mailbox, link, page, password="Tejado-verde-1987-nube",
                             password_repeat="Tejado-verde-1987-nube")
            assert done.status_code == 200
            assert not signed_in(client) and not signed_in(thief)
        assert log_in(client, password="Tejado-verde-1987-nube").status_code == 303


def test_deactivation_ends_sessions_and_reactivation_does_not_revive_them(parts, app):
    with browser(app) as jose, browser(app) as maria:
        log_in(jose, JOSE)
        assert signed_in(jose)
        log_in(maria)
        person = contact(parts, JOSE)
        page = maria.get("/contacts")
        token = CSRF.search(page.text)[1]
        maria.post(f"/contacts/{person.id}/active", data={"csrf_token": token, "active": "0"})
        assert not contact(parts, JOSE).active
        maria.post(f"/contacts/{person.id}/active", data={"csrf_token": token, "active": "1"})
        assert contact(parts, JOSE).active
        assert not signed_in(jose)  # the old session stays ended: Jose signs in again


def test_sign_out_everywhere_from_the_command_line(parts, app, settings, monkeypatch):
    with browser(app) as phone, browser(app) as laptop:
        log_in(phone)
        log_in(laptop)
        for name, value in settings_env(settings).items():
            monkeypatch.setenv(name, value)
        result = CliRunner().invoke(main, ["contact", "signout", MARIA])
        assert result.exit_code == 0, result.output
        assert "signed out of 2 session(s)" in result.output
        assert not signed_in(phone) and not signed_in(laptop)


def settings_env(settings) -> dict[str, str]:
    return {"HELPDESK_DATABASE_URL": settings.database_url,
            "HELPDESK_VAR_DIR": str(settings.var_dir)}


# --------------------------------------------------------------------------- headers


def assert_secure_headers(response, *, https: bool = False) -> None:
    headers = response.headers
    policy = headers["content-security-policy"]
    assert "frame-ancestors 'none'" in policy or "sandbox" in policy, policy
    assert "'unsafe-inline'" not in policy and "'unsafe-eval'" not in policy
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "no-referrer"
    assert ("strict-transport-security" in headers) is https
    assert "server" not in headers or "uvicorn" not in headers["server"]


def test_every_kind_of_response_carries_the_security_headers(parts, app):
    with browser(app) as client:
        log_in(client)
        open_form(client, parts, files=[("factura.pdf", PDF, "application/pdf")])
        with Session(parts.engine) as session:
            item = session.exec(select(Attachment)).one()
        answers = {
            "page": client.get("/tickets"),
            "error": client.get("/tickets/424242"),
            "static": client.get("/static/style.css"),
            "redirect": client.get("/"),
            "download": client.get(f"/tickets/1001/files/{item.id}"),
            "form error": client.post("/logout", data={}),
        }
        assert {name: a.status_code for name, a in answers.items()} == {
            "page": 200, "error": 404, "static": 200, "redirect": 303, "download": 200,
            "form error": 303}
        for answer in answers.values():
            assert_secure_headers(answer)
        # A download keeps its own, stricter policy.
        assert answers["download"].headers["content-security-policy"] == \
            "default-src 'none'; sandbox"


def test_https_public_url_adds_hsts_and_secure_cookies(parts, settings):
    import dataclasses

    secure = dataclasses.replace(settings, public_url="https://soporte.example.com")
    with TestClient(create_app(secure, parts.engine, parts.workflow), follow_redirects=False,
                    base_url="https://testserver") as client:
        page = client.get("/login")
        assert_secure_headers(page, https=True)
        answer = client.post("/login", data={"email": MARIA, "password": PASSWORD,
                                             "remember": "on",
                                             "csrf_token": CSRF.search(page.text)[1]})
        cookies = [v for k, v in answer.headers.multi_items() if k == "set-cookie"]
        remembered = [c for c in cookies if c.startswith("remembered_email=")]
        assert remembered and all("secure" in c.lower() for c in cookies)


# --------------------------------------------------------------------------- proxies


def session_addresses(engine) -> list[str]:
    from storage.models import WebSession

    with Session(engine) as session:
        return [s.address for s in session.exec(select(WebSession)
                                                .order_by(WebSession.created_at))]


@pytest.mark.parametrize("trusted", ["", "127.0.0.1"])
def test_forwarded_addresses_are_believed_only_from_trusted_proxies(db_url, directory, tmp_path,
                                                                    trusted):
    # A login through the real server with X-Forwarded-For: 203.0.113.9. The address the
    # session records is the connection's unless 127.0.0.1 is a configured proxy; the
    # server never says it is uvicorn.
    import httpx

    from tests.gateway_process import GatewayProcess

    gateway = GatewayProcess(db_url, tmp_path / "var", HELPDESK_TRUSTED_PROXIES=trusted).start()
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{gateway.web_port}", timeout=10,
                          headers={"X-Forwarded-For": "203.0.113.9"}) as web:
            page = web.get("/login")
            assert "server" not in page.headers
            assert_secure_headers(page)
            answer = web.post("/login", data={"email": MARIA, "password": PASSWORD,
                                              "csrf_token": CSRF.search(page.text)[1]})
            assert answer.status_code == 303
    finally:
        gateway.stop()
    assert session_addresses(directory) == ["203.0.113.9" if trusted else "127.0.0.1"]


# --------------------------------------------------------------------------- passwords


@pytest.mark.parametrize("weak", ["1234567890", "maria.garcia@ferreteria-lopez.es1",
                                  "Maria.Garcia2026", "qwertyuiopasdf"])
def test_guessable_passwords_are_refused_with_the_field_named(parts, app, weak):
    with browser(app) as mailbox:
        link = set_password_link(parts, mailbox)
        page = mailbox.get(link)
        refused = post_form(mailbox, link, page, password=weak, password_repeat=weak)
        assert refused.status_code == 400
        assert "Contraseña: es demasiado fácil de adivinar" in refused.text
        assert re.search(r'<input id="password"[^>]*aria-invalid="true"', refused.text)
        done = post_form(mailbox, link, page, password="Tejado-verde-1987-nube",
                         password_repeat="Tejado-verde-1987-nube")
        assert done.status_code == 200


# --------------------------------------------------------------------------- throttles

LUCIA = "lucia.martin@clinicadental-sur.com"


def test_a_guesser_is_slowed_ever_more_and_the_owner_still_gets_in(parts, app):
    # María signed in from her browser before. A guesser (another browser, the same address
    # here) gets 3 tries, then must wait 2 s, 4 s, 8 s...: each wait is counted from the last
    # failure. Meanwhile María, with the right password from her browser, gets in at once.
    with browser(app) as maria, browser(app) as guesser:
        assert log_in(maria).status_code == 303
        log_out(maria)
        waits = []
        for _ in range(8):
            answer = log_in(guesser, password="¿quizás-esta?")
            if answer.status_code == 429:
                waits.append(int(answer.headers["retry-after"]))
                back_in_time(parts, f"login:email:{MARIA}", seconds=waits[-1])
            else:
                assert answer.status_code == 401
        assert waits == [2, 4, 8]
        assert log_in(guesser, password="¿o-esta?").status_code == 401  # after his wait
        refused = log_in(guesser)  # now even the right password must wait 16 s
        assert refused.status_code == 429 and refused.headers["retry-after"] == "16"
        assert log_in(maria).status_code == 303


def log_out(client) -> None:
    page = client.get("/tickets")
    client.post("/logout", data={"csrf_token": CSRF.search(page.text)[1]})


def back_in_time(parts, key: str, seconds: float) -> None:
    """As if ``seconds`` had passed since the failures of ``key``."""
    from datetime import timedelta

    from storage.db import transaction
    from storage.models import ThrottleEvent

    with transaction(parts.engine) as session:
        for event in session.exec(select(ThrottleEvent).where(ThrottleEvent.key == key)):
            event.at = event.at - timedelta(seconds=seconds)
            session.add(event)


def test_a_colleagues_typos_keep_nobody_else_out(parts, app):
    # José mistypes until he must wait. María (her own browser) and Lucía of another
    # organization, behind the same office address, sign in at once.
    with browser(app) as jose, browser(app) as maria, browser(app) as lucia:
        log_in(maria)
        log_out(maria)
        for _ in range(3):
            assert log_in(jose, JOSE, "mal-escrita").status_code == 401
        assert log_in(jose, JOSE).status_code == 429
        assert log_in(maria).status_code == 303
        assert log_in(lucia, LUCIA).status_code == 303


def test_a_manager_gets_at_most_three_set_password_mails_an_hour(parts):
    from gateway.accounts import request_password_links
    from gateway.links import PasswordLinks
    from storage.db import transaction
    from storage.models import Notification

    links = PasswordLinks(str(parts.settings.secret_key), parts.settings.public_url, 24)
    for _ in range(10):
        with transaction(parts.engine) as session:
            request_password_links(session, parts.workflow, links, code="C0001",
                                   tax_id="B12345678")
    with Session(parts.engine) as session:
        mails = session.exec(select(Notification).where(
            Notification.event == "set_password")).all()
    assert [m.recipient for m in mails] == [MARIA] * 3


# --------------------------------------------------------------------------- operations


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_healthz_turns_503_while_the_database_is_away_and_back(db_url, directory, settings):
    # The gateway's own engine reaches PostgreSQL through a proxy the test cuts and restores.
    import dataclasses

    from sqlalchemy.engine import make_url

    from storage.db import make_engine
    from tests.tcp_proxy import TcpProxy

    url = make_url(db_url)
    proxy = TcpProxy(url.host, url.port).start()
    proxied = url.set(port=proxy.port).render_as_string(hide_password=False)
    engine = make_engine(proxied)
    try:
        app = create_app(dataclasses.replace(settings, database_url=proxied), engine)
        with browser(app) as monitor:
            healthy = monitor.get("/healthz")
            assert healthy.status_code == 200, healthy.text
            assert healthy.json()["checks"]["database"] == "ok"
            assert healthy.json()["checks"]["storage"] == "ok"
            proxy.cut()
            away = monitor.get("/healthz")
            assert away.status_code == 503
            assert away.json()["reasons"][0].startswith("database unreachable")
            proxy.restore()
            assert monitor.get("/healthz").status_code == 200
    finally:
        engine.dispose()
        proxy.close()


def test_healthz_names_a_queue_that_waits_too_long(parts, app):
    from datetime import timedelta

    from storage.db import transaction
    from storage.models import Notification, utcnow

    with browser(app) as monitor:
        assert monitor.get("/healthz").status_code == 200
        with transaction(parts.engine) as session:
            session.add(Notification(event="received", recipient=MARIA, language="es",
                                     message_id="<old@example.com>",
                                     created_at=utcnow() - timedelta(hours=2)))
        stale = monitor.get("/healthz")
        assert stale.status_code == 503
        assert stale.json()["reasons"] == ["outbox queue: a row has waited 120 minutes "
                                           "(limit 60)"]


def test_metrics_are_for_the_machine_itself_or_the_token_holder(parts, settings):
    import dataclasses

    secured = dataclasses.replace(settings, metrics_token=Secret("scrape-me"))
    with browser(create_app(secured, parts.engine, parts.workflow)) as outsider:
        # The test client is not on loopback: like a visitor from elsewhere.
        assert outsider.get("/metrics").status_code == 404
        assert outsider.get("/metrics", headers={"Authorization": "Bearer nope"}).status_code \
            == 404
        scraped = outsider.get("/metrics", headers={"Authorization": "Bearer scrape-me"})
        assert scraped.status_code == 200
        assert "helpdesk_inbound_oldest_waiting_seconds" in scraped.text


def test_json_logs_carry_the_ticket_and_message_id_as_fields(capsys):
    import json
    import logging

    from gateway import logs

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    logs.configure(logging.INFO, "json")
    try:
        logging.getLogger("gateway.test").info("inbound 7 created ticket=1001",
                                               extra={"ticket": 1001, "message_id": "<a@b>"})
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in handlers:  # pytest's own, as they were
            root.addHandler(handler)
        root.setLevel(level)
    (line,) = [entry for entry in capsys.readouterr().err.splitlines() if entry.strip()]
    entry = json.loads(line)
    assert (entry["message"], entry["ticket"], entry["message_id"], entry["level"]) == \
        ("inbound 7 created ticket=1001", 1001, "<a@b>", "INFO")
