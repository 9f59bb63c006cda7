"""Raw mail bytes → ``ParsedMail``: decoded headers, readable text, safe HTML, attachments. Pure.

mail-parser reads the headers (RFC 2047 words, address lists); ``gateway.inbound.parts`` walks
the MIME tree for the bodies and the files. This module turns both into one frozen value and
never raises: a mail that cannot be parsed comes back with ``error`` set and as much as could
be read.
"""

from __future__ import annotations

import html
import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from email import message_from_bytes
from email.message import Message
from email.parser import BytesFeedParser, HeaderParser
from email.policy import compat32
from email.utils import parseaddr
from functools import partial
from pathlib import Path

import mailparser
import nh3

from gateway.inbound import charsets, parts, tree
from gateway.inbound.parts import ParsedAttachment, safe_filename

__all__ = ["DeliveryReport", "ParsedAttachment", "ParsedMail", "html_to_text", "parse",
           "safe_filename", "sanitize_html"]
log = logging.getLogger("gateway.parse")
FEED_CHUNK = 64 * 1024  # bytes given to the stdlib parser at a time
STREAM_FROM = 1024 * 1024  # a mail's file larger than this is parsed as it is read
TREE_FROM = 16 * 1024  # a multipart mail this large is split at its boundaries (tree.build)
HEAD_BYTES = 262144 + 8192  # what is read of such a file for its header block and stray lines

_MSGID = re.compile(r"<[^<>\s]+>")
_SPACES = re.compile(r"[ \t\r\f\v]+")
_BLANK_LINES = re.compile(r"\n{3,}")
_FIELD_NAME = re.compile(rb"[!-9;-~]{1,76}")
# Lines some gateways put before the first header (an mbox "From " or ">From " line, a blank
# line, a banner): at most this many are skipped to find the headers behind them.
STRAY_LINES = 3

class _HeadersOnly(mailparser.MailParser):
    """mail-parser for what we take from it: the decoded headers and address lists. Its own
    ``parse`` would also walk the parts and decode each one (every attachment included) a
    second time; ``_reset`` is the part of it that reads the headers (mail-parser 4.8, pinned:
    the fixture and corpus tests say if an upgrade changes that)."""

    def parse(self) -> _HeadersOnly:
        self._reset()
        return self


def _without_trace(message: Message) -> Message:
    """The message's headers as they are but its Received lines (which mail-parser would take
    apart hop by hop, for nothing: a tenth of a mail's parsing), without its body."""
    headers = Message(policy=compat32)
    for name, value in message.raw_items():
        if name.lower() != "received":
            headers[name] = value
    return headers


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


def parse(source: bytes | Path, spill: Callable[[], parts.Spill] | None = None) -> ParsedMail:
    """Parse a mail, given as bytes or as its file; never raises for what the mail holds (a
    file that cannot be read raises OSError). Each part is read on its own, so one broken part
    (a bad attachment, an undecodable body) costs that part only; ``defects`` says what was
    lost.

    With ``spill``, a large mail is parsed as it is read from its file, and each large
    base64 part is decoded into a new spill rather than memory (parts.SpillingMessage): its
    attachment's ``payload`` is then that spill, for the caller to store or discard."""
    raw: bytes | Path = source
    if isinstance(source, Path) and source.stat().st_size <= STREAM_FROM:
        raw = source.read_bytes()
    head = raw if isinstance(raw, bytes) else _read_head(raw)
    if not head.strip():
        return _unparsable("empty message")
    start = _first_header(head)
    raw_headers = _raw_headers(head[start:])
    if not raw_headers:
        return _unparsable("not a mail: no header at all (a binary file, an Outlook .msg?)")
    message: Message | None = None
    mail: ParsedMail | None = None
    try:
        message = _message(raw, start, spill)
        mail = _without_nul(_parsed(message, raw, start, raw_headers))
    except Exception as exc:  # one bad mail must never stop the queue
        size = len(raw) if isinstance(raw, bytes) else raw.stat().st_size
        log.warning("unparsable mail (%d bytes): %s", size, exc)
        mail = _unparsable(f"{type(exc).__name__}: {exc}")
    finally:
        if spill is not None and message is not None:  # spills no file took (a dropped part)
            taken = {id(a.payload) for a in mail.attachments} if mail is not None else set()
            for _part, spilled in parts.spills(message):
                if id(spilled) not in taken:
                    spilled.discard()
    return mail


