"""gateway.inbound.tree builds the very tree the stdlib's feed parser builds, or declines.

Every fixture and corpus mail, and mails written here for the corners (preambles, epilogues,
nesting, blanks after a delimiter, 8-bit bodies), is split both ways; where ``build`` gives a
tree, every part must match the feed parser's: class, envelope line, headers, default type,
preamble, epilogue, defects and payload. The mails the feed parser reads in a way of its own
must be declined.
"""

from __future__ import annotations

from email.message import Message
from email.parser import BytesFeedParser
from functools import partial
from pathlib import Path

import pytest

from gateway.inbound import tree
from gateway.inbound.parse import TREE_FROM, _first_header, parse
from gateway.inbound.parts import SpillingMessage
from tests.conftest import CORPUS, MAILS, missing_part


def shape(message: Message) -> dict:
    """Everything the parse reads from a part, and its children's."""
    found = {
        "class": type(message).__name__,
        "unixfrom": message.get_unixfrom(),
        "headers": list(message._headers),  # type: ignore[attr-defined]
        "default type": message.get_default_type(),
        "preamble": message.preamble,
        "epilogue": message.epilogue,
        "defects": [type(defect).__name__ for defect in message.defects],
    }
    payload = message._payload  # type: ignore[attr-defined]
    if isinstance(payload, list):
        found["parts"] = [shape(part) for part in payload]
    else:
        found["payload"] = payload
    return found


def feed_parser(raw: bytes, factory=Message) -> Message:  # type: ignore[no-untyped-def]
    parser = BytesFeedParser(_factory=factory)
    parser.feed(raw)
    return parser.close()


def mails_on_disk() -> list[Path]:
    if not CORPUS.is_dir():
        missing_part(f"corpus not found at {CORPUS}")
    return sorted([p for p in CORPUS.rglob("*") if p.is_file() and p.name != "README.md"]
                  + [p for p in MAILS.iterdir() if p.is_file()])


def test_every_fixture_and_corpus_mail_splits_as_the_feed_parser_reads_it():
    built = 0
    for path in mails_on_disk():
        raw = path.read_bytes()
        raw = raw[_first_header(raw):]
        found = tree.build(raw, Message)
        if found is None:
            continue
        built += 1
        assert shape(found) == shape(feed_parser(raw)), path.name
    # Most multipart mails are plain ones: the fast way is taken, not declined across the board.
    assert built >= 100


def mail(body: str, *, content_type: str = 'multipart/mixed; boundary="frontera"',
         eol: str = "\r\n") -> bytes:
    text = (f"From: Ana <ana@example.com>\nTo: soporte@example.com\nSubject: Prueba\n"
            f"MIME-Version: 1.0\nContent-Type: {content_type}\n\n{body}")
    return text.replace("\n", eol).encode("utf-8")


WELL_FORMED = {
    "two parts": "--frontera\nContent-Type: text/plain\n\nHola\n--frontera\n"
                 "Content-Type: application/pdf\nContent-Transfer-Encoding: base64\n\n"
                 "JVBERi0xLjcK\n--frontera--\n",
    "preamble and epilogue": "Esto es MIME.\n\n--frontera\n\nsin cabeceras\n\n--frontera--\n"
                             "epílogo\nde dos líneas\n",
    "no line end after the close delimiter": "--frontera\nContent-Type: text/plain\n\nHola\n"
                                              "--frontera--",
    "blanks after a delimiter": "--frontera  \nContent-Type: text/plain\n\nHola\n--frontera--\t\n",
    "a part of headers only": "--frontera\nContent-Type: text/plain\n--frontera--\n",
    "nested": "--frontera\nContent-Type: multipart/alternative; boundary=interior\n\n"
              "antes\n--interior\nContent-Type: text/plain; charset=utf-8\n\nTexto ñ\n"
              "--interior\nContent-Type: text/html\n\n<p>Texto</p>\n--interior--\n"
              "tras el interior\n\n--frontera\nContent-Type: image/png\n\niVBOR\n--frontera--\n",
    "nested without epilogue": "--frontera\nContent-Type: multipart/alternative; "
                               "boundary=interior\n\n--interior\n\nuno\n--interior--\n"
                               "--frontera--\n",
    "a delimiter-like line inside a part": "--frontera\n\n--fronteras no es\n -- frontera\n"
                                           "--frontera--x\n--frontera--\n",
    "8-bit body": "--frontera\nContent-Type: text/plain; charset=latin-1\n\nCañón\n"
                  "--frontera--\n",
}


