"""Raw mail bytes → ``ParsedMail``: decoded headers, readable text, safe HTML, attachments. Pure.

mail-parser does the MIME work (charsets, RFC 2047 headers, RFC 2231 filenames, base64 and
quoted-printable). This module turns its result into one frozen value and never raises: a mail
that cannot be parsed comes back with ``error`` set and as much as could be read.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import html
import logging
import re
import unicodedata
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from email.parser import BytesFeedParser, HeaderParser
from email.policy import compat32
from email.utils import parseaddr

import mailparser
import nh3

from gateway.inbound import charsets

log = logging.getLogger("gateway.parse")
FEED_CHUNK = 64 * 1024  # bytes given to the stdlib parser at a time

_MSGID = re.compile(r"<[^<>\s]+>")
_SPACES = re.compile(r"[ \t\r\f\v]+")
_BLANK_LINES = re.compile(r"\n{3,}")
_FIELD_NAME = re.compile(rb"[!-9;-~]{1,76}")
_UUENCODED = re.compile(r"^begin [0-7]{3,4} ([^\n]+)\n(.*?)\n`?\nend$", re.MULTILINE | re.DOTALL)
_UNSAFE_FILENAME = re.compile(r"[^\w.\- ()\[\]+,@&=]", re.UNICODE)


@dataclass(frozen=True)
class ParsedAttachment:
    filename: str
    declared_type: str
    payload: bytes
    content_id: str | None


@dataclass(frozen=True)
class ParsedMail:
    message_id: str | None
    in_reply_to: tuple[str, ...]
    references: tuple[str, ...]
    subject: str
    from_name: str
    from_address: str
    to: tuple[str, ...]
    headers: dict[str, str]
    text: str
    html: str | None
    attachments: tuple[ParsedAttachment, ...] = field(default=())
    delivery_report: DeliveryReport | None = None
    defects: tuple[str, ...] = ()
    error: str | None = None


@dataclass(frozen=True)
class DeliveryReport:
    """The machine-readable part of a bounce (RFC 3464 message/delivery-status)."""

    action: str
    status: str
    diagnostic: str
    original_message_ids: tuple[str, ...]


def parse(raw: bytes) -> ParsedMail:
    """Parse ``raw``; never raises. Each part is read on its own, so one broken part (a bad
    attachment, an undecodable body) costs that part only; ``defects`` says what was lost."""
    if not raw.strip():
        return _unparsable("empty message")
    if not _raw_headers(raw):
        return _unparsable("not a mail: no header at all (a binary file, an Outlook .msg?)")
    try:
        mail = mailparser.MailParser(_message(raw))
    except Exception as exc:  # one bad mail must never stop the queue
        log.warning("unparsable mail (%d bytes): %s", len(raw), exc)
        return _unparsable(f"{type(exc).__name__}: {exc}")

    defects: list[str] = []

    def attempt(what: str, read, default):  # type: ignore[no-untyped-def]
        try:
            return read()
        except Exception as exc:
            log.info("mail part %s unreadable: %s", what, exc)
            defects.append(f"{what}: {type(exc).__name__}: {exc}"[:300])
            return default

    headers = attempt("headers", lambda: {
        name.lower(): _header_text(value) for name, value in (mail.headers or {}).items()
    }, {})
    raw_headers = _raw_headers(raw)
    body_charset = _declared_charset(headers.get("content-type", ""))
    from_name, from_address = attempt("from", lambda: _sender(raw_headers, mail.from_), ("", ""))
    bodies = attempt("body", lambda: _bodies(mail.message), None)
    if bodies is not None:
        plain, html_parts = bodies
    else:  # the stdlib walk failed: take mail-parser's decoding, lossy as it may be
        plain, html_parts = list(mail.text_plain or []), list(mail.text_html or [])
    text = attempt("text", lambda: _lines("\n".join(plain)).strip(), "")
    raw_html = attempt("html", lambda: "\n".join(html_parts) or None, None)
    safe_html = attempt("html", lambda: sanitize_html(raw_html), None) if raw_html else None
    if not text and raw_html:
        text = attempt("html text", lambda: html_to_text(raw_html), "")
    text, uu_files = attempt("uuencode", lambda: _uudecode(text), (text, []))
    return ParsedMail(
        message_id=_first_msgid(headers.get("message-id", "")),
        in_reply_to=tuple(_MSGID.findall(headers.get("in-reply-to", ""))),
        references=tuple(_MSGID.findall(headers.get("references", ""))),
        subject=attempt("subject", lambda: _subject(raw_headers, body_charset, mail.subject), ""),
        from_name=from_name,
        from_address=from_address,
        to=attempt("to", lambda: tuple(a.lower() for _n, a in (mail.to or []) if a), ()),
        headers=headers,
        text=text,
        html=safe_html,
        attachments=tuple(attempt("attachments", lambda: _attachments(mail.attachments or []),
                                  [])) + tuple(uu_files),
        delivery_report=attempt("report", lambda: _delivery_report(raw, headers), None),
        defects=tuple(defects),
    )


def _bodies(message: Message) -> tuple[list[str], list[str]]:
    """The text and HTML bodies (not attachments), each decoded by charsets.decode: the declared
    charset if it fits, else the best reading, so that no charset, or a wrong one, or
    ISO-2022-JP still end as readable text."""
    plain: list[str] = []
    html_parts: list[str] = []
    for part in message.walk():
        if part.is_multipart() or part.get_content_maintype() != "text":
            continue
        disposition = str(part.get("Content-Disposition", "")).lower()
        if disposition.startswith("attachment") or part.get_filename():
            continue
        subtype = part.get_content_subtype()
        if subtype not in {"plain", "html"}:
            continue
        payload = part.get_payload(decode=True) or b""
        text = charsets.decode(payload, part.get_content_charset())
        (plain if subtype == "plain" else html_parts).append(text)
    return plain, html_parts


def _raw_headers(raw: bytes) -> dict[bytes, bytes]:
    """The first value of each header, unfolded, as raw bytes (RFC 5322 §2.2.3)."""
    ends = [i for i in (raw.find(b"\r\n\r\n"), raw.find(b"\n\n")) if i >= 0]
    block = raw[: min(ends)] if ends else raw
    block = re.sub(rb"\r?\n[ \t]+", b" ", block[:262144])
    result: dict[bytes, bytes] = {}
    for line in block.split(b"\n"):
        name, colon, value = line.partition(b":")
        # RFC 5322 §2.2: a field name is printable US-ASCII except the colon; a binary file
        # (an Outlook .msg, a picture) also has colons, but not behind such names.
        if colon and _FIELD_NAME.fullmatch(name.rstrip(b" \t")):
            result.setdefault(name.strip().lower(), value.strip())
    return result


def _declared_charset(content_type: str) -> str | None:
    found = re.search(r"charset\s*=\s*\"?([\w.:-]+)", content_type, re.IGNORECASE)
    return found.group(1) if found else None


def _subject(raw_headers: dict[bytes, bytes], body_charset: str | None, fallback: str) -> str:
    value = raw_headers.get(b"subject")
    return charsets.header(value, body_charset) if value is not None else _one_line(fallback or "")


def _sender(raw_headers: dict[bytes, bytes], fallback: list | None) -> tuple[str, str]:
    """Display name and address of From; the <angle address> wins over a name that looks like
    an address ("billing@bank.example <phish@elsewhere.example>" is from elsewhere)."""
    value = raw_headers.get(b"from")
    if value is None:
        return _first_address(fallback)
    text = charsets.header(value)
    angle = re.search(r"<\s*([^<>\s]+@[^<>\s]+?)\s*>", text)
    if angle:
        name = text[: angle.start()].strip().strip('"').strip()
        address = angle.group(1)
    else:
        name, address = parseaddr(text)
    if "@" not in address:
        return _first_address(fallback)
    return _one_line(name), address.strip().lower()


def _delivery_report(raw: bytes, headers: dict[str, str]) -> DeliveryReport | None:
    """Read a multipart/report of type delivery-status with the stdlib (RFC 3462, RFC 3464)."""
    content_type = headers.get("content-type", "").lower()
    if "multipart/report" not in content_type or "delivery-status" not in content_type:
        return None
    message = message_from_bytes(raw, policy=compat32)
    action = status = diagnostic = ""
    ids: list[str] = []
    for part in message.walk():
        kind = part.get_content_type()
        if kind == "message/delivery-status":
            for block in part.get_payload() or []:
                action = action or str(block.get("Action", "")).strip().lower()
                status = status or str(block.get("Status", "")).strip()
                diagnostic = diagnostic or " ".join(str(block.get("Diagnostic-Code", "")).split())
        elif kind == "message/rfc822":
            inner = part.get_payload()
            if isinstance(inner, list) and inner:
                ids += _MSGID.findall(str(inner[0].get("Message-ID", "")))
        elif kind == "text/rfc822-headers":
            payload = part.get_payload(decode=True) or b""
            inner_headers = HeaderParser(policy=compat32).parsestr(
                payload.decode("utf-8", "replace"))
            ids += _MSGID.findall(str(inner_headers.get("Message-ID", "")))
    return DeliveryReport(action, status, diagnostic[:300], tuple(dict.fromkeys(ids)))


def sanitize_html(markup: str) -> str:
    """HTML from a mail is attacker-controlled: keep formatting, drop scripts, styles, handlers."""
    return nh3.clean(markup, url_schemes={"http", "https", "mailto", "cid"})


def html_to_text(markup: str) -> str:
    """Readable text from an HTML-only mail: block ends become line breaks, tags go away."""
    marked = re.sub(r"(?i)<\s*(br|/p|/div|/tr|/li|/h[1-6])\b[^>]*>", "\n", markup)
    stripped = html.unescape(nh3.clean(marked, tags=set(), clean_content_tags={"style", "script"}))
    lines = (_SPACES.sub(" ", line).strip() for line in stripped.splitlines())
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()


def safe_filename(name: str, fallback: str = "adjunto") -> str:
    """A filename that is safe on every disk and in every header: no path, no control chars."""
    name = unicodedata.normalize("NFC", name or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = _UNSAFE_FILENAME.sub("_", name).strip(" .")
    return name[:200] or fallback


def _attachments(items: list[dict]) -> list[ParsedAttachment]:
    result = []
    for item in items:
        payload = item.get("payload") or ""
        if item.get("binary"):
            data = _lenient_base64(payload)
        else:
            try:
                data = payload.encode(item.get("charset") or "utf-8", "replace")
            except LookupError:  # an unknown charset name: keep the text as UTF-8
                data = payload.encode("utf-8", "replace")
        content_id = (item.get("content-id") or "").strip().strip("<>") or None
        result.append(
            ParsedAttachment(
                filename=safe_filename(item.get("filename") or ""),
                declared_type=(item.get("mail_content_type") or "application/octet-stream").lower(),
                payload=data,
                content_id=content_id,
            )
        )
    return result


def _uudecode(text: str) -> tuple[str, list[ParsedAttachment]]:
    """Files uuencoded inside a plain-text body (old Outlook Express, scripts) become
    attachments, and leave the text."""
    files: list[ParsedAttachment] = []

    def take(found: re.Match[str]) -> str:
        data = bytearray()
        for line in found.group(2).splitlines():
            try:
                data += binascii.a2b_uu(line)
            except binascii.Error:  # a damaged line: keep what decodes, as encoders pad oddly
                with contextlib.suppress(binascii.Error, IndexError):
                    data += binascii.a2b_uu(line[: ((ord(line[0]) - 32) & 63) * 4 // 3 + 1])
        files.append(ParsedAttachment(safe_filename(found.group(1).strip()),
                                      "application/octet-stream", bytes(data), None))
        return ""

    return _UUENCODED.sub(take, text).strip(), files


def _message(raw: bytes) -> Message:
    """The stdlib's message tree, fed to its parser in chunks as mail-parser's own ``from_file``
    does. ``message_from_bytes`` (mail-parser's ``parse_from_bytes``) first decodes the whole
    mail into one string and a ``StringIO`` of 4 bytes a character: 8 times a 25 MB mail's size
    at its peak, against under 2 times this way. A mail nested too deeply raises, as before."""
    parser = BytesFeedParser()
    for start in range(0, len(raw), FEED_CHUNK):
        parser.feed(raw[start:start + FEED_CHUNK])
    return parser.close()


def _lenient_base64(payload: str | bytes) -> bytes:
    """Decode damaged base64 as far as it goes (stray characters, missing padding), so that a
    damaged attachment is kept and judged by its content rather than silently dropped."""
    if isinstance(payload, str) and not payload.isascii():
        payload = payload.encode("ascii", "ignore")
    first_pad = payload.find("=" if isinstance(payload, str) else b"=")
    if first_pad < 0 or not payload[first_pad:].strip("=\r\n\t " if isinstance(payload, str)
                                                        else b"=\r\n\t "):
        # Padding only at the end: binascii skips line breaks and stray characters itself, with
        # no cleaned copy of a large file; it refuses only a wrong length, handled below.
        try:
            return binascii.a2b_base64(payload)
        except binascii.Error:
            pass
    data = payload.encode("ascii", "ignore") if isinstance(payload, str) else payload
    cleaned = re.sub(rb"[^A-Za-z0-9+/]", b"", data)
    cleaned = cleaned[: len(cleaned) - len(cleaned) % 4 if len(cleaned) % 4 == 1 else len(cleaned)]
    return base64.b64decode(cleaned + b"=" * (-len(cleaned) % 4))


def _first_address(pairs: list[tuple[str, str]] | None) -> tuple[str, str]:
    for name, address in pairs or []:
        if address and "@" in address:
            return _one_line(name or ""), address.strip().lower()
    return "", ""


def _first_msgid(value: str) -> str | None:
    found = _MSGID.findall(value)
    return found[0] if found else None


def _header_text(value: object) -> str:
    if isinstance(value, list):
        if value and isinstance(value[0], tuple):
            return ", ".join(addr for _name, addr in value)
        return " ".join(str(v) for v in value)
    return str(value)


def _lines(value: str) -> str:
    """Unix line ends: mail travels with CRLF (RFC 5322 §2.1), pages and tests want LF."""
    return value.replace("\r\n", "\n").replace("\r", "\n")


def _one_line(value: str) -> str:
    return " ".join(value.split())


def _unparsable(error: str) -> ParsedMail:
    return ParsedMail(
        message_id=None, in_reply_to=(), references=(), subject="", from_name="",
        from_address="", to=(), headers={}, text="", html=None, error=error,
    )