def _parsed(message: Message, raw: bytes | Path, start: int,
            raw_headers: dict[bytes, list[bytes]]) -> ParsedMail:
    # mail-parser reads the headers only: its own walk would decode every part (and every
    # attachment) a second time, for nothing (ours is gateway.inbound.parts). What it cannot
    # take makes the mail unparsable (``parse``).
    mail = _HeadersOnly(_without_trace(message))

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
    found = attempt("body", lambda: parts.split(message), None)
    if found is None:  # the walk failed: take mail-parser's decoding, lossy as it may be
        whole = attempt("body", lambda: mailparser.MailParser(message), None)
        found = parts.Parts(plain=list(whole.text_plain or []) if whole else [],
                            html=list(whole.text_html or []) if whole else [])
    defects += found.defects
    # Raw 8-bit headers are in the charset the mailer writes its body in.
    hint = _declared_charset(headers.get("content-type", "")) or found.charset
    from_name, from_address = attempt("from", lambda: _sender(raw_headers, hint, mail.from_),
                                      ("", ""))
    text = attempt("text", lambda: _lines("\n".join(found.plain)).strip(), "")
    raw_html = attempt("html", lambda: "\n".join(found.html) or None, None)
    safe_html = attempt("html", lambda: sanitize_html(raw_html), None) if raw_html else None
    if not text and raw_html:
        text = attempt("html text", lambda: html_to_text(raw_html), "")
    text, uu_files = attempt("uuencode", lambda: parts.uudecode_text(text), (text, []))
    return ParsedMail(
        message_id=_first_msgid(headers.get("message-id", "")),
        in_reply_to=tuple(_MSGID.findall(headers.get("in-reply-to", ""))),
        references=tuple(_MSGID.findall(headers.get("references", ""))),
        subject=attempt("subject", lambda: _subject(raw_headers, hint, mail.subject), ""),
        from_name=from_name,
        from_address=from_address,
        to=attempt("to", lambda: tuple(a.lower() for _n, a in (mail.to or []) if a), ()),
        headers=headers,
        text=text,
        html=safe_html,
        attachments=(*found.files, *uu_files),
        delivery_report=attempt("report", lambda: _delivery_report(raw, start, headers), None),
        defects=tuple(defects),
    )


