"""Files a customer uploads in the web area: the same rules as mail attachments, and the files
of a form that must be sent again kept without uploading them twice.

A file passes exactly the checks of ``gateway.inbound.attachments`` (type read from its bytes by
libmagic against the allow-list, size limit) and gets a safe name as a mail's does
(``gateway.inbound.parse.safe_filename``); accepted files go to the content-addressed blob
store at once. When a form comes back with an error in another field, the accepted files are
listed in it under a signed token, so the customer does not have to pick them again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

from itsdangerous import BadSignature, URLSafeTimedSerializer

from gateway.inbound import attachments
from gateway.inbound.parse import safe_filename
from gateway.inbound.prepare import PreparedFile
from storage.blobs import BlobStore

KEPT_SALT = "helpdesk-kept-upload"
KEPT_HOURS = 24
MAX_FILES = 20  # per form


@dataclass(frozen=True)
class Upload:
    """One file as the browser sent it."""

    filename: str
    data: bytes


def check_and_store(blobs: BlobStore, uploads: Iterable[Upload],
                    max_size: int = attachments.DEFAULT_MAX_SIZE) -> list[PreparedFile]:
    """Each upload checked; accepted ones stored. Empty file inputs (nothing chosen) are
    skipped; a chosen file that is empty is refused as such."""
    files = []
    for upload in uploads:
        if not upload.filename and not upload.data:
            continue
        verdict = attachments.check(upload.data, max_size)
        key = blobs.put(upload.data) if verdict.accepted else None
        files.append(PreparedFile(
            filename=safe_filename(upload.filename), type=verdict.detected_type,
            size=len(upload.data), sha256=key or hashlib.sha256(upload.data).hexdigest(),
            accepted=verdict.accepted, reason=verdict.reason, storage_key=key, content_id=None))
    return files


class KeptFiles:
    """Signed references to accepted files already in the blob store."""

    def __init__(self, secret: str) -> None:
        self._serializer = URLSafeTimedSerializer(secret, salt=KEPT_SALT)

    def token(self, file: PreparedFile) -> str:
        return self._serializer.dumps([file.storage_key, file.filename, file.type, file.size])

    def read(self, tokens: Iterable[str], blobs: BlobStore) -> list[PreparedFile]:
        """The files the tokens name; tampered, expired or vanished ones are dropped."""
        files = []
        for token in tokens:
            try:
                key, filename, detected, size = self._serializer.loads(
                    token, max_age=KEPT_HOURS * 3600)
                if not blobs.exists(key):
                    continue
            except (BadSignature, ValueError, TypeError):
                continue
            files.append(PreparedFile(filename=str(filename), type=str(detected), size=int(size),
                                      sha256=key, accepted=True, reason=None, storage_key=key,
                                      content_id=None))
        return files
