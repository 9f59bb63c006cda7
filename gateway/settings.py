"""Every setting of the gateway, read once from the environment, typed; secrets masked.

Each variable is documented in README.md ("Configuration"). Nothing else in the code base reads
``os.environ``: the CLI builds one ``Settings`` and passes it down.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from starlette.datastructures import Secret

PREFIX = "HELPDESK_"


def _bool(value: str) -> bool:
    return value.strip().lower() in {"1", "true", "yes", "on"}


def _choice(value: str, allowed: tuple[str, ...]) -> str:
    value = value.strip().lower()
    if value not in allowed:
        raise ValueError(f"{value!r} is not one of {', '.join(allowed)}")
    return value


def _list(value: str) -> tuple[str, ...]:
    return tuple(item.strip().lower() for item in value.split(",") if item.strip())


@dataclass(frozen=True)
class Settings:
    """The gateway's configuration. Build it with :meth:`from_env`."""

    var_dir: Path
    database_url: str
    storage_dir: Path
    outbox_dir: Path
    smtp_host: str
    smtp_port: int
    smtp_max_size: int
    support_address: str
    support_domains: tuple[str, ...]
    relay_host: str
    relay_port: int
    relay_starttls: bool
    relay_user: str
    relay_password: Secret
    secret_key: Secret = field(repr=False)
    public_url: str
    web_host: str
    web_port: int
    from_name: str
    default_language: str
    timezone: str
    unknown_senders: str  # reject / accept
    catchall_org_code: str
    reopen_days: int
    flood_limit: int
    flood_window_minutes: int
    max_attachment_size: int
    worker_poll_seconds: float

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ

        def get(name: str, default: str) -> str:
            return env.get(PREFIX + name, default)

        var_dir = Path(get("VAR_DIR", "var")).resolve()
        support_address = get("SUPPORT_ADDRESS", "soporte@example.com").strip().lower()
        domains = _list(get("SUPPORT_DOMAINS", support_address.rpartition("@")[2]))
        return cls(
            var_dir=var_dir,
            database_url=get("DATABASE_URL", f"sqlite:///{var_dir / 'helpdesk.db'}"),
            storage_dir=Path(get("STORAGE_DIR", str(var_dir / "storage"))).resolve(),
            outbox_dir=Path(get("OUTBOX_DIR", str(var_dir / "outbox"))).resolve(),
            smtp_host=get("SMTP_HOST", "127.0.0.1"),
            smtp_port=int(get("SMTP_PORT", "2525")),
            smtp_max_size=int(get("SMTP_MAX_SIZE", str(25 * 1024 * 1024))),
            support_address=support_address,
            support_domains=domains,
            relay_host=get("RELAY_HOST", ""),
            relay_port=int(get("RELAY_PORT", "25")),
            relay_starttls=_bool(get("RELAY_STARTTLS", "false")),
            relay_user=get("RELAY_USER", ""),
            relay_password=Secret(get("RELAY_PASSWORD", "")),
            secret_key=Secret(get("SECRET_KEY", "") or _stored_secret(var_dir)),
            public_url=get("PUBLIC_URL", "http://127.0.0.1:8000").rstrip("/"),
            web_host=get("WEB_HOST", "127.0.0.1"),
            web_port=int(get("WEB_PORT", "8000")),
            from_name=get("FROM_NAME", "Soporte"),
            default_language=get("DEFAULT_LANGUAGE", "es"),
            timezone=get("TIMEZONE", "Europe/Madrid"),
            unknown_senders=_choice(get("UNKNOWN_SENDERS", "reject"), ("reject", "accept")),
            catchall_org_code=get("CATCHALL_ORG_CODE", "SIN-CLASIFICAR"),
            reopen_days=int(get("REOPEN_DAYS", "7")),
            flood_limit=int(get("FLOOD_LIMIT", "40")),
            flood_window_minutes=int(get("FLOOD_WINDOW_MINUTES", "10")),
            max_attachment_size=int(get("MAX_ATTACHMENT_SIZE", str(5 * 1024 * 1024))),
            worker_poll_seconds=float(get("WORKER_POLL_SECONDS", "1.0")),
        )

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    def accepts_recipient(self, address: str) -> bool:
        """True if ``address`` is one of our support domains (RFC 5321 §3.6: we are no relay)."""
        domain = address.rpartition("@")[2].strip().lower().rstrip(".")
        return bool(domain) and domain in self.support_domains


def _stored_secret(var_dir: Path) -> str:
    """A secret key generated once and kept in ``var/secret_key``, for the embedded default.

    Production sets HELPDESK_SECRET_KEY; a fresh clone still gets signed links that survive a
    restart without anyone having to invent a key.
    """
    path = var_dir / "secret_key"
    if path.exists():
        return path.read_text().strip()
    var_dir.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(48)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it first: use theirs
        return path.read_text().strip()
    with os.fdopen(fd, "w") as handle:
        handle.write(key)
    return key
