"""Content-addressed file store (sha256) for raw mails and attachments, on a local or shared disk.

A blob is written to a temporary file, flushed to disk, then renamed into place, so a reader never
sees half a file and a crash never leaves a truncated blob under its final name. Equal content is
stored once. A blob too large to hold in memory at once (a 25 MB mail as it arrives over SMTP, a
large attachment as it is decoded) is written as it comes (``BlobWriter``): hashed and written
chunk by chunk to a file under ``.incoming``, then stored under its key.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from pathlib import Path
from typing import BinaryIO

KEY_LENGTH = 64
INCOMING = ".incoming"  # blobs being written (BlobWriter); never a key's folder (two hex digits)


class BlobStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, key: str) -> Path:
        if len(key) != KEY_LENGTH or not all(c in "0123456789abcdef" for c in key):
            raise ValueError(f"not a blob key: {key!r}")
        return self.root / key[:2] / key[2:4] / key

    def put(self, data: bytes) -> str:
        """Store ``data`` durably and return its key (the sha256 hex digest)."""
        writer = self.writer()
        writer.write(data)
        return writer.commit()

    def writer(self) -> BlobWriter:
        """A blob to write chunk by chunk: ``write``, then ``commit`` (or ``discard``)."""
        return BlobWriter(self)

    def forget_incoming(self, older_than: float = 86400.0) -> int:
        """Delete what writers left behind in ``.incoming`` (a process killed mid-write) once
        older than ``older_than`` seconds; returns how many files."""
        folder = self.root / INCOMING
        limit = time.time() - older_than
        removed = 0
        for entry in folder.glob(".tmp-*") if folder.is_dir() else ():
            try:
                if entry.stat().st_mtime < limit:
                    entry.unlink()
                    removed += 1
            except FileNotFoundError:  # another process got there first
                continue
        return removed

    def get(self, key: str) -> bytes:
        return self.path(key).read_bytes()

    def exists(self, key: str) -> bool:
        return self.path(key).exists()


class BlobWriter:
    """One blob written as it arrives, never whole in memory: ``write`` hashes each chunk and
    keeps it, the first MEMORY_MAX bytes in memory and, past them, all of it in a temporary
    file (no fsync yet: cheap enough for an event loop's thread; a small mail, most of them,
    never opens a file there: creating one can wait on the disk's journal while other
    threads sync); ``commit`` writes what is still in memory, syncs it and renames it under
    its key (or drops it when that content is already stored) and returns the key.
    ``discard`` (or a failed commit) removes it. Not thread-safe: one writer, one caller at a
    time."""

    def __init__(self, store: BlobStore) -> None:
        self.store = store
        self.size = 0
        self._hash = hashlib.sha256()
        self._chunks: list[bytes] = []  # while the blob is small: its bytes, in memory
        self._file: BinaryIO | None = None
        self._tmp: Path | None = None
        self._head = b""
        self._done = False  # committed or discarded: its temporary name is no longer its own

    @property
    def key(self) -> str:
        return self._hash.hexdigest()

    @property
    def head(self) -> bytes:
        """The first 64 KiB written (enough for libmagic to tell a file's type)."""
        return self._head

    def write(self, chunk: bytes) -> None:
        if len(self._head) < HEAD:
            self._head += chunk[:HEAD - len(self._head)]
        self._hash.update(chunk)
        self.size += len(chunk)
        if self._file is None and self.size <= MEMORY_MAX:
            self._chunks.append(chunk)
            return
        handle = self._file or self._open()
        handle.write(chunk)

    def _open(self) -> BinaryIO:
        """The temporary file, with what was kept in memory so far."""
        folder = self.store.root / INCOMING
        folder.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=folder, prefix=".tmp-")
        self._tmp = Path(name)
        self._file = handle = os.fdopen(fd, "wb")
        for kept in self._chunks:
            handle.write(kept)
        self._chunks = []
        return handle

    def read(self) -> bytes:
        """Everything written so far (a small blob someone needs whole after all)."""
        if self._file is None:
            return b"".join(self._chunks)
        assert self._tmp is not None
        self._file.flush()
        return self._tmp.read_bytes()

    def commit(self) -> str:
        """Durably stored under its key, which is returned; the writer is done."""
        key = self.key
        target = self.store.path(key)
        try:
            if target.exists():
                self.discard()
                return key
            handle = self._file or self._open()
            handle.flush()
            os.fsync(handle.fileno())
            handle.close()
            target.parent.mkdir(parents=True, exist_ok=True)
            assert self._tmp is not None
            os.replace(self._tmp, target)
        except BaseException:
            self.discard()
            raise
        self._done = True
        _fsync_dir(target.parent)
        return key

    def discard(self) -> None:
        """Drop what was written; nothing once committed (its name may be another's now)."""
        if self._done:
            return
        self._done = True
        self._chunks = []
        if self._file is not None:
            self._file.close()
        if self._tmp is not None:
            self._tmp.unlink(missing_ok=True)


MEMORY_MAX = 1024 * 1024  # a blob's bytes kept in memory before it goes to its file
HEAD = 65536


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
