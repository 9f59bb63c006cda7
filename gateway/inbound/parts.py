"""A mail's MIME tree → its text, its HTML and every other part as a named file. Pure.

Every part that is not the body is something the customer sent, so each one is listed, named and
judged, never dropped without a word: a phone's video with neither a name nor a Content-ID is
``adjunto-2.mov``; an inline image without a name takes the file name its Content-ID or
Content-Location carries (``image001.jpg@01CD...`` is ``image001.jpg``); a forwarded mail is named
by its subject, the same on every run. ``winmail.dat`` is unpacked into the files it carries, and
a calendar invitation adds a readable summary to the text.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import mimetypes
import re
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.message import Message
from email.policy import compat32
from typing import Any, Protocol

from mailparser.utils import decode_header_part, mime_header_view

from gateway.inbound import charsets, invitation, tnef

_UNSAFE_FILENAME = re.compile(r"[^\w.\- ()\[\]+,@&=]", re.UNICODE)
_LOOKS_LIKE_FILE = re.compile(r"[^/\\@<>\s]{1,120}\.[A-Za-z0-9]{1,5}")
_UUENCODED = re.compile(r"^begin [0-7]{3,4} ([^\n]+)\n(.*?)\n`?\nend$", re.MULTILINE | re.DOTALL)
_UU_ENCODINGS = frozenset({"x-uuencode", "uuencode", "x-uue", "uue"})
# mimetypes knows no extension, or a surprising one, for these.
_EXTENSIONS = {"video/quicktime": ".mov", "image/jpeg": ".jpg", "text/plain": ".txt",
               "message/rfc822": ".eml", "application/octet-stream": ".bin",
               "audio/amr": ".amr", "video/3gpp": ".3gp", "text/calendar": ".ics"}


SPILL_FROM = 1024 * 1024  # encoded characters: a base64 body this large is decoded to a Spill
_SLICE = 256 * 1024  # characters of base64 decoded at a time into a Spill


class Spill(Protocol):
    """Where a large part's decoded bytes go instead of memory: a blob being written
    (storage.blobs.BlobWriter), stored or discarded by whoever takes the file."""

    size: int

    @property
    def head(self) -> bytes: ...  # its first 64 KiB
    @property
    def key(self) -> str: ...  # the sha256 of what was written
    def write(self, chunk: bytes) -> None: ...
    def read(self) -> bytes: ...
    def commit(self) -> str: ...
    def discard(self) -> None: ...


@dataclass(frozen=True)
class ParsedAttachment:
    filename: str
    declared_type: str
    payload: bytes | Spill  # a Spill only when the mail was parsed with one (parse(spill=))
    content_id: str | None


class SpillingMessage(Message):
    """A MIME part as the stdlib's parser builds it, except that a large base64 body is
    decoded, as the parser hands it over, into a Spill instead of being kept in the tree: the
    files of a 25 MB mail are never in memory all at once, encoded and decoded, and the body
    in hand is decoded a slice at a time."""

    def __init__(self, policy: Any = compat32, new_spill: Callable[[], Spill] | None = None,
                 ) -> None:
        super().__init__(policy)
        self.new_spill = new_spill
        self.spilled: Spill | None = None

    def set_payload(self, payload: Any, charset: Any = None) -> None:
        if (self.new_spill is None or not isinstance(payload, str) or len(payload) < SPILL_FROM
                or str(self.get("Content-Transfer-Encoding", "")).strip().lower() != "base64"):
            super().set_payload(payload, charset)
            return
        spill = self.new_spill()
        try:
            if not decode_base64_to(payload, spill.write):  # damaged: leniently, at once
                spill.discard()
                spill = self.new_spill()
                spill.write(lenient_base64(payload))
        except OSError:  # the disk refused it: kept in memory, as any other part
            spill.discard()
            super().set_payload(payload, charset)
            return
        self.spilled = spill
        super().set_payload("", charset)


def decode_base64_to(payload: str, write: Callable[[bytes], None]) -> bool:
    """Decode well-formed base64 (padding only at its end) a slice of lines at a time into
    ``write``; False, with part of it written, when it is not (``lenient_base64`` then)."""
    first_pad = payload.find("=")
    if first_pad >= 0 and payload[first_pad:].strip("=\r\n\t "):
        return False
    start = 0
    while start < len(payload):
        end = payload.find("\n", start + _SLICE)
        end = len(payload) if end < 0 else end + 1
        try:  # a slice whose characters are not a multiple of four raises: never half-decoded
            write(binascii.a2b_base64(payload[start:end]))
        except ValueError:
            return False
        start = end
    return True


def spills(message: Message) -> Iterator[tuple[Message, Spill]]:
    """Every part of ``message`` whose body went to a Spill."""
    for part in message.walk():
        spilled = getattr(part, "spilled", None)
        if spilled is not None:
            yield part, spilled


def unspill(message: Message) -> None:
    """Put the bodies of ``message``'s parts back in it, encoded as they came (base64): for a
    forwarded mail kept whole as a file."""
    for part, spilled in list(spills(message)):
        data = _take_back(part, spilled)
        Message.set_payload(part, base64.encodebytes(data).decode("ascii"))


def _take_back(part: Message, spilled: Spill) -> bytes:
    data = spilled.read()
    spilled.discard()
    part.spilled = None  # type: ignore[attr-defined]
    return data


@dataclass
class Parts:
    """What the walk found, in the order of the mail."""

    plain: list[str] = field(default_factory=list)
    html: list[str] = field(default_factory=list)
    files: list[ParsedAttachment] = field(default_factory=list)
    defects: list[str] = field(default_factory=list)
    charset: str | None = None  # the first charset a text body declares


def split(message: Message) -> Parts:
    """Walk the tree once: text and HTML bodies decoded (charsets.decode), every other leaf a
    file. A part that cannot be read costs that part only, noted in ``defects``."""
    parts = Parts()
    _walk(message, parts)
    return parts


def _walk(part: Message, parts: Parts, alternative: bool = False) -> None:
    kind = part.get_content_type()
    if kind in {"message/rfc822", "message/global"}:
        inner = part.get_payload()
        inner = inner[0] if isinstance(inner, list) and inner else None
        _read(parts, kind, lambda: parts.files.append(_forwarded(part, inner, len(parts.files))))
        if isinstance(inner, Message):
            _walk(inner, parts)  # its text and files count too, as they always have
        return
    if part.is_multipart() and part.get_content_maintype() == "multipart":
        for child in part.get_payload() or []:
            if isinstance(child, Message):
                _walk(child, parts, kind == "multipart/alternative")
        return
    _read(parts, kind, lambda: _leaf(part, parts, alternative))


def _read(parts: Parts, what: str, read) -> None:  # type: ignore[no-untyped-def]
    try:
        read()
    except Exception as exc:  # one broken part must not cost the others
        parts.defects.append(f"part {what}: {type(exc).__name__}: {exc}"[:300])


def _leaf(part: Message, parts: Parts, alternative: bool) -> None:
    kind = part.get_content_type()
    attached = part.get_content_disposition() == "attachment"
    name = _declared_name(part)
    if kind in {"text/plain", "text/html"} and not attached and not name:
        declared = part.get_content_charset()
        parts.charset = parts.charset or declared
        text = charsets.decode(_payload(part), declared)
        (parts.plain if kind == "text/plain" else parts.html).append(text)
        return
    if kind == "text/calendar" or name.lower().endswith(".ics"):
        summary = invitation.summary(_payload(part))
        if summary:
            parts.plain.append(summary)
        if not attached:
            return  # the invitation is the body's alternative, not a file the customer sent
    if alternative and part.get_content_maintype() == "text" and not attached:
        return  # another rendering of the body (Apple Watch's text/watch-html, text/enriched)
    spilled: Spill | None = getattr(part, "spilled", None)
    unpacked = None
    if _is_tnef(kind, name):  # read whole, to look inside
        payload: bytes | Spill = _payload(part)
        unpacked = tnef.unpack(payload)
    else:
        payload = spilled if spilled is not None else _payload(part)
    if unpacked is not None:  # winmail.dat stands for the files inside it
        for inner_name, data in unpacked:
            parts.files.append(ParsedAttachment(
                safe_filename(inner_name) if inner_name else _type_name(
                    "application/octet-stream", len(parts.files)),
                _guess_type(inner_name), data, None))
        return
    content_id = str(part.get("Content-ID", "")).strip().strip("<>").strip() or None
    filename = name or _implied_name(part, content_id) or _type_name(kind, len(parts.files))
    parts.files.append(ParsedAttachment(safe_filename(filename, _type_name(kind, len(parts.files))),
                                        kind, payload, content_id))


def _declared_name(part: Message) -> str:
    """The name the sender gave: Content-Disposition filename, else Content-Type name (RFC 2183,
    RFC 2231 continuations, RFC 2047 words), decoded as mail-parser decodes it."""
    metadata, _defects = mime_header_view(part)
    return decode_header_part(metadata.get_filename()).strip()


def _implied_name(part: Message, content_id: str | None) -> str | None:
    """A file name carried elsewhere: the "begin" line of a uuencoded part, Content-Location
    (pages saved from a browser, MHTML) or the left of a Content-ID when it is a file name, as
    Outlook writes them."""
    location = str(part.get("Content-Location", "")).strip()
    begin = ""
    if str(part.get("Content-Transfer-Encoding", "")).strip().lower() in _UU_ENCODINGS:
        found = re.search(r"^begin [0-7]{3,4} ([^\r\n]+)", str(part.get_payload()), re.MULTILINE)
        begin = found.group(1).strip() if found else ""
    for candidate in (begin, location.rsplit("/", 1)[-1], (content_id or "").partition("@")[0]):
        if _LOOKS_LIKE_FILE.fullmatch(candidate):
            return candidate
    return None


def _forwarded(part: Message, inner: Message | None, index: int) -> ParsedAttachment:
    """A forwarded mail is a file named by its subject: random names changed on every run and
    said nothing to the agent."""
    name = _declared_name(part)
    if not name and inner is not None:
        raw_subject = inner.get("Subject")
        subject = charsets.header(str(raw_subject).encode("latin-1", "replace")) \
            if raw_subject is not None else ""
        name = f"{subject[:150]}.eml" if subject else ""
    if inner is not None:
        unspill(inner)  # a forwarded mail is kept whole, its own files in it
    payload = inner.as_bytes() if inner is not None else _payload(part)
    return ParsedAttachment(safe_filename(name, _type_name("message/rfc822", index)),
                            part.get_content_type(), payload, None)


def _payload(part: Message) -> bytes:
    """The part's bytes, its transfer encoding undone: damaged base64 as far as it goes, and
    uuencode, which the stdlib hands back still encoded when anything is off."""
    spilled = getattr(part, "spilled", None)
    if spilled is not None:  # needed whole after all (a text body, an invitation, a winmail.dat)
        return _take_back(part, spilled)
    encoding = str(part.get("Content-Transfer-Encoding", "")).strip().lower()
    raw = part.get_payload(decode=False)
    if isinstance(raw, list):  # a message/* part that is not a mail: keep its bytes
        return b"".join(item.as_bytes() for item in raw if isinstance(item, Message))
    if encoding == "base64":
        return lenient_base64(raw or "")
    if encoding in _UU_ENCODINGS:
        text = (raw or "").encode("latin-1", "replace").decode("latin-1")
        found = _UUENCODED.search(text.replace("\r\n", "\n").strip())
        if found:
            return uudecode_lines(found.group(2))
    return part.get_payload(decode=True) or b""


def uudecode_lines(block: str) -> bytes:
    """The bytes of uuencoded lines (between "begin" and "end"), damaged lines as far as they
    decode, as encoders pad oddly."""
    data = bytearray()
    for line in block.splitlines():
        try:
            data += binascii.a2b_uu(line)
        except binascii.Error:
            with contextlib.suppress(binascii.Error, IndexError):
                data += binascii.a2b_uu(line[: ((ord(line[0]) - 32) & 63) * 4 // 3 + 1])
    return bytes(data)


def uudecode_text(text: str) -> tuple[str, list[ParsedAttachment]]:
    """Files uuencoded inside a plain-text body (old Outlook Express, scripts) become
    attachments, and leave the text."""
    files: list[ParsedAttachment] = []

    def take(found: re.Match[str]) -> str:
        files.append(ParsedAttachment(safe_filename(found.group(1).strip()),
                                      "application/octet-stream",
                                      uudecode_lines(found.group(2)), None))
        return ""

    return _UUENCODED.sub(take, text).strip(), files


def lenient_base64(payload: str | bytes) -> bytes:
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


def safe_filename(name: str, fallback: str = "adjunto") -> str:
    """A filename that is safe on every disk and in every header: no path, no control chars."""
    name = unicodedata.normalize("NFC", name or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = _UNSAFE_FILENAME.sub("_", name).strip(" .")
    return name[:200] or fallback


def _type_name(kind: str, index: int) -> str:
    """A name for a file that came with none, from its declared type: ``adjunto-2.mov``."""
    extension = _EXTENSIONS.get(kind) or mimetypes.guess_extension(kind, strict=False) or ".bin"
    return f"adjunto-{index + 1}{extension}"


def _guess_type(name: str) -> str:
    return mimetypes.guess_type(name, strict=False)[0] or "application/octet-stream"


def _is_tnef(kind: str, name: str) -> bool:
    return kind in tnef.TYPES or name.lower() == "winmail.dat"
