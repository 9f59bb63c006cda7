"""Rendering: the mails in Spanish and English, their wire form, headers safe from user input."""

from __future__ import annotations

import random
import re
import subprocess
from datetime import UTC, datetime

import pytest

from gateway.outbound import preview
from gateway.outbound.render import (
    Envelope,
    RenderedMail,
    Renderer,
    build_message,
    one_line,
    to_bytes,
    to_wire,
)
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
    mail = parse_mail(to_wire(rendered, envelope()))
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
    raw = to_wire(rendered, envelope(to_name="Eve\r\nBcc: x@evil.example"))
    mail = parse_mail(raw)
    assert mail["Bcc"] is None
    assert "\n" not in mail["Subject"]
    headers = raw.split(b"\r\n\r\n", 1)[0]
    assert b"\r\nBcc:" not in headers


# A mail with everything that is hard to write: accents, emoji, a subject past 78 characters, a
# display name with CR/LF and quotes, 30 references, a 1,500-character body line, trailing blanks,
# "=", "From " and "." at the start of lines, and CR/LF line ends in the text.
HARD_TEXT = ("Hola, María José 😀:\r\n\r\nEl año pasado la factura nº 7 = 120 € \r\n"
             "From here on, nothing changes.\r\n.\r\n" + "ñandú " * 250 + "\r\n-- \r\nSoporte")
HARD_HTML = ('<p lang="es">Hola, <b>María José</b> 😀</p>\n<p>' + "camión " * 200 + "</p>\n")
HARD_SUBJECT = ("[#1042] Hemos recibido tu solicitud: ¿Por qué no arranca el TPV del almacén 😀 "
                "después de la actualización de noviembre? =?utf-8?q?no?= _x_")
HARD_REFERENCES = tuple(f"<thread.{n}.a1b2c3d4e5@ferreteria-lopez.es>" for n in range(30))
HARD_DATE = datetime(2026, 11, 24, 9, 30, tzinfo=UTC)


def hard_mail() -> tuple[bytes, Envelope]:
    rendered = RenderedMail(subject=HARD_SUBJECT, text=HARD_TEXT, html=HARD_HTML)
    hard = envelope(to_name='José "Pepe" Núñez,\r\nBcc: victim@evil.example 👀',
                    from_name="Soporte (Ferretería)", references=HARD_REFERENCES)
    return to_wire(rendered, hard, date=HARD_DATE), hard


def test_mail_parses_back_to_the_same_headers_and_bodies():
    # The stdlib reads back every header value and both bodies exactly as they went in (names
    # collapsed to one line, text with LF line ends and a final one).
    raw, hard = hard_mail()
    mail = parse_mail(raw)
    assert mail.defects == [] and all(part.defects == [] for part in mail.walk())
    assert mail["Subject"] == HARD_SUBJECT
    (sender,) = mail["From"].addresses
    assert (sender.display_name, sender.addr_spec) == ("Soporte (Ferretería)",
                                                       "soporte@example.com")
    (to,) = mail["To"].addresses
    assert to.display_name == 'José "Pepe" Núñez, Bcc: victim@evil.example 👀'
    assert to.addr_spec == "maria@ferreteria-lopez.es"
    assert mail["Reply-To"].addresses[0].addr_spec == "soporte+1042.abc@example.com"
    assert mail["Date"].datetime == HARD_DATE
    assert mail["Message-ID"] == "<t1042.x@example.com>"
    assert mail["In-Reply-To"] == "<orig@ferreteria-lopez.es>"
    assert mail["References"] == " ".join(HARD_REFERENCES)
    assert (mail["Auto-Submitted"], mail["X-Auto-Response-Suppress"]) == ("auto-generated", "All")
    assert mail["Content-Language"] == "es"
    assert mail.get_content_type() == "multipart/alternative"
    assert [part.get_content_type() for part in mail.iter_parts()] == ["text/plain", "text/html"]
    for part in mail.iter_parts():
        assert part.get_content_charset() == "utf-8"
        assert part["Content-Transfer-Encoding"] == "quoted-printable"
    text = mail.get_body(("plain",)).get_content().replace("\r\n", "\n")
    html = mail.get_body(("html",)).get_content().replace("\r\n", "\n")
    assert text == HARD_TEXT.replace("\r\n", "\n") + "\n"
    assert html == HARD_HTML