@pytest.mark.parametrize("eol", ["\r\n", "\n"], ids=["crlf", "lf"])
@pytest.mark.parametrize("name", sorted(WELL_FORMED))
def test_a_well_formed_multipart_is_split_as_the_feed_parser_reads_it(name, eol):
    raw = mail(WELL_FORMED[name], eol=eol)
    found = tree.build(raw, Message)
    assert found is not None, "declined a well-formed mail"
    assert shape(found) == shape(feed_parser(raw))


DECLINED = {
    "not a multipart": ("Hola\n", "text/plain"),
    "no boundary parameter": ("--frontera\n\nHola\n--frontera--\n", "multipart/mixed"),
    "no close delimiter": ("--frontera\n\nHola\n", None),
    "only a close delimiter": ("Hola\n--frontera--\n", None),
    "no opening delimiter": ("Hola\n", None),
    "two delimiters in a row": ("--frontera\n--frontera\n\nHola\n--frontera--\n", None),
    "a part's header without its blank line": ("--frontera\nContent-Type: text/plain\nHola\n"
                                               "--frontera--\n", None),
    "a forwarded mail": ("--frontera\nContent-Type: message/rfc822\n\nSubject: x\n\nHola\n"
                         "--frontera--\n", None),
    "a digest": ("--frontera\n\nSubject: x\n\nHola\n--frontera--\n",
                 'multipart/digest; boundary="frontera"'),
    "the same boundary inside": ("--frontera\nContent-Type: multipart/alternative; "
                                 "boundary=frontera\n\n--frontera\n\nHola\n--frontera--\n", None),
    "a base64 multipart": ("--frontera\n\nHola\n--frontera--\n",
                           'multipart/mixed; boundary="frontera"\nContent-Transfer-Encoding: '
                           "base64"),
}


@pytest.mark.parametrize("name", sorted(DECLINED))
def test_what_the_feed_parser_reads_its_own_way_is_declined(name):
    body, content_type = DECLINED[name]
    raw = mail(body, **({"content_type": content_type} if content_type else {}))
    assert tree.build(raw, Message) is None


def test_a_bare_carriage_return_is_declined():
    # The feed parser ends a line at a lone CR too: "\r--frontera" would be a delimiter to it.
    raw = mail("--frontera\n\nHola\r--frontera\n\nmás\n--frontera--\n", eol="\n")
    assert len(feed_parser(raw).get_payload()) == 2
    assert tree.build(raw, Message) is None
    assert tree.build(raw.replace(b"\r--", b"\n--"), Message) is not None


def test_the_spilling_factory_is_used_for_every_part():
    raw = mail(WELL_FORMED["nested"])
    factory = partial(SpillingMessage, new_spill=None)
    found = tree.build(raw, factory)
    assert found is not None
    assert {type(part) for part in found.walk()} == {SpillingMessage}
    assert shape(found) == shape(feed_parser(raw, factory))


def test_a_large_mail_reads_the_same_split_as_fed_line_by_line(monkeypatch):
    # The whole parse, not only the tree: text, HTML, files and defects agree either way.
    attachment = ("QUJD" * 19 + "\n") * 400  # 30 KB of base64
    raw = mail(WELL_FORMED["nested"].replace(
        "image/png\n\niVBOR\n", f"image/png\nContent-Transfer-Encoding: base64\n\n{attachment}"))
    assert len(raw) > TREE_FROM and tree.build(raw, Message) is not None
    split = parse(raw)
    monkeypatch.setattr(tree, "build", lambda raw, factory: None)
    assert split == parse(raw)
    assert split.attachments[0].payload == b"ABC" * 19 * 400
