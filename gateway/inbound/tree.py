"""A multipart mail's MIME tree, found by searching for its boundaries. Pure.

The stdlib's feed parser reads a mail line by line and tests every line against every
enclosing boundary: a 400 KB attachment is 5,000 lines of Python, most of the cost of parsing
such a mail. ``build`` makes the same tree (the same ``Message`` objects, headers, payloads,
preambles and epilogues, with the same factory) by searching the text for the delimiter lines
(RFC 2046 §5.1.1) with one regular expression per level, and hands each part's header block to
the stdlib's parser. It only takes mails whose structure leaves no room for interpretation:
anything the feed parser would note as a defect or read in a special way (a missing or
doubled boundary, a header block without its blank line, message/* parts, a digest, bare CR
line ends) returns None, and the caller uses the feed parser. tests/test_tree.py checks that
the two trees are equal on every fixture and corpus mail.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from email.feedparser import FeedParser
from email.message import Message
from email.policy import compat32
from itertools import pairwise
from typing import NamedTuple

# The feed parser's own patterns (email.feedparser): what a header line is, what ends a line.
_HEADER_LINE = re.compile(r"^(From |[\041-\071\073-\176]*:|[\t ])")
_BARE_CR = re.compile(rb"\r(?!\n)")
_DELIMITER_REST = re.compile(r"(--)?[ \t]*\r?")  # after "--boundary", to the line's end
MAX_DEPTH = 20  # deeper nesting is left to the feed parser (which refuses what is too deep)

Factory = Callable[..., Message]


def build(raw: bytes, factory: Factory) -> Message | None:
    """The message tree of ``raw`` (a whole mail, from its first header) as
    ``BytesFeedParser(_factory=factory)`` would build it, or None if ``raw`` is not a
    well-formed multipart mail (or not a multipart at all)."""
    if _BARE_CR.search(raw):  # it also ends a line for the feed parser
        return None
    text = raw.decode("ascii", "surrogateescape")  # as BytesFeedParser.feed
    try:
        return _part(text, factory, None, 0, top=True)
    except _Unusual:
        return None


class _Unusual(Exception):
    """Something the feed parser reads in a way of its own: leave the mail to it."""


def _part(text: str, factory: Factory, parent: Message | None, depth: int, *,
          top: bool = False) -> Message:
    if depth > MAX_DEPTH:
        raise _Unusual
    head_end, body_start = _header_block(text)
    part = _headers(text[:body_start], factory)
    if parent is not None:
        parent.attach(part)
    body = text[body_start:]
    maintype = part.get_content_maintype()
    if maintype == "multipart":
        _multipart(part, body, factory, depth)
    elif top or maintype == "message":
        raise _Unusual  # a single-part mail costs the feed parser little; message/* is its own
    else:
        part.set_payload(body)
    return part


def _header_block(text: str) -> tuple[int, int]:
    """Where the header lines end, and where the body starts (after the blank line)."""
    position = 0
    while position < len(text):
        end = text.find("\n", position)
        end = len(text) if end < 0 else end + 1
        line = text[position:end]
        if not _HEADER_LINE.match(line):
            if line not in ("\n", "\r\n"):  # the feed parser: MissingHeaderBodySeparatorDefect
                raise _Unusual
            return position, end
        position = end
    return position, position  # headers up to the end: an empty body


def _headers(block: str, factory: Factory) -> Message:
    """A part with the headers of ``block``, parsed by the stdlib exactly as in a whole mail."""
    parser = FeedParser(_factory=factory, policy=compat32)
    parser._set_headersonly()  # the rest (nothing here) would be the payload
    parser.feed(block)
    part = parser.close()
    if part.defects or part.get_unixfrom():
        raise _Unusual
    return part


def _multipart(part: Message, body: str, factory: Factory, depth: int) -> None:
    boundary = part.get_boundary()
    if (boundary is None or part.get_content_type() == "multipart/digest"
            or str(part.get("content-transfer-encoding", "8bit")).lower()
            not in ("7bit", "8bit", "binary")):
        raise _Unusual
    found = _delimiters(body, "--" + boundary)
    if len(found) < 2 or found[0].close or not found[-1].close:
        raise _Unusual  # no part, no opening delimiter, or no close delimiter
    part.set_payload(None)
    if found[0].start:  # RFC 2046: the line end before a delimiter belongs to it
        part.preamble = _without_eol(body[: found[0].start])
    for opening, closing in pairwise(found):
        if opening.end >= closing.start:
            raise _Unusual  # two delimiters in a row: the feed parser skips the empty part
        child = _part(body[opening.end:closing.start], factory, part, depth + 1)
        if child.get_content_maintype() == "multipart":
            epilogue = child.epilogue
            child.epilogue = None if epilogue == "" else _without_eol(epilogue)
        elif isinstance(child._payload, str):  # as set, not get_payload()'s charset-decoded view
            child._payload = _without_eol(child._payload)  # type: ignore[attr-defined]
    part.epilogue = body[found[-1].end:]


class _Delimiter(NamedTuple):
    start: int  # where its line starts
    end: int  # where its line ends, after the line end
    close: bool  # "--boundary--": the last one


def _delimiters(body: str, separator: str) -> list[_Delimiter]:
    """The delimiter lines of ``body`` up to the close delimiter: lines that are the separator,
    "--" for the close one, then blanks (the feed parser's boundary pattern)."""
    found: list[_Delimiter] = []
    at = body.find(separator)
    while at >= 0:
        line_end = body.find("\n", at)
        line_end = len(body) if line_end < 0 else line_end + 1
        rest = _DELIMITER_REST.fullmatch(body, at + len(separator), line_end - (
            body[line_end - 1:line_end] == "\n"))
        if rest and (at == 0 or body[at - 1] == "\n"):
            found.append(_Delimiter(at, line_end, bool(rest.group(1))))
            if found[-1].close:  # what follows is the epilogue
                break
        at = body.find(separator, line_end if rest else at + 1)
    return found


def _without_eol(text: str) -> str:
    """``text`` less one line end at its end."""
    if text.endswith("\r\n"):
        return text[:-2]
    return text[:-1] if text.endswith(("\n", "\r")) else text
