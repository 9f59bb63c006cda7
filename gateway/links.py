"""Signed tokens that we hand out in mail: the per-ticket reply address (more to come here).

The reply address ``soporte+<number>.<signature>@domain`` is put in Reply-To of every mail we send
for a ticket, so a reply threads even when the client strips References and the subject tag. Its
signature is lower-case base32 because some mail systems fold the case of the local part, and it
is kept short so the local part stays under the 64 characters of RFC 5321 §4.5.3.1.1.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from itsdangerous import BadSignature, Signer

_SIG_BYTES = 15  # 120 bits, 24 base32 characters


class _CaseFoldSigner(Signer):
    """An itsdangerous signer whose signatures survive case folding (base32, lower case)."""

    def get_signature(self, value: str | bytes) -> bytes:
        value = value.encode() if isinstance(value, str) else value
        digest = self.algorithm.get_signature(self.derive_key(), value)[:_SIG_BYTES]
        return base64.b32encode(digest).decode().lower().encode()

    def verify_signature(self, value: str | bytes, sig: str | bytes) -> bool:
        sig = sig.encode() if isinstance(sig, str) else sig
        return hmac.compare_digest(self.get_signature(value), sig.lower())


class ReplyAddresses:
    """Makes and reads the signed reply address of a ticket."""

    def __init__(self, secret_key: str, support_address: str) -> None:
        self._signer = _CaseFoldSigner(
            secret_key, salt="reply-address", sep=".", digest_method=hashlib.sha256
        )
        self.local, _, self.domain = support_address.partition("@")

    def address(self, ticket_number: int) -> str:
        token = self._signer.sign(str(ticket_number)).decode()
        return f"{self.local}+{token}@{self.domain}"

    def ticket_number(self, address: str) -> int | None:
        """The ticket number of a reply address we made, or None (not ours, or tampered)."""
        local = address.strip().lower().partition("@")[0]
        base, plus, token = local.partition("+")
        if not plus or base != self.local.lower():
            return None
        try:
            value = self._signer.unsign(token)
        except BadSignature:
            return None
        return int(value) if value.isdigit() else None
