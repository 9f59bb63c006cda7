"""Bytes in a declared, wrong or missing charset → readable text. Pure.

Mail says which charset it uses, except when it does not (raw 8-bit headers, "text/plain" with
no charset) or lies. Declared charsets are tried first; undeclared bytes are ISO-2022-JP if its
escape sequences are there, UTF-8 if they are valid UTF-8, then the charset the sender declared
elsewhere in the mail (raw 8-bit headers are in the body's charset), else the legacy charset in
which they read most like words: lower-case letters in one script, not a mix of scripts inside
a word (the mojibake look).
"""

from __future__ import annotations

import codecs
import re
import unicodedata
from email.header import decode_header

# The legacy charsets seen in Spanish- and English-speaking mail, plus the Cyrillic ones that
# the other helpdesks' trackers complain about.
CANDIDATES = ("cp1252", "iso-8859-15", "koi8-r", "cp1251", "iso-8859-2", "mac_roman")
SAMPLE = 16384
_WORD = re.compile(r"\w+", re.UNICODE)
_ALIASES = {"unknown-8bit": None, "x-unknown": None, "us-ascii": "ascii", "ks_c_5601-1987": "cp949",
            "gb2312": "gb18030", "gbk": "gb18030"}
# ISO-2022-JP and its extensions, all read by _iso2022jp; "ascii" too, as some Japanese mailers
# declare us-ascii (the bytes are 7-bit) and send JIS behind escape sequences.
_ISO2022JP = frozenset({"iso2022_jp", "iso2022_jp_1", "iso2022_jp_2", "iso2022_jp_2004",
                        "iso2022_jp_3", "iso2022_jp_ext", "cp50220", "cp50221", "cp50222"})
_JIS_ESCAPES = (b"\x1b$B", b"\x1b$@")  # JIS X 0208 designations (RFC 1468)


def decode(data: bytes, declared: str | None = None, hint: str | None = None) -> str:
    """Text from bytes: the declared charset if it decodes them, else the best reading;
    ``hint`` is a charset the mail declares elsewhere, tried after UTF-8 for undeclared bytes."""
    charset = _normalize(declared)
    if charset in _ISO2022JP or (charset in {None, "ascii"} and _has_jis_escapes(data)):
        return _iso2022jp(data, charset if charset in _ISO2022JP else "iso2022_jp")
    if charset:
        try:
            return data.decode(charset)
        except (UnicodeDecodeError, LookupError):
            pass
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    hinted = _normalize(hint)
    if hinted and hinted not in _ISO2022JP:
        try:
            return data.decode(hinted)
        except (UnicodeDecodeError, LookupError):
            pass
    # Judge on a sample: scoring every character of a multi-megabyte body (or of a binary file
    # sent as text) would cost seconds and hundreds of MB for the same answer.
    sample = data[:SAMPLE]
    best = max(CANDIDATES, key=lambda c: _readability(sample.decode(c, "replace")))
    return data.decode(best, "replace")


def header(raw_value: bytes, hint: str | None = None) -> str:
    """A header value: RFC 2047 encoded words decoded, raw 8-bit bytes read with ``hint`` (the
    charset the body declares: a mailer that puts raw GBK or Shift_JIS in its headers writes its
    body in it too) before the guessing list, one line."""
    text = raw_value.decode("latin-1")  # a lossless carrier for decode_header
    try:
        parts = decode_header(text)
    except Exception:  # a malformed encoded word: read the value as plain bytes
        parts = [(raw_value, None)]
    pieces: list[tuple[bytes, str | None]] = []
    for chunk, charset in parts:
        data = chunk.encode("latin-1") if isinstance(chunk, str) else chunk
        # Adjacent words in one charset are joined before decoding: a multi-byte character may
        # be split across two encoded words (common with GB2312 and Shift_JIS senders).
        if pieces and pieces[-1][1] == charset:
            pieces[-1] = (pieces[-1][0] + data, charset)
        else:
            pieces.append((data, charset))
    decoded = "".join(decode(data, charset, hint) for data, charset in pieces)
    return " ".join(decoded.split())


