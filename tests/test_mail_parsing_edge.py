"""Mails that came out wrong (issue 13, part 3), beyond what fixtures/mails/expected.json pins:
the refused-file notice, contacts by address whatever its case, names that stay the same, bytes
that decode whole, and the readings the fixtures cannot show on their own."""

from __future__ import annotations

import binascii
import json
from email import message_from_bytes

import pytest
from sqlmodel import Session, col, select

from gateway.inbound import charsets, invitation
from gateway.inbound.parse import parse
from gateway.inbound.parts import uudecode_lines
from gateway.workflow import untagged
from storage import inbound
from storage.models import Contact, Notification
from tests.conftest import load_mail


def ingest_raw(parts, raw: bytes, source: str):
    queue_id = inbound.enqueue(parts.engine, parts.blobs, raw, channel="file", source=source)
    outcome = parts.ingestor.process_next(queue_id)
    assert outcome is not None
    return outcome


def fixture_file(fixture: str, kind: str) -> bytes:
    message = message_from_bytes(load_mail(fixture))
    for part in message.walk():
        if part.get_content_type() == kind:
            return part.get_payload(decode=True)
    raise AssertionError(f"no {kind} in {fixture}")


def cp50220(text: str) -> bytes:
    """ISO-2022-JP as Windows writes it: every two-byte cp932 character moved to its JIS code."""
    out, jis = bytearray(), False
    data, i = text.encode("cp932"), 0
    while i < len(data):
        lead = data[i]
        if 0x81 <= lead <= 0x9F or 0xE0 <= lead <= 0xFC:
            if not jis:
                out += b"\x1b$B"
                jis = True
            trail, row = data[i + 1], lead - (0xC1 if lead >= 0xE0 else 0x81)
            first = row * 2 + 0x21 + (trail >= 0x9F)
            second = trail - 0x7E if trail >= 0x9F else trail - 0x1F - (trail >= 0x80)
            out += bytes((first, second))
            i += 2
        else:
            if jis:
                out += b"\x1b(B"
                jis = False
            out.append(lead)
            i += 1
    return bytes(out + (b"\x1b(B" if jis else b""))


# ------------------------------------------------------------------ files

def test_unnamed_video_is_listed_in_the_received_mail_as_refused(parts):
    # The phone's nameless video is named from its type and the customer hears it was refused.
    outcome = ingest_raw(parts, load_mail("android-video-no-name-es.eml"), "video")
    with Session(parts.engine) as session:
        note = session.exec(select(Notification).where(
            Notification.ticket_id.is_not(None), Notification.event == "received")).one()
    refused = json.loads(note.context)["refused"]
    assert outcome.outcome == "created"
    assert refused == [{"filename": "adjunto-1.mov", "reason": "type_not_allowed"}]


def test_forwarded_mail_gets_the_same_name_on_every_run():
    # Named by its subject, never by a random string.
    raw = load_mail("outlook-forward-as-attachment-no-name-es.eml")
    names = {parse(raw).attachments[0].filename for _ in range(3)}
    assert names == {"RE_ Pedido 4471 sin entregar.eml"}


def test_forwarded_mail_without_subject_is_named_from_its_type():
    # No name and no subject: a name from the type, stable too.
    raw = load_mail("outlook-forward-as-attachment-no-name-es.eml").replace(
        b"Subject: RE: Pedido 4471 sin entregar\r\n", b"")
    assert parse(raw).attachments[0].filename == "adjunto-1.eml"


def test_x_uuencode_part_decodes_to_the_original_bytes():
    # The PDF comes out byte for byte, although its last line lost its space in transit.
    original = fixture_file("thunderbird-exe-and-pdf-en.eml", "application/pdf")
    (pdf,) = parse(load_mail("pegasus-x-uuencode-part-es.eml")).attachments
    assert pdf.payload == original