def test_wire_form_is_crlf_ascii_and_within_line_limits():
    # CRLF only, 7-bit, lines of at most 998 characters (RFC 5322 §2.1.1), the subject's
    # encoded-words of at most 75 (RFC 2047 §2), and the ticket tag whole on the Subject line.
    raw, _hard = hard_mail()
    assert raw.isascii()
    assert b"\n" not in raw.replace(b"\r\n", b"")
    assert b"\r" not in raw.replace(b"\r\n", b"")
    lines = raw.split(b"\r\n")
    assert max(len(line) for line in lines) <= 998
    head = raw.split(b"\r\n\r\n", 1)[0]
    subject = re.search(rb"\r\nSubject: (.*?)\r\n(?! )", head, re.DOTALL).group(1)
    assert subject.startswith(b"[#1042] Hemos recibido tu solicitud: ")
    words = re.findall(rb"=\?[^?]+\?[qQbB]\?[^?]*\?=", subject)
    assert len(words) > 1 and all(len(word) <= 75 for word in words)
    names = [line.split(b":", 1)[0] for line in head.split(b"\r\n") if line[:1] not in b" \t"]
    assert names == [b"From", b"To", b"Reply-To", b"Subject", b"Date", b"Message-ID",
                     b"In-Reply-To", b"References", b"Auto-Submitted", b"X-Auto-Response-Suppress",
                     b"MIME-Version", b"Content-Type", b"Content-Language"]


@pytest.mark.parametrize("name", ["Soporte", "O'Brien", "Pérez, Ana", 'Ana "la jefa" Ruiz',
                                  "back\\slash", "=?utf-8?q?trap?=", "日本語のお客様", "a.b@c"])
def test_display_names_read_back_as_written(name):
    # Atoms, quoted strings and encoded-words each read back as the name that went in.
    rendered = RenderedMail(subject="Hola", text="x", html="<p>x</p>")
    mail = parse_mail(to_wire(rendered, envelope(to_name=name)))
    assert mail["To"].addresses[0].display_name == name
    assert mail["To"].addresses[0].addr_spec == "maria@ferreteria-lopez.es"


def test_random_names_and_subjects_read_back_as_written():
    # Seeded random text from a pool of the awkward: accents, emoji, specials, quotes, "=?",
    # blanks, tabs, CR/LF and control characters; the stdlib reads back the one-line value.
    pool = "aZ09 ñÁüç€😀👀日本\t\r\n\x01\x7f\"\\(),.:;<>@[]=?_-'#!"
    rng = random.Random(20261124)
    for _ in range(300):
        name = "".join(rng.choice(pool) for _ in range(rng.randint(0, 60)))
        subject = "[#1042] " + "".join(rng.choice(pool) for _ in range(rng.randint(0, 200)))
        rendered = RenderedMail(subject=one_line(subject), text="x", html="<p>x</p>")
        raw = to_wire(rendered, envelope(to_name=name, from_name=name[::-1]))
        mail = parse_mail(raw)
        assert mail["Subject"] == one_line(subject)
        assert mail["To"].addresses[0].display_name == one_line(name)
        assert mail["From"].addresses[0].display_name == one_line(name[::-1])
        assert mail["Bcc"] is None and len(mail.keys()) == 13
        assert max(len(line) for line in raw.split(b"\r\n")) <= 998


@pytest.mark.parametrize("address", ["soporte+1042.Ab_9-x@example.com", '"ana maria"@example.com',
                                     "o'brien@[192.0.2.1]", "a.b.c@sub.example.com"])
def test_addresses_read_back_as_written(address):
    # The usual dot-atom form and the rarer quoted local part and domain literal all go out whole.
    rendered = RenderedMail(subject="Hola", text="x", html="<p>x</p>")
    mail = parse_mail(to_wire(rendered, envelope(to_address=address, reply_to=address)))
    assert mail["To"].addresses[0].addr_spec == address
    assert mail["Reply-To"].addresses[0].addr_spec == address


@pytest.mark.parametrize("address", ["maria@ferreteria-lopez.es\r\nBcc: x@evil.example",
                                     "maria", "maría@ferreteria-lopez.es", "<a@b> c@d",
                                     "a..b@example.com", "a@b@example.com", "a@example.com>"])
