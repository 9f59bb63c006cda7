"""The blob store: content-addressed, written whole or not at all, also chunk by chunk."""

from __future__ import annotations

import os
import time

from storage.blobs import INCOMING, MEMORY_MAX, BlobStore


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


def test_a_small_blob_stays_in_memory_until_it_is_committed(tmp_path):
    # Most mails are small: no file is opened for them while they arrive (on the SMTP event
    # loop), only when they are committed (in a thread); a large one goes to its file.
    store = BlobStore(tmp_path)
    small = store.writer()
    small.write(b"x" * 1000)
    assert not (tmp_path / INCOMING).exists()
    assert small.read() == b"x" * 1000
    large = store.writer()
    large.write(b"y" * MEMORY_MAX)
    large.write(b"y")
    assert large.read() == b"y" * (MEMORY_MAX + 1)
    assert [p.stat().st_size for p in (tmp_path / INCOMING).iterdir()] == [MEMORY_MAX + 1]
    assert store.get(small.commit()) == b"x" * 1000
    assert store.get(large.commit()) == b"y" * (MEMORY_MAX + 1)
    assert not any((tmp_path / INCOMING).iterdir())


def test_a_discarded_blob_leaves_nothing_and_old_leftovers_are_forgotten(tmp_path):
    store = BlobStore(tmp_path)
    half = b"half a mail" * MEMORY_MAX  # past what is kept in memory: in a file
    writer = store.writer()
    writer.write(half)
    writer.discard()
    assert not any((tmp_path / INCOMING).iterdir())
    # A process killed mid-write leaves its file: forgotten once a day old, not before.
    old, new = store.writer(), store.writer()
    old.write(half)
    new.write(half)
    day_ago = time.time() - 86401
    os.utime(old._tmp, (day_ago, day_ago))  # noqa: SLF001
    assert store.forget_incoming() == 1
    assert [p.name for p in (tmp_path / INCOMING).iterdir()] == [new._tmp.name]  # noqa: SLF001
    old.discard()
    new.discard()
