"""Bytes in a declared, wrong or missing charset → readable text. Pure.

Mail says which charset it uses, except when it does not (raw 8-bit headers, "text/plain" with
no charset) or lies. Declared charsets are tried first; undeclared bytes are UTF-8 if they are
valid UTF-8, else the legacy charset in which they read most like words: lower-case letters in
one script, not a mix of scripts inside a word (the mojibake look).
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
            "gb2312": "gb18030", "gbk": "gb18030", "iso-2022-jp": "iso2022_jp_ext"}


def decode(data: bytes, declared: str | None = None) -> str:
    """Text from bytes: the declared charset if it decodes them, else the best reading."""
    charset = _normalize(declared)
    if charset:
        try:
            return data.decode(charset)
        except (UnicodeDecodeError, LookupError):
            pass
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    # Judge on a sample: scoring every character of a multi-megabyte body (or of a binary file
    # sent as text) would cost seconds and hundreds of MB for the same answer.
    sample = data[:SAMPLE]
    best = max(CANDIDATES, key=lambda c: _readability(sample.decode(c, "replace")))
    return data.decode(best, "replace")


def header(raw_value: bytes, fallback_charset: str | None = None) -> str:
    """A header value: RFC 2047 encoded words decoded, raw 8-bit bytes guessed, one line."""
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
    decoded = "".join(decode(data, charset or fallback_charset) for data, charset in pieces)
    return " ".join(decoded.split())


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
