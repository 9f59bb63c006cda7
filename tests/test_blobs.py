"""The blob store: content-addressed, written whole or not at all, also chunk by chunk."""

from __future__ import annotations

import os
import time

from storage.blobs import INCOMING, BlobStore


def test_a_blob_written_in_chunks_is_stored_under_its_hash_once(tmp_path):
    store = BlobStore(tmp_path)
    writer = store.writer()
    for chunk in (b"%PDF-1.4\n", b"x" * 100_000, b"%%EOF\n"):
        writer.write(chunk)
    key = writer.commit()
    whole = b"%PDF-1.4\n" + b"x" * 100_000 + b"%%EOF\n"
    assert key == store.put(whole)  # the same key as written at once
    assert store.get(key) == whole
    assert writer.size == len(whole) and writer.head == whole[:65536]
    again = store.writer()
    again.write(whole)
    assert again.commit() == key
    assert [p.name for p in store.root.rglob("*") if p.is_file()] == [key]  # nothing else left


def test_a_discarded_blob_leaves_nothing_and_old_leftovers_are_forgotten(tmp_path):
    store = BlobStore(tmp_path)
    writer = store.writer()
    writer.write(b"half a mail")
    writer.discard()
    assert not any((tmp_path / INCOMING).iterdir())
    # A process killed mid-write leaves its file: forgotten once a day old, not before.
    old, new = store.writer(), store.writer()
    old.write(b"old")
    new.write(b"new")
    day_ago = time.time() - 86401
    os.utime(old._tmp, (day_ago, day_ago))  # noqa: SLF001
    assert store.forget_incoming() == 1
    assert [p.name for p in (tmp_path / INCOMING).iterdir()] == [new._tmp.name]  # noqa: SLF001
    old.discard()
    new.discard()
