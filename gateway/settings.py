"""Every setting of the gateway, read once from the environment, typed; secrets masked.

Each variable is documented in README.md ("Configuration"). Nothing else in the code base reads
``os.environ``: the CLI builds one ``Settings`` and passes it down.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from urllib.parse import SplitResult, parse_qs, unquote, urlsplit

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
    timezone: str
    unknown_senders: str  # reject / accept
    catchall_org_code: str
    reopen_days: int
    flood_limit: int
    flood_window_minutes: int
    max_attachment_size: int
    ingest_processes: int
    web_processes: int
    lease_seconds: float
    worker_poll_seconds: float
    imap_mailboxes: tuple[ImapMailbox, ...] = ()
    imap_poll_seconds: float = 60.0
    imap_idle_seconds: float = 300.0
    rating_link_days: int = 30
    rating_reminder_days: int = 3
    verification_link_days: int = 14
    password_link_hours: int = 24
    housekeeping_seconds: float = 600.0
    smtp_store_timeout: float = 30.0
    inbound_retry_days: float = 5.0
    outbox_retry_days: float = 5.0
    session_hours: float = 8.0
    trusted_proxies: tuple[str, ...] = ()
    rating_confirm_minutes: float = 5.0
    metrics_token: Secret = field(default=Secret(""), repr=False)
    health_inbound_minutes: float = 15.0
    health_outbox_minutes: float = 60.0
    log_format: str = "text"  # text / json
    company_name: str = "Soporte"
    logo_url: str = "/static/logo.svg"
    privacy_url: str = "/privacy"
    # Sender authentication (gateway.inbound.sender_auth): off / report / enforce; None until
    # the command decides (serve: enforce, serve --demo: report).
    sender_auth: str | None = None
    smtp_auth_results: str = ""  # trust this authserv-id's Authentication-Results on SMTP
    dns_servers: tuple[str, ...] = ()  # resolve through these instead of the system's
    # The SMTP edge (gateway.channels.smtp_server): STARTTLS with this certificate (and key,
    # unless the certificate's file holds it); no certificate, no STARTTLS.
    smtp_tls_cert: Path | None = None
    smtp_tls_key: Path | None = None
    smtp_require_tls: bool = False  # MAIL only after STARTTLS (530 before)
    smtp_max_connections: int = 100  # at once, in all (421 beyond)
    smtp_max_connections_per_address: int = 10  # at once, from one client address
    smtp_idle_timeout: float = 300.0  # seconds without a byte from the client (RFC 5321 §4.5.3.2)
    # An LMTP listener for an MTA in front (Postfix, as for Mailman); None: none.
    lmtp_host: str = "127.0.0.1"
    lmtp_port: int | None = None
    lmtp_auth_results: str = ""  # trust this authserv-id's Authentication-Results on LMTP
    secret_key_given: bool = True  # HELPDESK_SECRET_KEY set (not the generated demo key)

    @property
    def sender_auth_mode(self) -> str:
        return self.sender_auth or "enforce"

    @property
    def session_lifetime(self) -> timedelta:
        """How long a customer-area session lasts without being used."""
        return timedelta(hours=self.session_hours)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ

        def get(name: str, default: str) -> str:
            return env.get(PREFIX + name, default)

        var_dir = Path(get("VAR_DIR", "var")).resolve()
        if not get("SMTP_TLS_CERT", "").strip():
            for needs in ("SMTP_TLS_KEY", "SMTP_REQUIRE_TLS"):
                if get(needs, "").strip() not in {"", "0", "false", "no", "off"}:
                    raise ValueError(f"HELPDESK_{needs} is set without HELPDESK_SMTP_TLS_CERT")
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
            secret_key_given=bool(get("SECRET_KEY", "")),
            public_url=get("PUBLIC_URL", _local_url(get("WEB_HOST", "127.0.0.1"),
                                                    get("WEB_PORT", "8000"))).rstrip("/"),
            web_host=get("WEB_HOST", "127.0.0.1"),
            web_port=int(get("WEB_PORT", "8000")),
            from_name=get("FROM_NAME", "Soporte"),
            timezone=get("TIMEZONE", "Europe/Madrid"),
            unknown_senders=_choice(get("UNKNOWN_SENDERS", "reject"), ("reject", "accept")),
            catchall_org_code=get("CATCHALL_ORG_CODE", "SIN-CLASIFICAR"),
            reopen_days=int(get("REOPEN_DAYS", "7")),
            flood_limit=int(get("FLOOD_LIMIT", "40")),
            flood_window_minutes=int(get("FLOOD_WINDOW_MINUTES", "10")),
            max_attachment_size=int(get("MAX_ATTACHMENT_SIZE", str(5 * 1024 * 1024))),
            lease_seconds=float(get("LEASE_SECONDS", "30")),
            ingest_processes=int(get("INGEST_PROCESSES", str(max(1, (os.cpu_count() or 2) - 1)))),
            worker_poll_seconds=float(get("WORKER_POLL_SECONDS", "1.0")),
            web_processes=max(1, int(get("WEB_PROCESSES", "2"))),
            imap_mailboxes=imap_mailboxes(get("IMAP_MAILBOXES", "")),
            imap_poll_seconds=_positive(get("IMAP_POLL_SECONDS", "60")),
            imap_idle_seconds=min(_positive(get("IMAP_IDLE_SECONDS", "300")), IMAP_IDLE_LIMIT),
            rating_link_days=int(get("RATING_LINK_DAYS", "30")),
            rating_reminder_days=int(get("RATING_REMINDER_DAYS", "3")),
            verification_link_days=int(get("VERIFICATION_LINK_DAYS", "14")),
            password_link_hours=int(get("PASSWORD_LINK_HOURS", "24")),
            housekeeping_seconds=_positive(get("HOUSEKEEPING_SECONDS", "600")),
            smtp_store_timeout=_positive(get("SMTP_STORE_TIMEOUT", "30")),
            inbound_retry_days=_positive(get("INBOUND_RETRY_DAYS", "5"), "days"),
            session_hours=_positive(get("SESSION_HOURS", "8"), "hours"),
            trusted_proxies=_list(get("TRUSTED_PROXIES", "")),
            rating_confirm_minutes=float(get("RATING_CONFIRM_MINUTES", "5")),
            metrics_token=Secret(get("METRICS_TOKEN", "")),
            health_inbound_minutes=_positive(get("HEALTH_INBOUND_MINUTES", "15"), "minutes"),
            health_outbox_minutes=_positive(get("HEALTH_OUTBOX_MINUTES", "60"), "minutes"),
            log_format=_choice(get("LOG_FORMAT", "text"), ("text", "json")),
            outbox_retry_days=_positive(get("OUTBOX_RETRY_DAYS", "5"), "days"),
            company_name=get("COMPANY_NAME", "") or get("FROM_NAME", "Soporte"),
            logo_url=get("LOGO_URL", "/static/logo.svg"),
            privacy_url=get("PRIVACY_URL", "/privacy"),
            sender_auth=_choice(get("SENDER_AUTH", ""), ("", *SENDER_AUTH_MODES)) or None,
            smtp_auth_results=get("SMTP_AUTH_RESULTS", "").strip(),
            dns_servers=_list(get("DNS_SERVERS", "")),
            smtp_tls_cert=_path(get("SMTP_TLS_CERT", "")),
            smtp_tls_key=_path(get("SMTP_TLS_KEY", "")),
            smtp_require_tls=_bool(get("SMTP_REQUIRE_TLS", "false")),
            smtp_max_connections=int(_positive(get("SMTP_MAX_CONNECTIONS", "100"),
                                               "connections")),
            smtp_max_connections_per_address=int(_positive(
                get("SMTP_MAX_CONNECTIONS_PER_ADDRESS", "10"), "connections")),
            smtp_idle_timeout=_positive(get("SMTP_IDLE_TIMEOUT", "300")),
            lmtp_host=get("LMTP_HOST", "127.0.0.1"),
            lmtp_port=int(get("LMTP_PORT", "")) if get("LMTP_PORT", "").strip() else None,
            lmtp_auth_results=get("LMTP_AUTH_RESULTS", "").strip(),
        )

    def refusal_to_serve(self) -> str | None:
        """Why ``serve`` (not ``serve --demo``) must not start with these settings: a secret
        key that is missing, short or one published in our own examples, which would let
        anyone sign reply addresses, star links and session cookies. None when fine."""
        key = str(self.secret_key).strip() if self.secret_key_given else ""
        make = ("make one with: python -c 'import secrets; print(secrets.token_urlsafe(48))'"
                " (the same on every process)")
        if not key:
            return f"HELPDESK_SECRET_KEY is not set; {make}"
        if key.lower() in PUBLISHED_SECRET_KEYS or "change-me" in key.lower():
            return f"HELPDESK_SECRET_KEY is an example published with the gateway; {make}"
        if len(key) < MIN_SECRET_KEY_LENGTH:
            return (f"HELPDESK_SECRET_KEY is too short ({len(key)} characters, at least "
                    f"{MIN_SECRET_KEY_LENGTH}); {make}")
        return None

    def accepts_recipient(self, address: str) -> bool:
        """True if ``address`` is one of our support domains (RFC 5321 §3.6: we are no relay)."""
        domain = address.rpartition("@")[2].strip().lower().rstrip(".")
        return bool(domain) and domain in self.support_domains



# ------------------------------------------------------------------ IMAP mailboxes

# RFC 2177 §3: a client must re-issue IDLE at least every 29 minutes or the server may log it off.
IMAP_IDLE_LIMIT = 29 * 60.0
IMAP_OPTIONS = ("move_to", "starttls", "verify", "cafile", "oauth2_token_file", "auth_results")


@dataclass(frozen=True)
class ImapMailbox:
    """One mailbox the IMAP poller reads, from a ``HELPDESK_IMAP_MAILBOXES`` URL."""

    host: str
    port: int
    user: str
    password: Secret  # empty with OAuth2; never printed
    folder: str = "INBOX"
    security: str = "tls"  # tls (imaps://, implicit TLS) / starttls / none
    verify: bool = True  # check the server's certificate and host name
    cafile: Path | None = None  # trust these CA certificates instead of the system's
    oauth2_token_file: Path | None = None  # XOAUTH2 with the access token kept in this file
    move_to: str | None = None  # move stored mail to this folder instead of flagging it
    # Trust the Authentication-Results of this authserv-id (the provider's: "mx.google.com",
    # "microsoft365"), as the mailbox's mail has no client address to check SPF against.
    auth_results: str = ""

    @property
    def name(self) -> str:
        """How logs, the inbound queue (``source``) and the saved position name this mailbox."""
        return f"{self.user}@{self.host}/{self.folder}"


def imap_mailboxes(value: str) -> tuple[ImapMailbox, ...]:
    """Mailbox URLs separated by whitespace or commas (README.md, "IMAP mailboxes")."""
    return tuple(_imap_mailbox(url) for url in re.split(r"[\s,]+", value.strip()) if url)


def _imap_mailbox(url: str) -> ImapMailbox:
    parts = urlsplit(url)
    shown = _without_password(parts)

    def bad(reason: str) -> ValueError:
        return ValueError(f"HELPDESK_IMAP_MAILBOXES: {shown}: {reason}")

    if parts.scheme not in {"imap", "imaps"}:
        raise bad("the scheme must be imaps:// (TLS) or imap:// (STARTTLS)")
    try:
        port = parts.port
    except ValueError:
        raise bad("the port is not a number") from None
    if not parts.hostname or not parts.username:
        raise bad("a user and a host are required")
    query = parse_qs(parts.query, keep_blank_values=True)
    unknown = sorted(set(query) - set(IMAP_OPTIONS))
    if unknown:
        raise bad(f"unknown option {', '.join(unknown)} (known: {', '.join(IMAP_OPTIONS)})")
    options = {name: values[-1] for name, values in query.items()}
    try:
        if parts.scheme == "imaps":
            if "starttls" in options:
                raise bad("starttls is for imap://; imaps:// is TLS from the first byte")
            security = "tls"
        else:
            security = "starttls" if _flag(options.get("starttls", "true")) else "none"
        verify = _flag(options.get("verify", "true"))
    except KeyError as exc:
        raise bad(f"{exc.args[0]!r} is not true or false") from None
    password = unquote(parts.password or "")
    token_file = options.get("oauth2_token_file") or None
    if bool(password) == bool(token_file):
        raise bad("give either a password or oauth2_token_file")
    cafile = options.get("cafile") or None
    return ImapMailbox(
        host=parts.hostname,
        port=port or (993 if security == "tls" else 143),
        user=unquote(parts.username),
        password=Secret(password),
        folder=unquote(parts.path.lstrip("/")) or "INBOX",
        security=security,
        verify=verify,
        cafile=Path(cafile) if cafile else None,
        oauth2_token_file=Path(token_file) if token_file else None,
        move_to=options.get("move_to") or None,
        auth_results=(options.get("auth_results") or "").strip(),
    )


SENDER_AUTH_MODES = ("off", "report", "enforce")
MIN_SECRET_KEY_LENGTH = 32
# Keys printed in our own files and in common examples: never a production key.
PUBLISHED_SECRET_KEYS = frozenset({
    "change-me-in-production", "changeme", "change-me", "secret", "secret-key", "your-secret-key",
    "please-change-me", "dev", "development", "insecure", "helpdesk",
})


def _local_url(host: str, port: str) -> str:
    """Where the web area answers when no public URL is set: its own address (a host that
    listens everywhere is reached on loopback), so that mailed links follow HELPDESK_WEB_PORT."""
    if host in {"0.0.0.0", "::", ""}:  # noqa: S104 (a comparison, not a bind)
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{8000 if port == '0' else port}"


def _positive(value: str, unit: str = "seconds") -> float:
    number = float(value)
    if number <= 0:
        raise ValueError(f"{value!r} is not a positive number of {unit}")
    return number


def _path(value: str) -> Path | None:
    return Path(value.strip()).resolve() if value.strip() else None


def _flag(value: str) -> bool:
    """A strict boolean: a typo in ``verify=`` must not quietly turn certificate checks off."""
    return {"true": True, "yes": True, "1": True, "on": True,
            "false": False, "no": False, "0": False, "off": False}[value.strip().lower()]


def _without_password(parts: SplitResult) -> str:
    user, _, host = parts.netloc.rpartition("@")
    user = user.partition(":")[0]
    masked = f"{user}:***@{host}" if parts.password else parts.netloc
    return parts._replace(netloc=masked).geturl()


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
