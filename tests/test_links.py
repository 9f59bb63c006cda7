"""Signed reply addresses: they round-trip, survive case folding, and refuse tampering."""

from __future__ import annotations

from gateway.links import ReplyAddresses

REPLY = ReplyAddresses("a-secret", "soporte@example.com")


def test_reply_address_names_its_ticket():
    # The address we put in Reply-To leads back to the ticket, within RFC 5321's 64-char local part.
    address = REPLY.address(1001)
    assert address.startswith("soporte+1001.") and address.endswith("@example.com")
    assert len(address.partition("@")[0]) <= 64
    assert REPLY.ticket_number(address) == 1001


def test_reply_address_survives_case_folding():
    # Some mail systems upper-case local parts; the signature still verifies.
    assert REPLY.ticket_number(REPLY.address(1234).upper()) == 1234


def test_tampered_or_foreign_reply_address_is_ignored():
    # Another ticket number, another key, or a plain address give no ticket.
    local, _, domain = REPLY.address(1001).partition("@")
    forged = local.replace("1001", "1002") + "@" + domain
    assert REPLY.ticket_number(forged) is None
    assert ReplyAddresses("other-secret", "soporte@example.com").ticket_number(
        REPLY.address(1001)) is None
    assert REPLY.ticket_number("soporte@example.com") is None
    assert REPLY.ticket_number("ventas+1001.abc@example.com") is None
