"""Settings read from the environment: derived defaults and refusals of bad values."""

from __future__ import annotations

import pytest

from gateway.settings import Settings


def test_mailed_links_follow_the_web_port_unless_a_public_url_is_set(tmp_path):
    # Changing HELPDESK_WEB_PORT alone moves the links in mails with it; a public URL wins.
    base = {"HELPDESK_VAR_DIR": str(tmp_path), "HELPDESK_SECRET_KEY": "k"}
    assert Settings.from_env(base).public_url == "http://127.0.0.1:8000"
    assert Settings.from_env({**base, "HELPDESK_WEB_PORT": "8081"}).public_url \
        == "http://127.0.0.1:8081"
    assert Settings.from_env({**base, "HELPDESK_WEB_HOST": "0.0.0.0",
                              "HELPDESK_WEB_PORT": "9000"}).public_url == "http://127.0.0.1:9000"
    assert Settings.from_env({**base, "HELPDESK_WEB_PORT": "8081",
                              "HELPDESK_PUBLIC_URL": "https://soporte.example.com/"}).public_url \
        == "https://soporte.example.com"


def test_company_name_defaults_to_the_mail_sender_name(tmp_path):
    base = {"HELPDESK_VAR_DIR": str(tmp_path), "HELPDESK_SECRET_KEY": "k"}
    assert Settings.from_env({**base, "HELPDESK_FROM_NAME": "Clave i"}).company_name == "Clave i"
    assert Settings.from_env({**base, "HELPDESK_COMPANY_NAME": "Clave Informática S.L."}
                             ).company_name == "Clave Informática S.L."


@pytest.mark.parametrize("name,value", [("HELPDESK_OUTBOX_RETRY_DAYS", "0"),
                                        ("HELPDESK_INBOUND_RETRY_DAYS", "-1"),
                                        ("HELPDESK_SMTP_STORE_TIMEOUT", "0"),
                                        ("HELPDESK_SMTP_IDLE_TIMEOUT", "0"),
                                        ("HELPDESK_SMTP_MAX_CONNECTIONS", "0"),
                                        ("HELPDESK_SMTP_MAX_CONNECTIONS_PER_ADDRESS", "-2")])
def test_retry_times_and_timeouts_must_be_positive(tmp_path, name, value):
    with pytest.raises(ValueError, match="positive"):
        Settings.from_env({"HELPDESK_VAR_DIR": str(tmp_path), "HELPDESK_SECRET_KEY": "k",
                           name: value})


def test_smtp_edge_defaults_and_lmtp_off_unless_given_a_port(tmp_path):
    # No certificate (no STARTTLS), 100 connections at once, 10 per address, 5 minutes idle,
    # no LMTP; HELPDESK_LMTP_PORT=0 asks for a free port.
    base = {"HELPDESK_VAR_DIR": str(tmp_path), "HELPDESK_SECRET_KEY": "k"}
    settings = Settings.from_env(base)
    assert (settings.smtp_tls_cert, settings.smtp_require_tls) == (None, False)
    assert (settings.smtp_max_connections, settings.smtp_max_connections_per_address,
            settings.smtp_idle_timeout, settings.lmtp_port) == (100, 10, 300.0, None)
    assert Settings.from_env({**base, "HELPDESK_LMTP_PORT": "0"}).lmtp_port == 0


@pytest.mark.parametrize(("name", "value"), [("HELPDESK_SMTP_TLS_KEY", "/etc/key.pem"),
                                           ("HELPDESK_SMTP_REQUIRE_TLS", "true")])
def test_tls_settings_without_a_certificate_are_refused(tmp_path, name, value):
    # A key alone, or TLS required with nothing to offer it with, is a mistake said at start.
    with pytest.raises(ValueError, match=f"{name} is set without HELPDESK_SMTP_TLS_CERT"):
        Settings.from_env({"HELPDESK_VAR_DIR": str(tmp_path), "HELPDESK_SECRET_KEY": "k",
                           name: value})
    assert Settings.from_env({"HELPDESK_VAR_DIR": str(tmp_path), "HELPDESK_SECRET_KEY": "k",
                              "HELPDESK_SMTP_REQUIRE_TLS": "false"}).smtp_require_tls is False
