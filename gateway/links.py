"""Signed tokens that we hand out in mail: the per-ticket reply address and the star links.

The reply address ``soporte+<number>.<signature>@domain`` is put in Reply-To of every mail we send
for a ticket, so a reply threads even when the client strips References and the subject tag. Its
signature is lower-case base32 because some mail systems fold the case of the local part, and it
is kept short so the local part stays under the 64 characters of RFC 5321 §4.5.3.1.1.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass

from itsdangerous import BadSignature, SignatureExpired, Signer, URLSafeTimedSerializer

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


RATING_SALT = "rating-link"
STARS = (1, 2, 3, 4, 5)


@dataclass(frozen=True)
class RatingChoice:
    """What one star link says: this contact gives this ticket so many stars."""

    ticket_number: int
    contact_id: int
    stars: int


class BadRatingLink(Exception):
    """A star link we cannot use; ``reason`` is "expired" or "invalid" (tampered, garbage)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class RatingLinks:
    """Makes and reads the five signed, expiring star links of a resolved ticket."""

    def __init__(self, secret_key: str, public_url: str, max_age_days: int = 30) -> None:
        self._serializer = URLSafeTimedSerializer(
            secret_key, salt=RATING_SALT, signer_kwargs={"digest_method": hashlib.sha256}
        )
        self.public_url = public_url.rstrip("/")
        self.max_age = max_age_days * 24 * 3600

    def token(self, ticket_number: int, contact_id: int, stars: int) -> str:
        if stars not in STARS:
            raise ValueError(f"stars must be 1 to 5, not {stars!r}")
        return self._serializer.dumps([ticket_number, contact_id, stars])

    def url(self, ticket_number: int, contact_id: int, stars: int) -> str:
        return f"{self.public_url}/rate/{self.token(ticket_number, contact_id, stars)}"

    def read(self, token: str, max_age: int | None = None) -> RatingChoice:
        """The choice a token carries; raises ``BadRatingLink`` if expired or not ours."""
        try:
            value = self._serializer.loads(
                token, max_age=self.max_age if max_age is None else max_age
            )
        except SignatureExpired:
            raise BadRatingLink("expired") from None
        except BadSignature:
            raise BadRatingLink("invalid") from None
        if (
            not isinstance(value, list)
            or len(value) != 3
            or not all(type(item) is int for item in value)
            or value[2] not in STARS
        ):
            raise BadRatingLink("invalid")
        return RatingChoice(*value)