def test_inline_part_named_by_content_location_when_it_has_no_name():
    # A page saved from a browser names its images by Content-Location.
    raw = load_mail("exchange-disclaimer-inline-images-no-name-es.eml").replace(
        b"Content-ID: <image002.jpg@01DB5F41.3A7B2C90>",
        b"Content-Location: http://intranet/tpv/aviso-cierre.jpg\r\nContent-ID: <x7@intranet>")
    assert [a.filename for a in parse(raw).attachments] == ["aviso-cierre.jpg", "image001.png"]


def test_damaged_winmail_dat_is_judged_as_it_is():
    # A TNEF stream that cannot be unpacked is still listed, under its own name.
    raw = load_mail("outlook-tnef-winmail-es.eml").replace(b"AAEIgAcAGAAAAElQTS5",
                                                            b"AAEIgAcAGAAAAElQTS6")
    (item,) = parse(raw).attachments
    assert (item.filename, item.declared_type) == ("winmail.dat", "application/ms-tnef")


# ------------------------------------------------------------------ senders

def test_stranger_writing_twice_in_different_cases_is_one_pending_contact(parts):
    # The new contact is stored lower-case, so the next mail finds it whatever its case.
    raw = load_mail("outlook-unknown-sender-known-domain-es.eml")
    sender = parse(raw).from_address
    shouted = raw.replace(sender.encode(), sender.upper().encode())
    first = ingest_raw(parts, shouted, "first")
    second = ingest_raw(parts, raw.replace(b"Message-ID: <", b"Message-ID: <again-"), "second")
    with Session(parts.engine) as session:
        stored = session.exec(select(Contact.email).where(
            col(Contact.email).contains(sender.split("@")[0].lower()))).all()
    assert first.sender == sender.upper().split("@")[0] + "@" + sender.split("@")[1]
    assert (first.outcome, second.outcome) == ("held", "held")
    assert stored == [sender.lower()]


def test_sender_keeps_the_local_part_and_lowers_the_domain():
    mail = parse(load_mail("iphone-mixed-case-address-es.eml"))
    assert mail.from_address == "Jose.Fernandez@ferreteria-lopez.es"


def test_no_usable_from_header_at_all_is_no_sender():
    # Two From headers, neither with an address: still no sender.
    raw = load_mail("erp-two-from-headers-es.eml").replace(
        b'"Jose Fernandez" <jose.fernandez@ferreteria-lopez.es>', b"JFERNANDEZ")
    assert parse(raw).from_address == ""


# ------------------------------------------------------------------ headers and charsets

def test_nul_characters_are_dropped_so_the_mail_is_a_ticket_on_both_databases(parts):
    # A NUL in the subject, a header and the body (a broken mailer): PostgreSQL refuses NUL
    # in text, so the mail used to fail there and become a ticket on SQLite. Now the same
    # ticket on both, without the NULs.
    raw = load_mail("outlook-new-request-es.eml")
    raw = raw.replace(b"Subject: ", b"Subject: Factura\x00 ", 1).replace(
        b"Message-ID: <", b"X-Broken: a\x00b\r\nMessage-ID: <nul-", 1)
    head, blank, body = raw.partition(b"\r\n\r\n")
    raw = head + blank + body.replace(b"\r\n", b"\x00\r\n", 3)
    mail = parse(raw)
    assert "\x00" not in mail.subject + mail.text + mail.headers["x-broken"]
    assert mail.subject.startswith("Factura ")
    outcome = ingest_raw(parts, raw, "nul")
    assert outcome.outcome == "created"


def test_blank_line_before_the_headers_is_skipped():
    raw = b"\r\n" + load_mail("iphone-mixed-case-address-es.eml")
    mail = parse(raw)
    assert mail.message_id == "<8C2E4F1A-3B5D-4E6F-9A7B-1C2D3E4F5A6B@Ferreteria-Lopez.ES>"
    assert mail.text.startswith("El lector de códigos")


