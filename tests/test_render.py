"""Rendering: the "received" mail in Spanish and English, and headers safe from user input."""

from __future__ import annotations

import subprocess

import pytest

from gateway import preview
from gateway.render import Envelope, Renderer, build_message, to_bytes
from tests.conftest import parse_mail

CONTEXT = {
    "brand": "Soporte",
    "contact_name": "María García",
    "ticket_number": 1042,
    "ticket_subject": "No arranca el TPV",
    "ticket_status": "new",
    "ticket_url": "https://soporte.example.com/tickets/1042",
    "portal_url": "https://soporte.example.com",
    "refused": [{"filename": "foto.heic", "reason": "type_not_allowed"}],
}


def envelope(**changes) -> Envelope:
    values = dict(from_name="Soporte", from_address="soporte@example.com",
                  to_name="María García", to_address="maria@ferreteria-lopez.es",
                  reply_to="soporte+1042.abc@example.com", message_id="<t1042.x@example.com>",
                  in_reply_to="<orig@ferreteria-lopez.es>",
                  references=("<first@ferreteria-lopez.es>", "<orig@ferreteria-lopez.es>"),
                  language="es")
    values.update(changes)
    return Envelope(**values)


def test_received_in_spanish_names_number_status_and_refused_files():
    # Spanish is the default: number, status label and the refused file with its reason.
    mail = Renderer().render("received", "es", CONTEXT)
    assert mail.subject == "[#1042] Hemos recibido tu solicitud: No arranca el TPV"
    assert "Hola, María García:" in mail.text
    assert "Estado: Esperando por ayuda" in mail.text
    assert "- foto.heic: este tipo de archivo no se admite" in mail.text
    assert "Ver el ticket 1042" in mail.html
    assert 'lang="es"' in mail.html


def test_received_in_english_and_unknown_language_falls_back_to_spanish():
    # English for English contacts; any other language gets Spanish.
    assert Renderer().render("received", "en", CONTEXT).subject.startswith(
        "[#1042] We have received your request")
    assert Renderer().render("received", "fr", CONTEXT).subject.startswith(
        "[#1042] Hemos recibido tu solicitud")


def test_html_part_escapes_user_text():
    # A subject with markup is shown as text in the HTML part, never as markup.
    context = dict(CONTEXT, ticket_subject='<script>alert("x")</script>')
    html = Renderer().render("received", "es", context).html
    assert "<script>" not in html
    assert "&lt;script&gt;" in html


def test_headers_thread_and_mark_the_mail_automatic():
    # Message-ID, In-Reply-To, References, Reply-To and Auto-Submitted as the design asks.
    rendered = Renderer().render("received", "es", CONTEXT)
    mail = parse_mail(to_bytes(build_message(rendered, envelope())))
    assert mail["Message-ID"] == "<t1042.x@example.com>"
    assert mail["In-Reply-To"] == "<orig@ferreteria-lopez.es>"
    assert mail["References"] == "<first@ferreteria-lopez.es> <orig@ferreteria-lopez.es>"
    assert mail["Reply-To"].addresses[0].addr_spec == "soporte+1042.abc@example.com"
    assert mail["Auto-Submitted"] == "auto-generated"
    assert mail["Subject"] == "[#1042] Hemos recibido tu solicitud: No arranca el TPV"


def test_line_breaks_in_names_and_subjects_cannot_inject_headers():
    # A CR/LF in a contact name or a subject stays inside its header: no Bcc appears.
    context = dict(CONTEXT, ticket_subject="Hola\r\nBcc: victim@evil.example")
    rendered = Renderer().render("received", "es", context)
    raw = to_bytes(build_message(rendered, envelope(to_name="Eve\r\nBcc: x@evil.example")))
    mail = parse_mail(raw)
    assert mail["Bcc"] is None
    assert "\n" not in mail["Subject"]
    headers = raw.split(b"\r\n\r\n", 1)[0]
    assert b"\r\nBcc:" not in headers


@pytest.mark.parametrize("lang", ["es", "en"])
@pytest.mark.parametrize("event", preview.events())
def test_every_template_renders_in_both_languages(event, lang):
    # Every event's mail has the ticket tag, a text part that reads alone, an HTML part in the
    # contact's language, and (in Spanish) words translated from the English source.
    mail = parse_mail(to_bytes(preview.sample(event, lang)))
    text = mail.get_body(("plain",)).get_content()
    html = mail.get_body(("html",)).get_content()
    if event not in preview.WITHOUT_TICKET:
        assert mail["Subject"].startswith("[#1042] ")
        assert "1042" in text
    assert "{{" not in text and "{%" not in text
    assert f'lang="{lang}"' in html and "{{" not in html
    assert mail["Content-Language"] == lang
    if lang == "es":
        english = parse_mail(to_bytes(preview.sample(event, "en")))
        assert mail["Subject"] != english["Subject"]
        assert text != english.get_body(("plain",)).get_content()


def test_preview_command_writes_a_sample_of_an_event(tmp_path):
    # `helpdesk mail preview awaiting_customer --lang es` writes an .eml a mail client opens.
    from tests.test_cli import HELPDESK

    result = subprocess.run([HELPDESK, "mail", "preview", "awaiting_customer", "--lang", "es",
                             "--out", str(tmp_path)], capture_output=True, text=True,
                            check=False, env={"HELPDESK_VAR_DIR": str(tmp_path),
                                              "HELPDESK_SECRET_KEY": "k", "PATH": "/usr/bin"})
    assert result.returncode == 0, result.stderr
    mail = parse_mail((tmp_path / "awaiting_customer-es.eml").read_bytes())
    assert mail["Subject"].startswith("[#1042] Necesitamos más información")
    assert "Basta con responder a este correo" in mail.get_body(("plain",)).get_content()