def test_an_address_that_cannot_be_written_safely_is_refused(address):
    # No mail is written to an address the stdlib's parser does not take whole as one ASCII
    # addr-spec: the sender keeps the notification with the error instead.
    rendered = RenderedMail(subject="Hola", text="x", html="<p>x</p>")
    with pytest.raises(ValueError):
        to_wire(rendered, envelope(to_address=address))


def test_unusable_thread_ids_are_left_out_and_a_bad_own_id_is_refused():
    # A reference with a line break or non-ASCII text from some other mail is dropped; our own
    # Message-ID must be one clean token.
    rendered = RenderedMail(subject="Hola", text="x", html="<p>x</p>")
    mail = parse_mail(to_wire(rendered, envelope(
        in_reply_to="<a@b>\r\nBcc: x@evil.example",
        references=("<ok@ferreteria-lopez.es>", "<señal@x>", "<x\n@y>"))))
    assert mail["In-Reply-To"] is None
    assert mail["References"] == "<ok@ferreteria-lopez.es>"
    assert mail["Bcc"] is None
    with pytest.raises(ValueError):
        to_wire(rendered, envelope(message_id="<t1042@example.com>\r\nBcc: x@evil.example"))


def test_preview_message_flattens_back_to_the_wire_mail():
    # build_message (previews, `helpdesk mail preview`) is the wire mail parsed back: flattening
    # it gives the same bytes the sender sends.
    rendered = Renderer().render("received", "es", CONTEXT)
    message = build_message(rendered, envelope(to_name="José Núñez 😀"))
    wire = to_wire(rendered, envelope(to_name="José Núñez 😀"), date=message["Date"].datetime)
    boundary = parse_mail(wire).get_boundary()
    assert to_bytes(message) == wire.replace(boundary.encode(), message.get_boundary().encode())


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


@pytest.mark.parametrize("event", ["resolved", "rating_reminder"])
def test_preview_of_a_rating_mail_shows_its_five_star_links(event):
    # `helpdesk mail preview resolved` shows what the customer gets: the five star links.
    body = parse_mail(to_bytes(preview.sample(event, "es"))).get_body(("html",)).get_content()
    assert all(f"/rate/sample-{n}" in body for n in range(1, 6))


def test_html_mails_are_fluid_on_a_phone():
    # The layout is at most 600 px wide and narrower on a phone: no fixed width outside the
    # table only Outlook on Windows reads (it ignores max-width).
    html = parse_mail(to_bytes(preview.sample("received", "es"))).get_body(("html",)).get_content()
    outside_mso = re.sub(r"<!--\[if mso\]>.*?<!\[endif\]-->", "", html, flags=re.S)
    assert "max-width:600px" in outside_mso
    assert 'width="600"' not in outside_mso
    assert not re.search(r"(?<!max-)width:600px", outside_mso)


def test_fixed_trans_blocks_render_as_gettext_would(tmp_path):
    # gateway.i18n.FixedTranslations translates a {% trans %} block with no variable when the
    # template is compiled. Its output is that of Jinja2's own i18n extension, which
    # translates at every render ("%" and "%%" as there, the translation not escaped), in
    # each language; blocks with variables or plurals are still translated per render.
    from jinja2 import Environment

    from gateway.i18n import environment, translations

    source = ("{% trans %}Sign out{% endtrans %}|{% trans %}50% off, 100%% sure{% endtrans %}|"
              "{% trans %}a <b>{% endtrans %}|{% trans count=n %}{{ count }} open ticket"
              "{% pluralize %}{{ count }} open tickets{% endtrans %}|{{ _('Sign out') }}")
    (tmp_path / "page.html").write_text(source)
    for lang in ("es", "en"):
        standard = Environment(extensions=["jinja2.ext.i18n"], autoescape=True)
        standard.policies["ext.i18n.trimmed"] = True
        standard.install_gettext_translations(translations(lang), newstyle=True)
        ours = environment(tmp_path, lang).get_template("page.html")
        for n in (1, 2):
            assert ours.render(n=n) == standard.from_string(source).render(n=n)
    page = environment(tmp_path, "es").get_template("page.html").render(n=2)
    assert page.startswith("Cerrar sesión|") and "|2 tickets abiertos|" in page
    compiled = environment(tmp_path, "es").compile(source, raw=True)
    assert "Cerrar sesión" in compiled  # fixed in the code, not looked up per render
