"""The files of a posted form: read (at most what the size limit needs), checked and stored by
``gateway.uploads``, plus the files a form sent back with an error kept from before."""

from __future__ import annotations

from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request

from gateway.inbound.prepare import PreparedFile
from gateway.uploads import MAX_FILES, Upload, check_and_store

FILES_FIELD = "files"
KEPT_FIELD = "kept"


def received_files(request: Request, form: FormData) -> list[PreparedFile]:
    """The form's new files (checked, accepted ones stored) and the ones it kept."""
    state = request.app.state
    limit = state.settings.max_attachment_size
    uploads = []
    for item in form.getlist(FILES_FIELD)[:MAX_FILES]:
        if isinstance(item, UploadFile):
            # One byte more than the limit is enough to know a file is too large.
            uploads.append(Upload(item.filename or "", item.file.read(limit + 1)))
    kept = [token for token in form.getlist(KEPT_FIELD) if isinstance(token, str)]
    return [*state.kept_files.read(kept[:MAX_FILES], state.blobs),
            *check_and_store(state.blobs, uploads, limit)]


def kept_tokens(request: Request, files: list[PreparedFile]) -> list[tuple[str, PreparedFile]]:
    """The accepted files of a form that goes back to the customer, each with its token."""
    kept = request.app.state.kept_files
    return [(kept.token(f), f) for f in files if f.accepted]
