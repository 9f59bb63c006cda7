"""Parsing details that the fixture mails do not pin down: large and damaged attachments."""

from __future__ import annotations

import base64
import random
import re
from email.message import EmailMessage

import pytest

from gateway.inbound.parse import parse
from gateway.inbound.parts import lenient_base64 as _lenient_base64


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