def _without_nul(mail: ParsedMail) -> ParsedMail:
    """NUL characters taken out of what is read: a mail (or a broken header) may carry them,
    PostgreSQL refuses them in text (SQLite keeps them), and they show nothing to anyone."""
    def clean(value: str) -> str:
        return value.replace("\x00", "")

    def tuple_of(values: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(clean(v) for v in values)

    fields = (mail.subject, mail.from_name, mail.from_address, mail.text, mail.html or "",
              mail.message_id or "", *mail.in_reply_to, *mail.references, *mail.to,
              *mail.headers.values(), *mail.defects)
    if not any("\x00" in value for value in fields):
        return mail
    return replace(
        mail, subject=clean(mail.subject), from_name=clean(mail.from_name),
        from_address=clean(mail.from_address), text=clean(mail.text),
        html=clean(mail.html) if mail.html is not None else None,
        message_id=clean(mail.message_id) if mail.message_id else mail.message_id,
        in_reply_to=tuple_of(mail.in_reply_to), references=tuple_of(mail.references),
        to=tuple_of(mail.to), headers={name: clean(value) for name, value in mail.headers.items()},
        defects=tuple_of(mail.defects))


def _first_header(raw: bytes) -> int:
    """Where the mail's first header starts: a line before it (an mbox "From " line, a blank
    line, a gateway's banner) would make every header part of the body."""
    start = 0
    for _ in range(STRAY_LINES + 1):
        end = raw.find(b"\n", start)
        if end < 0:
            return 0
        following = raw.find(b"\n", end + 1)
        if _is_field(raw[start:end]) and (following < 0 or _is_field(raw[end + 1:following])
                                          or raw[end + 1:end + 2] in {b" ", b"\t"}):
            return start
        start = end + 1
    return 0


def _read_head(path: Path) -> bytes:
    with path.open("rb") as handle:
        return handle.read(HEAD_BYTES)


def _chunks(raw: bytes | Path, start: int) -> Iterator[bytes]:
    """The mail from ``start`` on, FEED_CHUNK bytes at a time, from memory or from its file."""
    if isinstance(raw, bytes):
        for offset in range(start, len(raw), FEED_CHUNK):
            yield raw[offset:offset + FEED_CHUNK]
        return
    with raw.open("rb") as handle:
        handle.seek(start)
        while chunk := handle.read(FEED_CHUNK):
            yield chunk


def _is_field(line: bytes) -> bool:
    name, colon, _value = line.partition(b":")
    return bool(colon) and bool(_FIELD_NAME.fullmatch(name.rstrip(b" \t")))


def _raw_headers(raw: bytes) -> dict[bytes, list[bytes]]:
    """Every value of each header, unfolded, as raw bytes (RFC 5322 §2.2.3), in order."""
    ends = [i for i in (raw.find(b"\r\n\r\n"), raw.find(b"\n\n")) if i >= 0]
    block = raw[: min(ends)] if ends else raw
    block = re.sub(rb"\r?\n[ \t]+", b" ", block[:262144])
    result: dict[bytes, list[bytes]] = {}
    for line in block.split(b"\n"):
        # RFC 5322 §2.2: a field name is printable US-ASCII except the colon; a binary file
        # (an Outlook .msg, a picture) also has colons, but not behind such names.
        if _is_field(line):
            name, _colon, value = line.partition(b":")
            result.setdefault(name.strip().lower(), []).append(value.strip())
    return result


def _declared_charset(content_type: str) -> str | None:
    found = re.search(r"charset\s*=\s*\"?([\w.:-]+)", content_type, re.IGNORECASE)
    return found.group(1) if found else None


def _subject(raw_headers: dict[bytes, list[bytes]], hint: str | None, fallback: str) -> str:
    values = raw_headers.get(b"subject")
    return charsets.header(values[0], hint) if values else _one_line(fallback or "")


def _sender(raw_headers: dict[bytes, list[bytes]], hint: str | None,
            fallback: list | None) -> tuple[str, str]:
    """Display name and address of the first usable From: a mailer that writes its own From
    before the real one ("From: MOSTRADOR01") has not hidden the sender. The <angle address>
    wins over a name that looks like an address ("billing@bank.example
    <phish@elsewhere.example>" is from elsewhere)."""
    for value in raw_headers.get(b"from", []):
        text = charsets.header(value, hint)
        angle = re.search(r"<\s*([^<>\s]+@[^<>\s]+?)\s*>", text)
        if angle:
            name = text[: angle.start()].strip().strip('"').strip()
            address = angle.group(1)
        else:
            name, address = parseaddr(text)
        if _usable(address):
            return _one_line(name), _address(address)
    return _first_address(fallback)


def _usable(address: str) -> bool:
    local, at, domain = address.strip().rpartition("@")
    return bool(at and local and domain)


def _address(address: str) -> str:
    """The local part as written, the domain in lower case: only the domain is case-insensitive
    (RFC 5321 §2.4), and the customer's own spelling is what we show and answer."""
    local, _at, domain = address.strip().rpartition("@")
    return f"{local}@{domain.lower()}"


def _delivery_report(raw: bytes | Path, start: int,
                     headers: dict[str, str]) -> DeliveryReport | None:
    """Read a multipart/report of type delivery-status with the stdlib (RFC 3462, RFC 3464)."""
    content_type = headers.get("content-type", "").lower()
    if "multipart/report" not in content_type or "delivery-status" not in content_type:
        return None
    whole = raw if isinstance(raw, bytes) else raw.read_bytes()
    message = message_from_bytes(whole[start:], policy=compat32)
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


def _message(raw: bytes | Path, start: int,
             spill: Callable[[], parts.Spill] | None) -> Message:
    """The stdlib's message tree. A multipart mail in memory of TREE_FROM bytes or more is
    split at its boundaries (gateway.inbound.tree: the same tree, without reading its files
    line by line); otherwise the mail is fed to the stdlib's parser in chunks as
    mail-parser's own ``from_file`` does. ``message_from_bytes`` (mail-parser's
    ``parse_from_bytes``) first decodes the whole mail into one string and a ``StringIO`` of
    4 bytes a character: 8 times a 25 MB mail's size at its peak, against under 2 times this
    way (and with ``spill``, from its file, large parts decoded to disk: about one encoded
    part at a time). A mail nested too deeply raises, as before."""
    factory = Message if spill is None else partial(parts.SpillingMessage, new_spill=spill)
    if isinstance(raw, bytes) and len(raw) - start >= TREE_FROM:
        found = tree.build(raw[start:], factory)
        if found is not None:
            return found
    parser = BytesFeedParser(_factory=factory)
    for chunk in _chunks(raw, start):
        parser.feed(chunk)
    return parser.close()


def _first_address(pairs: list[tuple[str, str]] | None) -> tuple[str, str]:
    for name, address in pairs or []:
        if address and _usable(address):
            return _one_line(name or ""), _address(address)
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

