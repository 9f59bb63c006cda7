"""Event + prepared context → the mail's bytes, from ``templates/email/<event>.subject|txt|html``.

Templates own the words; this module owns the headers and the MIME structure. ``to_wire`` writes
the mail straight to bytes for the one shape we send (multipart/alternative, text and HTML,
UTF-8, quoted-printable), with the stdlib's encoders for each piece (``binascii.b2a_qp`` for the
bodies, ``Charset.header_encode`` / ``header_encode_lines`` for RFC 2047 words, ``formataddr``
for plain names, ``format_datetime``): some 0.1 ms a mail, where building an ``EmailMessage``
and flattening it took 1.5 ms, most of the sender's time. The tests parse mails back with the
stdlib (``policy.default``) and compare every header and both bodies with what went in.

No header value is taken from user input unchecked: display names and subjects are collapsed to
one line (``one_line``) and, unless plain printable ASCII, written as RFC 2047 encoded-words;
addresses must be one ASCII addr-spec (the common dot-atom form by pattern, any other through the
stdlib's parser); message IDs must be one printable ASCII token. A CR/LF in a name or a subject
can never start a new header.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from email import message_from_bytes, policy
from email.charset import Charset
from email.errors import HeaderParseError
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import encode_rfc2231, format_datetime, formataddr
from pathlib import Path
from typing import Any

from jinja2 import Environment

from gateway.i18n import ROOT, environment, pick_language
from storage.models import utcnow

TEMPLATE_DIR = ROOT / "templates" / "email"

# For re-flattening a parsed mail (previews): CRLF line ends, and headers fold only past 998
# characters (RFC 5322 §2.1.1), so a subject starting with "[#1001]" is never broken after
# "Subject:".
WIRE_POLICY = policy.SMTP.clone(max_line_length=998)

UTF8 = Charset("utf-8")  # RFC 2047 "B" or "Q", whichever is shorter
CRLF = "\r\n"
FOLD = "\r\n "  # RFC 5322 §2.2.3: a header continues on a line that starts with a blank
FOLD_AT = 78  # RFC 5322 §2.1.1: lines SHOULD be at most 78 characters
MAX_ENCODED_WORD = 75  # RFC 2047 §2
MAX_MESSAGE_ID = 900  # one token on a line of its own stays within 998 characters
MAX_NAME_BYTES = 700  # a display name's encoded-word, base64, on a line within 998 characters

# RFC 5322 §3.4.1 addr-spec in its common form, dot-atom "@" dot-atom (§3.2.3).
_DOT_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
_DOT_ATOM_ADDRESS = re.compile(f"{_DOT_ATOM}@{_DOT_ATOM}")
_PRINTABLE = re.compile(r"[!-~]+")  # visible ASCII, no blanks
_LANGUAGE_TAG = re.compile(r"[A-Za-z]{1,8}(-[A-Za-z0-9]{1,8})*")  # RFC 5646, loosely


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


@dataclass(frozen=True)
class OutgoingFile:
    """A file sent with a mail (an agent's answer with attachments)."""

    filename: str
    content_type: str
    data: bytes


def to_wire(rendered: RenderedMail, envelope: Envelope, date: datetime | None = None,
            files: Sequence[OutgoingFile] = ()) -> bytes:
    """The mail as it goes to the relay: headers, then text and HTML alternatives, CRLF ends;
    with files, multipart/mixed: the alternatives first, then each file in base64.

    Raises ValueError for an address or a Message-ID that cannot be written safely."""
    boundary = "=_" + secrets.token_hex(12)  # "=_" never occurs in quoted-printable (RFC 2045 §6.7)
    outer = "=_" + secrets.token_hex(12)
    headers = [
        "From: " + _mailbox(envelope.from_name, envelope.from_address),
        "To: " + _mailbox(envelope.to_name, envelope.to_address),
        "Reply-To: " + _mailbox(envelope.from_name, envelope.reply_to),
        "Subject: " + _unstructured(one_line(rendered.subject)),
        "Date: " + format_datetime(date or utcnow()),
        "Message-ID: " + _message_id(envelope.message_id),
    ]
    in_reply_to = _message_ids([envelope.in_reply_to or ""])
    if in_reply_to:
        headers.append("In-Reply-To: " + in_reply_to[0])
    references = _message_ids(envelope.references)
    if references:
        headers.append("References: " + _fold_tokens(references, len("References: ")))
    headers += [
        # RFC 3834 §5: mark the mail as automatic so well-behaved responders do not answer it;
        # the Microsoft header keeps Exchange and Outlook out-of-office replies away too.
        "Auto-Submitted: auto-generated",
        "X-Auto-Response-Suppress: All",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/{"mixed" if files else "alternative"}; '
        f'boundary="{outer if files else boundary}"',
        "Content-Language: " + _language(envelope.language),
    ]
    head = CRLF.join(headers).encode("ascii")
    alternatives = [
        *_part("plain", rendered.text, boundary),
        *_part("html", rendered.html, boundary),
        b"--", boundary.encode("ascii"), b"--\r\n",
    ]
    if not files:
        return b"".join([head, b"\r\n\r\n", *alternatives])
    return b"".join([
        head, b"\r\n\r\n",
        f'--{outer}\r\nContent-Type: multipart/alternative; boundary="{boundary}"\r\n\r\n'
        .encode("ascii"),
        *alternatives, b"\r\n",
        *(piece for item in files for piece in _file_part(item, outer)),
        b"--", outer.encode("ascii"), b"--\r\n",
    ])


def _file_part(item: OutgoingFile, boundary: str) -> list[bytes]:
    """One attached file: its type as we detected it, its name (RFC 2231 when not plain
    ASCII), base64 in lines of 76."""
    content_type = item.content_type if re.fullmatch(r"[\w.+-]+/[\w.+-]+", item.content_type) \
        else "application/octet-stream"
    name = one_line(item.filename) or "file"
    if _needs_encoding(name) or '"' in name or "\\" in name:
        disposition = f"attachment; filename*={encode_rfc2231(name, 'utf-8')}"
    else:
        disposition = f'attachment; filename="{name}"'
    encoded = base64.encodebytes(item.data).replace(b"\n", b"\r\n")
    return [f"--{boundary}\r\nContent-Type: {content_type}\r\n"
            f"Content-Disposition: {disposition}\r\n"
            "Content-Transfer-Encoding: base64\r\n\r\n".encode("ascii"), encoded, b"\r\n"]


def build_message(rendered: RenderedMail, envelope: Envelope) -> EmailMessage:
    """The same mail as an ``EmailMessage``, for previews and for looking at its parts."""
    message = message_from_bytes(to_wire(rendered, envelope), policy=policy.default)
    assert isinstance(message, EmailMessage)
    return message


def to_bytes(message: EmailMessage) -> bytes:
    return message.as_bytes(policy=WIRE_POLICY)


def new_message_id(domain: str, kind: str) -> str:
    """A unique Message-ID (RFC 5322 §3.6.4) that names nothing about the host it was made on."""
    return f"<{kind}.{secrets.token_hex(10)}@{domain}>"


def one_line(value: str) -> str:
    """Header-safe text: no line breaks, no runs of blanks, at most 250 characters."""
    return " ".join(value.split())[:250]


# --------------------------------------------------------------------------- the serializer


def _part(subtype: str, content: str, boundary: str) -> list[bytes]:
    """One alternative: its boundary line, its headers and its quoted-printable body."""
    # Line ends become LF for the encoder, and the body ends with one, as the stdlib writes it.
    if "\r" in content:
        content = content.replace("\r\n", "\n").replace("\r", "\n")
    if not content.endswith("\n"):
        content += "\n"
    body = binascii.b2a_qp(content.encode("utf-8"), istext=True)  # lines of at most 76
    return [
        f"--{boundary}\r\nContent-Type: text/{subtype}; charset=\"utf-8\"\r\n"
        "Content-Transfer-Encoding: quoted-printable\r\n\r\n".encode("ascii"),
        body.replace(b"\n", b"\r\n"),
        b"\r\n",  # RFC 2046 §5.1.1: the CRLF before a boundary belongs to the boundary
    ]


def _mailbox(name: str, addr_spec: str) -> str:
    """``Display Name <address>`` (RFC 5322 §3.4): the stdlib's ``formataddr`` quotes a plain
    ASCII name as needed; any other name is one RFC 2047 encoded-word (``Charset.header_encode``).
    Readers disagree on the blank between two encoded-words in a display name (RFC 2047 §6.2
    drops it, the stdlib's parser keeps it), so a name is never split; one of more than 700
    bytes is cut, so its line stays within 998 characters."""
    spec = _addr_spec(addr_spec)
    name = one_line(name)
    if not _needs_encoding(name):
        return formataddr((name, spec))
    data = name.encode("utf-8")
    if len(data) > MAX_NAME_BYTES:
        name = data[:MAX_NAME_BYTES].decode("utf-8", "ignore")
    return f"{UTF8.header_encode(name)} <{spec}>"


def _addr_spec(value: str) -> str:
    """An address as one ASCII addr-spec, or ValueError (a relay without SMTPUTF8 could take no
    other). The usual dot-atom@dot-atom is matched at once; anything else (a quoted local part, a
    domain literal) goes through the stdlib's parser, which costs some 20 µs."""
    value = value.strip()
    if _DOT_ATOM_ADDRESS.fullmatch(value):
        return value
    if "\r" in value or "\n" in value:
        raise ValueError(f"line break in address {value!r}")
    try:
        spec = Address(addr_spec=value).addr_spec
    except HeaderParseError as exc:
        raise ValueError(f"not an address: {value!r}") from exc
    if not spec.isascii():
        raise ValueError(f"address {spec!r} is not ASCII")
    return spec


def _unstructured(value: str) -> str:
    """Subject text: plain ASCII words as they are, then RFC 2047 encoded-words from the first
    word that is not, so a leading "[#1001]" tag always stays readable and whole on the first
    line. The stdlib's ``Charset.header_encode_lines`` cuts the rest into encoded-words of at
    most 75 characters that never split a character; they are folded between each other, and
    readers drop the blanks between encoded-words (RFC 2047 §6.2), keeping the text's own."""
    words = value.split(" ")
    first = next((i for i, word in enumerate(words) if _needs_encoding(word)), len(words))
    plain, rest = " ".join(words[:first]), " ".join(words[first:])
    if not rest:
        return plain
    encoded = FOLD.join(UTF8.header_encode_lines(rest, itertools.repeat(MAX_ENCODED_WORD)))
    return f"{plain} {encoded}" if plain else encoded


def _needs_encoding(text: str) -> bool:
    # "=?" would be read as the start of an encoded-word (RFC 2047 §6.1).
    return not (text.isascii() and text.isprintable()) or "=?" in text


def _message_id(value: str) -> str:
    """Our own Message-ID: one printable ASCII token, or the mail is not written."""
    value = value.strip()
    if not _PRINTABLE.fullmatch(value) or len(value) > MAX_MESSAGE_ID:
        raise ValueError(f"unusable Message-ID {value!r}")
    return value


def _message_ids(values: tuple[str, ...] | list[str]) -> list[str]:
    """IDs of other mails to thread onto; one that could not be written safely is left out."""
    return [value for value in values
            if _PRINTABLE.fullmatch(value) and len(value) <= MAX_MESSAGE_ID]


def _fold_tokens(tokens: list[str], used: int) -> str:
    """Tokens separated by blanks, starting a new line before one that would pass 78."""
    out: list[str] = []
    for token in tokens:
        if out and used + 1 + len(token) > FOLD_AT:
            out.append(FOLD)
            used = 1
        elif out:
            out.append(" ")
            used += 1
        out.append(token)
        used += len(token)
    return "".join(out)


def _language(value: str) -> str:
    value = value.strip()
    if not _LANGUAGE_TAG.fullmatch(value):
        raise ValueError(f"unusable language tag {value!r}")
    return value
