"""Raw mail bytes → ``ParsedMail``: decoded headers, readable text, safe HTML, attachments. Pure.

mail-parser does the MIME work (charsets, RFC 2047 headers, RFC 2231 filenames, base64 and
quoted-printable). This module turns its result into one frozen value and never raises: a mail
that cannot be parsed comes back with ``error`` set and as much as could be read.
"""

from __future__ import annotations

import base64
import html
import logging
import re
import unicodedata
from dataclasses import dataclass, field

import mailparser
import nh3

log = logging.getLogger("gateway.parse")

_MSGID = re.compile(r"<[^<>\s]+>")
_SPACES = re.compile(r"[ \t\r\f\v]+")
_BLANK_LINES = re.compile(r"\n{3,}")
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
    error: str | None = None


def parse(raw: bytes) -> ParsedMail:
    """Parse ``raw``; on any failure, return what is known with ``error`` set."""
    try:
        mail = mailparser.parse_from_bytes(raw)
    except Exception as exc:  # one bad mail must never stop the queue
        log.warning("unparsable mail (%d bytes): %s", len(raw), exc)
        return _unparsable(f"{type(exc).__name__}: {exc}")

    headers = {name.lower(): _header_text(value) for name, value in (mail.headers or {}).items()}
    from_name, from_address = _first_address(mail.from_)
    text = _lines("\n".join(mail.text_plain)).strip() if mail.text_plain else ""
    raw_html = "\n".join(mail.text_html) if mail.text_html else None
    safe_html = sanitize_html(raw_html) if raw_html else None
    if not text and raw_html:
        text = html_to_text(raw_html)
    return ParsedMail(
        message_id=_first_msgid(headers.get("message-id", "")),
        in_reply_to=tuple(_MSGID.findall(headers.get("in-reply-to", ""))),
        references=tuple(_MSGID.findall(headers.get("references", ""))),
        subject=_one_line(mail.subject or ""),
        from_name=from_name,
        from_address=from_address,
        to=tuple(addr.lower() for _name, addr in (mail.to or []) if addr),
        headers=headers,
        text=text,
        html=safe_html,
        attachments=tuple(_attachments(mail.attachments or [])),
    )


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
        try:
            data = (
                base64.b64decode(payload)
                if item.get("binary")
                else payload.encode(item.get("charset") or "utf-8", "replace")
            )
        except (ValueError, LookupError) as exc:
            log.warning("attachment %r could not be decoded: %s", item.get("filename"), exc)
            continue
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

