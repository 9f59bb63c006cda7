"""Parsing details that the fixture mails do not pin down: large and damaged attachments, and a
large mail parsed from its file with its large parts decoded to disk (spilled) instead of memory,
which must read the same as from memory."""

from __future__ import annotations

import base64
import hashlib
import random
import re
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default
from pathlib import Path

import pytest

from gateway.inbound.parse import parse
from gateway.inbound.parts import SPILL_FROM
from gateway.inbound.parts import lenient_base64 as _lenient_base64
from gateway.inbound.prepare import prepare
from storage.blobs import INCOMING, BlobStore


def reference_decode(payload: str) -> bytes:
    """Damaged base64 read the slow, obvious way: keep the alphabet, fix the padding."""
    cleaned = re.sub(r"[^A-Za-z0-9+/]", "", payload).encode()
    if len(cleaned) % 4 == 1:
        cleaned = cleaned[:-1]
    return base64.b64decode(cleaned + b"=" * (-len(cleaned) % 4))


@pytest.mark.parametrize("damage", ["none", "stray", "no_padding", "cut", "inner_padding",
                                    "non_ascii", "blank_lines"])
def test_damaged_base64_decodes_as_far_as_it_goes(damage):
    rng = random.Random(damage)
    data = rng.randbytes(3000 + rng.randrange(3))
    encoded = base64.encodebytes(data).decode()
    damaged = {
        "none": encoded,
        "stray": encoded[:500] + "*!~" + encoded[500:1500] + "#" + encoded[1500:],
        "no_padding": encoded.rstrip().rstrip("="),
        "cut": encoded[:-7],
        "inner_padding": encoded[:800] + "==\n" + encoded[800:],
        "non_ascii": encoded[:100] + "ñ€" + encoded[100:],
        "blank_lines": encoded.replace("\n", "\r\n\r\n"),
    }[damage]
    assert _lenient_base64(damaged) == reference_decode(damaged)
    assert _lenient_base64(damaged.encode("utf-8")) == reference_decode(damaged)
    if damage in {"none", "blank_lines"}:
        assert _lenient_base64(damaged) == data


def test_large_attachments_come_out_whole():
    # Three large files in one mail (parsed from the bytes fed in chunks) come out byte-exact.
    rng = random.Random(7)
    files = [rng.randbytes(size) for size in (1_500_000, 65_535, 2_000_001)]
    mail = EmailMessage()
    mail["From"] = "Ana <ana@example.com>"
    mail["Subject"] = "Ficheros"
    mail.set_content("Adjunto los ficheros.\r\n")
    for number, data in enumerate(files):
        mail.add_attachment(data, maintype="application", subtype="octet-stream",
                            filename=f"f{number}.bin")
    parsed = parse(mail.as_bytes())
    assert [a.payload for a in parsed.attachments] == files
    assert parsed.text == "Adjunto los ficheros." and parsed.defects == ()


def big_mail(files: dict[str, bytes], *, html: str | None = None, forwarded: bytes | None = None,
             damage: bool = False) -> bytes:
    mail = EmailMessage()
    mail["From"] = "Ana <ana@example.com>"
    mail["Subject"] = "Ficheros grandes"
    mail.set_content("Adjunto los ficheros.\r\n")
    if html is not None:
        mail.add_alternative(html, subtype="html", cte="base64")
    for name, data in files.items():
        mail.add_attachment(data, maintype="application", subtype="pdf", filename=name)
    if forwarded is not None:
        mail.add_attachment(message_from_bytes(forwarded, policy=default))
    raw = mail.as_bytes()
    if damage:  # a stray character inside the last file's base64, and one line cut short
        cut = raw.rindex(b"\n", 0, len(raw) - 1000)
        raw = raw[:cut - 5] + b"*" + raw[cut:]
    return raw


def spilled_parse(tmp_path: Path, raw: bytes):
    store = BlobStore(tmp_path / "blobs")
    path = tmp_path / "mail.eml"
    path.write_bytes(raw)
    return parse(path, spill=store.writer), store


