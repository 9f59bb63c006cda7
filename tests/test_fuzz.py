"""Bounded fuzzing: damaged real mails never crash ingestion, and every one gets an outcome."""

from __future__ import annotations

import random

from sqlmodel import Session, select

from gateway.inbound.ingest import OUTCOMES
from storage import inbound
from storage.models import InboundMessage
from tests.conftest import CORPUS, MAILS

SEED = 20261124
COUNT = 120


def seeds() -> list[bytes]:
    files = [p for p in sorted(CORPUS.rglob("*")) if p.is_file() and p.name != "LICENSE"]
    files += sorted(MAILS.glob("*.eml"))
    return [p.read_bytes() for p in files if p.stat().st_size < 2_000_000]


def truncate(rng: random.Random, raw: bytes) -> bytes:
    return raw[: rng.randrange(0, max(1, len(raw)))]


def random_bytes(rng: random.Random, raw: bytes) -> bytes:
    data = bytearray(raw)
    for _ in range(rng.randrange(1, 40)):
        if data:
            data[rng.randrange(len(data))] = rng.randrange(256)
    return bytes(data)


def header_damage(rng: random.Random, raw: bytes) -> bytes:
    blank = b"\r\n\r\n" if b"\r\n\r\n" in raw else b"\n\n"
    head, sep, body = raw.partition(blank)
    lines = head.splitlines()
    for _ in range(rng.randrange(1, 6)):
        if not lines:
            break
        i = rng.randrange(len(lines))
        choice = rng.randrange(5)
        if choice == 0:
            lines[i] = lines[i].replace(b":", b"", 1)  # header without colon
        elif choice == 1:
            lines[i] = lines[i] + b"\x00\xff=?utf-8?q?=ZZ?="  # NUL and a broken encoded word
        elif choice == 2:
            lines.insert(i, b"Content-Type: multipart/mixed; boundary=")  # empty boundary
        elif choice == 3:
            lines.insert(i, b"From: " + b"<" * 500)
        else:
            del lines[i]
    return b"\r\n".join(lines) + sep + body


def deep_nesting(rng: random.Random, raw: bytes) -> bytes:
    depth = rng.randrange(50, 400)
    head = b"From: maria.garcia@ferreteria-lopez.es\r\nSubject: nested\r\nMIME-Version: 1.0\r\n"
    parts = [b"Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n" % (i, i)
             for i in range(depth)]
    tail = [b"\r\n--b%d--\r\n" % i for i in reversed(range(depth))]
    return head + b"".join(parts) + b"Content-Type: text/plain\r\n\r\nhola" + b"".join(tail)


def huge_headers(rng: random.Random, raw: bytes) -> bytes:
    many = b"".join(b"X-Junk-%d: %s\r\n" % (i, b"a" * 200) for i in range(rng.randrange(500, 3000)))
    long_subject = b"Subject: " + b"=?utf-8?q?" + b"=C3=B1" * 20000 + b"?=\r\n"
    return long_subject + many + raw


MUTATIONS = [truncate, random_bytes, header_damage, deep_nesting, huge_headers]


def test_mutated_mails_never_crash_and_all_get_an_outcome(parts):
    # 120 seeded mutations of real mails: each is kept and ends with a known outcome.
    rng = random.Random(SEED)
    originals = seeds()
    ids = []
    for _ in range(COUNT):
        mutate = rng.choice(MUTATIONS)
        raw = mutate(rng, rng.choice(originals))
        queue_id = inbound.enqueue(parts.engine, parts.blobs, raw, channel="file",
                                   source=mutate.__name__)
        outcome = parts.ingestor.process_next(queue_id)
        assert outcome is not None and outcome.outcome in OUTCOMES, (mutate.__name__, outcome)
        ids.append(queue_id)
    with Session(parts.engine) as session:
        rows = session.exec(select(InboundMessage)).all()
    assert len(rows) == COUNT
    assert {row.state for row in rows} <= {"done", "failed"}
    assert all(row.outcome in OUTCOMES for row in rows)
