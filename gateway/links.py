"""Signed tokens that we hand out in mail: the per-ticket reply address, the star links, the
managers' approve/reject links and the set-password links.

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
from datetime import datetime

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
VERIFICATION_SALT = "verification-link"
SET_PASSWORD_LINK_SALT = "set-password-link"  # noqa: S105 (a salt, not a password)
STARS = (1, 2, 3, 4, 5)
DECISIONS = ("approve", "reject")


class BadLink(Exception):
    """A signed link we cannot use. ``reason``: "expired", "invalid" (tampered, garbage), or, as
    the pages that check what a link names say, "used", "not_found", "not_rateable"."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _TimedLinks:
    """Signed, expiring links ``<public_url>/<path>/<token>`` whose token carries a few integers
    or short strings; each kind of link has its own salt, so one kind never passes for another."""

    def __init__(self, secret_key: str, public_url: str, *, salt: str, path: str,
                 max_age_seconds: int) -> None:
        self._serializer = URLSafeTimedSerializer(
            secret_key, salt=salt, signer_kwargs={"digest_method": hashlib.sha256}
        )
        self.public_url = public_url.rstrip("/")
        self.path = path
        self.max_age = max_age_seconds

    def _url(self, value: list[int | str]) -> str:
        return f"{self.public_url}/{self.path}/{self._serializer.dumps(value)}"

    def _load(self, token: str, size: int, max_age: int | None) -> list[int | str]:
        return self._load_dated(token, size, max_age)[0]

    def _load_dated(self, token: str, size: int,
                    max_age: int | None) -> tuple[list[int | str], datetime]:
        """The token's values and when it was made."""
        try:
            value, made = self._serializer.loads(
                token, max_age=self.max_age if max_age is None else max_age,
                return_timestamp=True)
        except SignatureExpired:
            raise BadLink("expired") from None
        except BadSignature:
            raise BadLink("invalid") from None
        if not isinstance(value, list) or len(value) != size:
            raise BadLink("invalid")
        return value, made


@dataclass(frozen=True)
class RatingChoice:
    """What one star link says: this contact gives this ticket so many stars."""

    ticket_number: int
    contact_id: int
    stars: int
    made_at: datetime | None = None  # when the link was made (its mail written)


class RatingLinks(_TimedLinks):
    """Makes and reads the five signed, expiring star links of a resolved ticket."""

    def __init__(self, secret_key: str, public_url: str, max_age_days: int = 30) -> None:
        super().__init__(secret_key, public_url, salt=RATING_SALT, path="rate",
                         max_age_seconds=max_age_days * 24 * 3600)

    def token(self, ticket_number: int, contact_id: int, stars: int) -> str:
        return self.url(ticket_number, contact_id, stars).rpartition("/")[2]

    def url(self, ticket_number: int, contact_id: int, stars: int) -> str:
        if stars not in STARS:
            raise ValueError(f"stars must be 1 to 5, not {stars!r}")
        return self._url([ticket_number, contact_id, stars])

    def read(self, token: str, max_age: int | None = None) -> RatingChoice:
        """The choice a token carries; raises ``BadLink`` if expired or not ours."""
        value, made = self._load_dated(token, 3, max_age)
        if not all(type(item) is int for item in value) or value[2] not in STARS:
            raise BadLink("invalid")
        return RatingChoice(*value, made_at=made)  # type: ignore[arg-type]


@dataclass(frozen=True)
class VerificationChoice:
    """What one link of a verification request says: this manager approves (or rejects) it."""

    request_id: int
    manager_id: int
    decision: str


class VerificationLinks(_TimedLinks):
    """The approve and reject links that an organization's managers get for an unknown sender."""

    def __init__(self, secret_key: str, public_url: str, max_age_days: int = 14) -> None:
        super().__init__(secret_key, public_url, salt=VERIFICATION_SALT, path="verify",
                         max_age_seconds=max_age_days * 24 * 3600)

    def url(self, request_id: int, manager_id: int, decision: str) -> str:
        if decision not in DECISIONS:
            raise ValueError(f"decision must be approve or reject, not {decision!r}")
        return self._url([request_id, manager_id, decision])

    def read(self, token: str, max_age: int | None = None) -> VerificationChoice:
        request_id, manager_id, decision = self._load(token, 3, max_age)
        if type(request_id) is not int or type(manager_id) is not int or decision not in DECISIONS:
            raise BadLink("invalid")
        return VerificationChoice(request_id, manager_id, str(decision))


@dataclass(frozen=True)
class PasswordGrant:
    """What a set-password link says: this contact may set a password, if it is still unused."""

    contact_id: int
    fingerprint: str


class PasswordLinks(_TimedLinks):
    """Single-use, expiring set-password links.

    The token carries a fingerprint of the contact's password hash as it was when the link was
    made; setting a password changes the hash (argon2 salts every hash), so the link, and every
    other link made before, stops working: single use without a table of used tokens."""

    def __init__(self, secret_key: str, public_url: str, max_age_hours: int = 24) -> None:
        super().__init__(secret_key, public_url, salt=SET_PASSWORD_LINK_SALT, path="password/set",
                         max_age_seconds=max_age_hours * 3600)

    @staticmethod
    def fingerprint(contact_id: int, password_hash: str | None) -> str:
        seed = f"{contact_id}:{password_hash or ''}".encode()
        return hashlib.sha256(seed).hexdigest()[:16]

    def url(self, contact_id: int, password_hash: str | None) -> str:
        return self._url([contact_id, self.fingerprint(contact_id, password_hash)])

    def read(self, token: str, max_age: int | None = None) -> PasswordGrant:
        contact_id, fingerprint = self._load(token, 2, max_age)
        if type(contact_id) is not int or not isinstance(fingerprint, str):
            raise BadLink("invalid")
        return PasswordGrant(contact_id, fingerprint)

    def still_valid(self, grant: PasswordGrant, password_hash: str | None) -> bool:
        """False once the contact's password changed after the link was made (used links)."""
        return hmac.compare_digest(grant.fingerprint,
                                   self.fingerprint(grant.contact_id, password_hash))
