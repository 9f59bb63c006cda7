"""Event + prepared context → ``EmailMessage``, from ``templates/email/<event>.subject|txt|html``.

Templates own the words; this module owns the headers. No header value is taken from user input
unchecked: display names and subjects are collapsed to one line and encoded by the stdlib's
header registry, so a CR/LF in a name or a subject can never start a new header.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment

from gateway.i18n import ROOT, environment, pick_language
from storage.models import utcnow

TEMPLATE_DIR = ROOT / "templates" / "email"

# CRLF line ends for the wire. Headers fold only past 998 characters (RFC 5322 §2.1.1): the
# stdlib's folding at 78 breaks a subject that starts with "[#1001]" right after "Subject:".
WIRE_POLICY = policy.SMTP.clone(max_line_length=998)


@dataclass(frozen=True)
class RenderedMail:
    subject: str
    text: str
    html: str


@dataclass(frozen=True)
class Envelope:
    """Who and what a mail is about; every field is checked before it becomes a header."""

    from_name: str
    from_address: str
    to_name: str
    to_address: str
    reply_to: str
    message_id: str
    in_reply_to: str | None
    references: tuple[str, ...]
    language: str


class Renderer:
    def __init__(self, template_dir: Path = TEMPLATE_DIR) -> None:
        self._template_dir = template_dir
        self._envs: dict[str, Environment] = {}

    def _env(self, lang: str) -> Environment:
        if lang not in self._envs:
            self._envs[lang] = environment(self._template_dir, lang)
        return self._envs[lang]

    def render(self, event: str, lang: str, context: dict[str, Any]) -> RenderedMail:
        lang = pick_language(lang)
        env = self._env(lang)
        subject = env.get_template(f"{event}.subject").render(context)
        return RenderedMail(
            subject=one_line(subject),
            text=env.get_template(f"{event}.txt").render(context),
            html=env.get_template(f"{event}.html").render(context),
        )


def build_message(rendered: RenderedMail, envelope: Envelope) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = Address(one_line(envelope.from_name), addr_spec=envelope.from_address)
    msg["To"] = Address(one_line(envelope.to_name), addr_spec=envelope.to_address)
    msg["Reply-To"] = Address(one_line(envelope.from_name), addr_spec=envelope.reply_to)
    msg["Subject"] = rendered.subject
    msg["Date"] = format_datetime(utcnow())
    msg["Message-ID"] = envelope.message_id
    if envelope.in_reply_to:
        msg["In-Reply-To"] = envelope.in_reply_to
    if envelope.references:
        msg["References"] = " ".join(envelope.references)
    # RFC 3834 §5: mark the mail as automatic so well-behaved responders do not answer it;
    # the Microsoft header keeps Exchange and Outlook out-of-office replies away too.
    msg["Auto-Submitted"] = "auto-generated"
    msg["X-Auto-Response-Suppress"] = "All"
    msg.set_content(rendered.text, cte="quoted-printable")
    msg.add_alternative(rendered.html, subtype="html", cte="quoted-printable")
    msg["Content-Language"] = envelope.language  # after set_content, which clears Content-*
    return msg


def to_bytes(message: EmailMessage) -> bytes:
    return message.as_bytes(policy=WIRE_POLICY)


def new_message_id(domain: str, kind: str) -> str:
    """A unique Message-ID (RFC 5322 §3.6.4) that names nothing about the host it was made on."""
    return f"<{kind}.{secrets.token_hex(10)}@{domain}>"


def one_line(value: str) -> str:
    """Header-safe text: no line breaks, no runs of blanks, at most 250 characters."""
    return " ".join(value.split())[:250]