def _has_jis_escapes(data: bytes) -> bool:
    return any(escape in data for escape in _JIS_ESCAPES)


def _iso2022jp(data: bytes, codec: str) -> str:
    """ISO-2022-JP, whatever the sender's extensions: the declared codec, then Python's wider
    ones, then the Microsoft reading (CP50220) that Outlook and Japanese phones write, with the
    NEC special row (①, Ⅰ, ㈱) and the NEC-selected IBM extensions (髙, 﨑) that none of
    Python's ISO-2022-JP codecs knows."""
    for name in dict.fromkeys((codec, "iso2022_jp_2", "iso2022_jp_ext", "iso2022_jp_3")):
        try:
            return data.decode(name)
        except (UnicodeDecodeError, LookupError):
            continue
    try:
        return _jis_as_cp932(data, "strict")
    except (UnicodeDecodeError, ValueError):
        return _jis_as_cp932(data, "replace")


# Escape sequence → what follows it (RFC 1468, plus JIS X 0201 katakana as CP50221 sends it).
_JIS_MODES = {b"\x1b(B": "ascii", b"\x1b(J": "ascii", b"\x1b$B": "jis", b"\x1b$@": "jis",
              b"\x1b(I": "kana"}


def _jis_as_cp932(data: bytes, errors: str) -> str:
    """Move each two-byte JIS code to its Shift_JIS place and read the whole as cp932, which
    holds every character Microsoft's ISO-2022-JP can send."""
    out = bytearray()
    mode, i = "ascii", 0
    while i < len(data):
        byte = data[i]
        if byte == 0x1B:
            mode = _JIS_MODES.get(data[i:i + 3], "unknown")
            if mode == "unknown" and errors == "strict":
                raise ValueError(f"unknown ISO-2022 escape {data[i:i + 4]!r}")
            i += 3
        elif mode == "jis" and byte not in b"\r\n" and i + 1 < len(data):
            out += _jis_to_sjis(byte, data[i + 1], errors)
            i += 2
        else:
            out.append(byte + 0x80 if mode == "kana" and 0x21 <= byte <= 0x5F else byte)
            i += 1
    return out.decode("cp932", errors)


def _jis_to_sjis(first: int, second: int, errors: str) -> bytes:
    if not (0x21 <= first <= 0x7E and 0x21 <= second <= 0x7E):
        if errors == "strict":
            raise ValueError(f"not a JIS code: {first:#x} {second:#x}")
        return b"?"
    lead = (first + 1) // 2 + (0x70 if first <= 0x5E else 0xB0)
    # Odd JIS rows take the low half of a Shift_JIS lead byte, skipping 0x7F; even ones the top.
    trail = second + 0x1F + (second >= 0x60) if first % 2 else second + 0x7E
    return bytes((lead, trail))


def _normalize(charset: str | None) -> str | None:
    if not charset:
        return None
    name = charset.strip().strip('"').lower()
    if name in _ALIASES:
        return _ALIASES[name]
    try:
        return codecs.lookup(name).name
    except LookupError:
        return None


def _readability(text: str) -> float:
    score = 0.0
    for word in _WORD.findall(text):
        scripts = {_script(ch) for ch in word if ch.isalpha()}
        if len(scripts) > 1:
            score -= 3 * len(word)
        score += sum(1 for ch in word[1:] if ch.islower())
        score -= sum(1 for ch in word[1:] if ch.isupper())
    score -= 5 * sum(1 for ch in text if unicodedata.category(ch) in {"Cc", "Co", "Cn"}
                     and ch not in "\r\n\t")
    return score


def _script(ch: str) -> str:
    name = unicodedata.name(ch, "")
    return name.split(" ", 1)[0] if name else "?"