def test_mbox_from_line_before_the_headers_is_skipped():
    raw = b"From jose.fernandez@ferreteria-lopez.es Wed Nov 25 12:15:41 2026\r\n" + load_mail(
        "iphone-mixed-case-address-es.eml")
    assert parse(raw).subject == "No funciona el lector de códigos"
    assert parse(raw).headers["x-mailer"] == "iPhone Mail (22B91)"


def test_raw_utf8_header_is_not_read_in_the_body_charset():
    # The body's charset is a hint after UTF-8: valid UTF-8 stays UTF-8.
    subject = "收银机日结报表发送失败（E-2207）".encode()
    assert charsets.header(subject, "gbk") == "收银机日结报表发送失败（E-2207）"


@pytest.mark.parametrize("charset", ["shift_jis", "euc-jp", "big5", "gb18030"])
def test_raw_header_in_a_cjk_charset_reads_with_the_body_charset_hint(charset):
    text = "画像サーバー" if charset in {"shift_jis", "euc-jp"} else "收銀機報表"
    assert charsets.header(text.encode(charset), charset) == text


def test_iso_2022_jp_with_nec_and_ibm_characters_decodes():
    text = "①②③ ㈱ Ⅳ № 髙橋 﨑 テスト"
    assert charsets.decode(cp50220(text), "ISO-2022-JP") == text


def test_iso_2022_jp_without_charset_decodes_in_a_raw_header():
    assert charsets.header("バックアップ失敗: imgsrv01".encode("iso2022_jp")) == \
        "バックアップ失敗: imgsrv01"


def test_ascii_without_escapes_stays_ascii():
    assert charsets.decode(b"plain text, no escapes $B here") == "plain text, no escapes $B here"


# ------------------------------------------------------------------ invitations and subjects

def test_all_day_cancelled_event_summary():
    ics = (b"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nMETHOD:CANCEL\r\nBEGIN:VEVENT\r\n"
           b"UID:1\r\nSUMMARY:Inventario anual\r\nDTSTART;VALUE=DATE:20261228\r\n"
           b"DTEND;VALUE=DATE:20261229\r\nLOCATION:Almac\xc3\xa9n\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n")
    assert invitation.summary(ics) == ("Convocatoria cancelada: Inventario anual\n"
                                       "Cuándo: 28/12/2026\nDónde: Almacén")


def test_damaged_calendar_gives_no_summary():
    assert invitation.summary(b"BEGIN:VCALENDAR\r\nthis is not a calendar") is None


@pytest.mark.parametrize(("subject", "expected"), [
    ("Re: RV: [#1001] Resuelto: Error 4012", "Re: RV: Resuelto: Error 4012"),
    ("[#1003] Hemos recibido tu solicitud: Re: [#1001] X", "Hemos recibido tu solicitud: Re: X"),
    ("Precio [#A1] sin tag nuestro", "Precio [#A1] sin tag nuestro"),
    ("[#1001]", "[#1001]"),
])
def test_our_tags_are_taken_out_of_a_new_ticket_subject(subject, expected):
    assert untagged(subject) == expected


def test_uudecode_lines_tolerates_stripped_trailing_spaces():
    data = bytes(range(256)) * 2
    lines = [binascii.b2a_uu(data[i:i + 45], backtick=False).decode().rstrip("\n").rstrip(" ")
             for i in range(0, len(data), 45)]
    assert uudecode_lines("\n".join(lines)) == data


def test_other_renderings_of_the_body_are_not_files():
    # Apple Watch's text/watch-html alternative is the body again, not an attachment.
    raw = (b"From: Jose <jose.fernandez@ferreteria-lopez.es>\r\nSubject: Reloj\r\n"
           b"MIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary=\"A\"\r\n\r\n"
           b"--A\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\nVale\r\n"
           b"--A\r\nContent-Type: text/watch-html; charset=us-ascii\r\n\r\n<b>Vale</b>\r\n"
           b"--A\r\nContent-Type: text/html; charset=us-ascii\r\n\r\n<p>Vale</p>\r\n--A--\r\n")
    mail = parse(raw)
    assert (mail.text, mail.attachments) == ("Vale", ())
