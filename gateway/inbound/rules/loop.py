"""Is this our own mail coming back? We never answer our own mail (no loops)."""

from __future__ import annotations

from gateway.inbound.parse import ParsedMail


def check(mail: ParsedMail, support_domains: tuple[str, ...], own_message_id: bool) -> str | None:
    domain = mail.from_address.rpartition("@")[2]
    if domain and domain in support_domains:
        return f"our own mail (from {mail.from_address})"
    if own_message_id:
        return "our own mail (Message-ID we sent)"
    return None
