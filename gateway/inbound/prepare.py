"""The CPU part of ingesting one mail, runnable in a worker process: parse, check, split.

Parsing (mail-parser), type detection (libmagic) and quote splitting run here, outside any
database transaction, in the ingest worker processes (gateway.worker), off the SMTP process.
Accepted attachments are written to the blob store here (content-addressed and idempotent, so a
mail prepared twice stores nothing twice); only their metadata goes on, never their bytes.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from pathlib import Path

from gateway.inbound import attachments
from gateway.inbound.parse import ParsedAttachment, ParsedMail, parse
from gateway.inbound.quotes import split_reply
from gateway.inbound.sender_auth import Verdict
from storage.blobs import BlobStore
from storage.tickets import FileRecord

# Detached signatures of signed mail (RFC 3156, RFC 8551): telling the customer that their
# signature was "refused" would be nonsense.
SIGNATURES = frozenset({"application/pgp-signature", "application/pkcs7-signature",
                        "application/x-pkcs7-signature"})


# A mail's file once checked (and stored if accepted): the record its message keeps.
PreparedFile = FileRecord


@dataclass(frozen=True)
class Prepared:
    mail: ParsedMail  # without attachment payloads
    files: tuple[PreparedFile, ...]
    # The text without its quoted history, used when the mail is a reply: worked out here for
    # a mail that says it answers one (In-Reply-To, References, a [#N] tag); None for the
    # others, which the rules rarely thread (``reply_text`` then works it out).
    new_text: str | None
    auth: Verdict | None = None  # the sender's authentication, when judged (Ingestor.prepare)


def prepare(raw: bytes | Path, storage_dir: str | Path, max_attachment_size: int) -> Prepared:
    """``raw``: the mail's bytes, or its file (a large one is then read as it is parsed, and
    its large files decoded straight to the blob store: never whole in memory)."""
    blobs = BlobStore(Path(storage_dir))
    mail = parse(raw, spill=blobs.writer)
    try:
        files = [_file(blobs, item, max_attachment_size) for item in mail.attachments
                 # a signature is not a file the customer sent: kept in the raw mail only
                 if item.declared_type not in SIGNATURES]
    finally:
        for item in mail.attachments:  # spilled files neither stored nor refused yet
            if not isinstance(item.payload, bytes):
                item.payload.discard()
    return Prepared(
        mail=dataclasses.replace(mail, attachments=()),
        files=tuple(files),
        new_text=split_reply(mail.text).new if _answers(mail) else None,
    )


def _file(blobs: BlobStore, item: ParsedAttachment, max_size: int) -> PreparedFile:
    """One file checked, and stored if accepted."""
    payload = item.payload
    if isinstance(payload, bytes):
        verdict = attachments.check(payload, max_size)
        key = blobs.put(payload) if verdict.accepted else None
        size, sha256 = len(payload), key or hashlib.sha256(payload).hexdigest()
    else:  # decoded to disk as it was parsed: stored by renaming it, or dropped
        verdict = attachments.judge(payload.head, payload.size, max_size)
        key = payload.commit() if verdict.accepted else None
        size, sha256 = payload.size, payload.key
    return PreparedFile(
        filename=item.filename, type=verdict.detected_type, size=size, sha256=sha256,
        accepted=verdict.accepted, reason=verdict.reason, storage_key=key,
        content_id=item.content_id,
    )


def reply_text(prepared: Prepared) -> str:
    """The mail's text without its quoted history."""
    if prepared.new_text is not None:
        return prepared.new_text
    return split_reply(prepared.mail.text).new


def _answers(mail: ParsedMail) -> bool:
    return bool(mail.in_reply_to or mail.references or "[#" in mail.subject)
