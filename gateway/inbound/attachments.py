"""Attachment checks: type recognized by content (libmagic), allow-list and size limit.

The customer guide allows "jpg, jpeg, png, gif, pdf, xls, xlsx, doc, docx, xml, txt o zip de un
máximo 5mb cada uno". The name a sender gives a file proves nothing, so the type is read from its
bytes; a refused file is recorded with the reason (``reason`` is a stable code that templates turn
into words in the customer's language).
"""

from __future__ import annotations

from dataclasses import dataclass

import magic

DEFAULT_MAX_SIZE = 5 * 1024 * 1024

# Detected MIME type → the guide's name for it. Office files are zip or OLE2 containers, and
# libmagic names them by container when it cannot see inside, so those names are allowed too.
ALLOWED_TYPES: dict[str, str] = {
    "image/jpeg": "jpg",
    "image/png": "png",
    "image/gif": "gif",
    "application/pdf": "pdf",
    "application/vnd.ms-excel": "xls",
    "application/msword": "doc",
    "application/cdfv2": "doc/xls",
    "application/x-ole-storage": "doc/xls",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": "xlsx",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "docx",
    "text/xml": "xml",
    "application/xml": "xml",
    "text/plain": "txt",
    "text/csv": "txt",
    "application/zip": "zip",
}

REASON_TYPE = "type_not_allowed"
REASON_SIZE = "too_large"
REASON_EMPTY = "empty"


@dataclass(frozen=True)
class Verdict:
    accepted: bool
    detected_type: str
    reason: str | None


def check(payload: bytes, max_size: int = DEFAULT_MAX_SIZE) -> Verdict:
    """Decide whether a file may be kept; never raises."""
    return judge(payload[:65536], len(payload), max_size)


def judge(head: bytes, size: int, max_size: int = DEFAULT_MAX_SIZE) -> Verdict:
    """``check`` for a file known by its first 64 KiB and its size (one written to disk as it
    was decoded: storage.blobs.BlobWriter)."""
    detected = detect_type(head)
    if not size:
        return Verdict(False, detected, REASON_EMPTY)
    if size > max_size:
        return Verdict(False, detected, REASON_SIZE)
    if detected not in ALLOWED_TYPES:
        return Verdict(False, detected, REASON_TYPE)
    return Verdict(True, detected, None)


def detect_type(payload: bytes) -> str:
    # libmagic needs only the start of a file; 64 KiB covers zip-based Office detection.
    try:
        return magic.from_buffer(payload[:65536], mime=True).lower()
    except magic.MagicException:
        return "application/octet-stream"