def payloads(parsed) -> list[bytes]:
    out = []
    for item in parsed.attachments:
        if isinstance(item.payload, bytes):
            out.append(item.payload)
        else:
            out.append(item.payload.read())
            item.payload.discard()
    return out


@pytest.mark.parametrize("damage", [False, True])
def test_a_large_mail_from_its_file_reads_as_from_memory(tmp_path, damage):
    # Parsed from its file with spilling, a mail with large files (and a damaged one) reads
    # exactly as parsed from memory: same text, names, bytes; the large ones were spilled,
    # the small one was not; once the spills are discarded nothing is left on disk.
    rng = random.Random(11)
    files = {"a.pdf": b"%PDF-1.4" + rng.randbytes(2_000_000), "b.pdf": rng.randbytes(40_000),
             "c.pdf": b"%PDF-1.7" + rng.randbytes(1_200_000)}
    raw = big_mail(files, damage=damage)
    expected = parse(raw)
    parsed, store = spilled_parse(tmp_path, raw)
    assert [type(a.payload) is bytes for a in parsed.attachments] == [False, True, False]
    assert parsed.text == expected.text and parsed.subject == expected.subject
    assert [a.filename for a in parsed.attachments] == [a.filename for a in expected.attachments]
    assert payloads(parsed) == [a.payload for a in expected.attachments]
    if not damage:
        assert [a.payload for a in expected.attachments] == list(files.values())
    assert not any((store.root / INCOMING).iterdir())


def test_a_large_html_body_and_a_large_forwarded_mail_are_read_back_whole(tmp_path):
    # A base64 HTML body over the spill size is decoded back for the text; a forwarded mail
    # whose own file was spilled is kept whole as its .eml, that file in it; nothing left over.
    inner_pdf = b"%PDF-1.4" + random.Random(5).randbytes(SPILL_FROM)
    inner = big_mail({"dentro.pdf": inner_pdf})
    html = "<p>" + "Hola, esto es una tabla muy larga. " * 40_000 + "</p>"
    raw = big_mail({}, html=html, forwarded=inner)
    expected = parse(raw)
    parsed, store = spilled_parse(tmp_path, raw)
    assert parsed.html == expected.html and "tabla muy larga" in parsed.html
    got = payloads(parsed)
    assert got == [a.payload for a in expected.attachments]
    eml = next(data for data, a in zip(got, parsed.attachments, strict=True)
               if a.filename.endswith(".eml"))
    assert [a.payload for a in parse(eml).attachments] == [inner_pdf]
    assert inner_pdf in got  # the forwarded mail's own file is listed too, as always
    assert not any((store.root / INCOMING).iterdir())


def test_prepare_stores_an_accepted_spilled_file_and_drops_a_refused_one(tmp_path):
    # From its file: the 2 MB PDF is under the 3 MB limit and stored (byte-exact, under its
    # hash); the 4 MB one is refused as too large, not stored, its size and hash still said.
    rng = random.Random(2)
    small = b"%PDF-1.4\n" + rng.randbytes(2_000_000)
    large = b"%PDF-1.4\n" + rng.randbytes(4_000_000)
    path = tmp_path / "mail.eml"
    path.write_bytes(big_mail({"bien.pdf": small, "grande.pdf": large}))
    prepared = prepare(path, tmp_path / "blobs", max_attachment_size=3_000_000)
    store = BlobStore(tmp_path / "blobs")
    kept, refused = prepared.files
    assert (kept.accepted, kept.type, kept.size) == (True, "application/pdf", len(small))
    assert store.get(kept.storage_key) == small
    assert (refused.accepted, refused.reason, refused.size) == (False, "too_large", len(large))
    assert refused.storage_key is None
    assert refused.sha256 == hashlib.sha256(large).hexdigest()
    stored = [p for p in store.root.rglob("*") if p.is_file()]
    assert [p.name for p in stored] == [kept.storage_key]
