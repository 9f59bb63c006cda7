"""The customer area against an attacker (issue 10): sessions that end on the server, headers
on every response, passwords judged by an estimator, throttles that slow attackers but let the
owner in, forwarded addresses believed only from trusted proxies.

María is a manager of C0001, José a colleague who is not; Lucía belongs to C0002."""

from __future__ import annotations

import re
import warnings

import pytest
from click.testing import CliRunner
from starlette.exceptions import StarletteDeprecationWarning

from gateway.cli import main
from tests.conftest import PASSWORD
from tests.test_accounts import contact, post_form, set_password_link
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
