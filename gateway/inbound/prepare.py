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
from gateway.inbound.parse import ParsedMail, parse
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


def prepare(raw: bytes, storage_dir: str | Path, max_attachment_size: int) -> Prepared:
    blobs = BlobStore(Path(storage_dir))
    mail = parse(raw)
    files = []
    for item in mail.attachments:
        if item.declared_type in SIGNATURES:
            continue  # a signature is not a file the customer sent: kept in the raw mail only
        verdict = attachments.check(item.payload, max_attachment_size)
        key = blobs.put(item.payload) if verdict.accepted else None
        files.append(PreparedFile(
            filename=item.filename, type=verdict.detected_type, size=len(item.payload),
            sha256=key or hashlib.sha256(item.payload).hexdigest(), accepted=verdict.accepted,
            reason=verdict.reason, storage_key=key, content_id=item.content_id,
        ))
    return Prepared(
        mail=dataclasses.replace(mail, attachments=()),
        files=tuple(files),
        new_text=split_reply(mail.text).new if _answers(mail) else None,
    )


def reply_text(prepared: Prepared) -> str:
    """The mail's text without its quoted history."""
    if prepared.new_text is not None:
        return prepared.new_text
    return split_reply(prepared.mail.text).new


def _answers(mail: ParsedMail) -> bool:
    return bool(mail.in_reply_to or mail.references or "[#" in mail.subject)
