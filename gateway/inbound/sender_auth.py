"""Who really sent a mail: SPF, DKIM and DMARC-style alignment with the From domain.

A mail may act as a contact (open or answer tickets, reach managers, be answered) only when its
From domain is *authenticated*: an SPF pass for an envelope sender, or a DKIM pass for a signing
domain, that is aligned with the From domain (RFC 7489 §3.1: the same organizational domain,
"relaxed", or the very same domain where the domain's DMARC record asks for "strict"). That is
DMARC's test, applied whether or not the domain publishes a DMARC record: small customers' domains
often publish none, and spoofing them is the easy case.

Two ways to a verdict, chosen per channel (the SMTP listener, each IMAP mailbox):

- **checked here**: DKIM signatures verified (dkimpy), SPF evaluated for the client's address,
  HELO and MAIL FROM (pyspf), the From domain's DMARC record read (dnspython); the public
  suffix list (publicsuffixlist) gives organizational domains. A mail read from an IMAP mailbox
  has no client address: SPF is "none" for it and DKIM decides;
- **trusted**: the topmost ``Authentication-Results`` header of a named authserv-id (an MTA in
  front with OpenDMARC, Gmail's ``mx.google.com``), read with authres; ``microsoft365`` names
  Exchange Online's header, which carries no authserv-id.

A DNS server that cannot be reached is not a verdict: ``DnsUnavailable`` is a temporary error,
and the mail waits in the queue to be judged again.
"""

from __future__ import annotations

import email.parser
import email.policy
import json
import logging
import re
from dataclasses import asdict, dataclass, field
from functools import lru_cache

import authres
import dkim
import dns.exception
import dns.resolver
import spf
from publicsuffixlist import PublicSuffixList

from storage.faults import Unavailable

log = logging.getLogger("gateway.sender_auth")

MODES = ("off", "report", "enforce")
MICROSOFT_365 = "microsoft365"  # Exchange Online's Authentication-Results has no authserv-id
DNS_TIMEOUT = 5.0  # seconds for one lookup; SPF is bounded by twice that in all


class DnsUnavailable(Unavailable):
    """DNS could not answer now (timeout, no server, SERVFAIL): judge the mail again later."""


@dataclass(frozen=True)
class Verdict:
    """What is known of a mail's sender: each mechanism's result and whether one of them passes
    aligned with the From domain."""

    from_domain: str
    spf: str = "none"  # pass fail softfail neutral none temperror permerror
    spf_domain: str = ""  # the domain SPF judged (MAIL FROM's, else HELO's)
    dkim: tuple[tuple[str, str], ...] = ()  # (signing domain, result) per signature
    dmarc: str = "none"  # pass fail none: DMARC's own result, where a record exists
    dmarc_policy: str | None = None  # the From domain's p= (or sp=): none, quarantine, reject
    aligned: bool = False  # an SPF or DKIM pass aligned with the From domain
    by: str = "checked"  # "checked" here, or the authserv-id whose header was trusted
    temporary: bool = False  # some part could not be judged for now (a DNS error)
    notes: tuple[str, ...] = field(default=())

    @property
    def authenticated(self) -> bool:
        return self.aligned

    def summary(self) -> str:
        """One line for logs, the queue's reason and pages: ``spf=pass (example.com)
        dkim=pass (example.com) dmarc=pass; aligned``."""
        dkim_text = " ".join(f"dkim={result} ({domain})" for domain, result in self.dkim) \
            or "dkim=none"
        policy = f" (p={self.dmarc_policy})" if self.dmarc_policy else ""
        spf_text = f"spf={self.spf}" + (f" ({self.spf_domain})" if self.spf_domain else "")
        return (f"{spf_text} {dkim_text} dmarc={self.dmarc}{policy}; "
                f"{'aligned with' if self.aligned else 'not aligned with'} {self.from_domain}"
                + (f"; by {self.by}" if self.by != "checked" else ""))

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | None) -> Verdict | None:
        if not text:
            return None
        data = json.loads(text)
        data["dkim"] = tuple(tuple(pair) for pair in data.get("dkim", ()))
        data["notes"] = tuple(data.get("notes", ()))
        return cls(**data)


# ---------------------------------------------------------------------- domains


@lru_cache(maxsize=1)
def _suffixes() -> PublicSuffixList:
    return PublicSuffixList()


def organizational(domain: str) -> str:
    """The registrable domain (``mail.ferreteria-lopez.es`` → ``ferreteria-lopez.es``)."""
    domain = domain.strip().strip(".").lower()
    return _suffixes().privatesuffix(domain) or domain


def aligned(domain: str, from_domain: str, strict: bool = False) -> bool:
    domain, from_domain = domain.strip(".").lower(), from_domain.strip(".").lower()
    if not domain or not from_domain:
        return False
    if strict:
        return domain == from_domain
    return organizational(domain) == organizational(from_domain)


def domain_of(address: str) -> str:
    return address.rpartition("@")[2].strip().strip(">").strip(".").lower()


# ---------------------------------------------------------------------- DNS


def use_dns_servers(servers: tuple[str, ...]) -> None:
    """Resolve through these servers (``"127.0.0.1:5353"``, ``"10.0.0.2"``) instead of the
    system's: pyspf and dkimpy both ask dnspython's default resolver."""
    if not servers:
        return
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers, ports = [], set()
    for server in servers:
        host, _, port = server.rpartition(":") if server.count(":") == 1 else (server, "", "")
        resolver.nameservers.append(host)
        ports.add(int(port) if port else 53)
    if len(ports) > 1:
        raise ValueError("HELPDESK_DNS_SERVERS: all servers must use the same port")
    resolver.port = ports.pop()
    resolver.lifetime = resolver.timeout = DNS_TIMEOUT
    dns.resolver.default_resolver = resolver


def txt_records(name: str) -> list[str]:
    """The TXT records of ``name`` ([] if it has none); DnsUnavailable if DNS cannot say."""
    try:
        answer = dns.resolver.resolve(name, "TXT", lifetime=DNS_TIMEOUT)
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return []
    except (dns.exception.Timeout, dns.resolver.NoNameservers, OSError) as exc:
        raise DnsUnavailable(f"DNS lookup of {name} failed: {exc}") from exc
    except dns.exception.DNSException as exc:  # a malformed name: nothing to find
        log.info("no TXT lookup for %r: %s", name, exc)
        return []
    return [b"".join(record.strings).decode("utf-8", "replace") for record in answer]


def _dkim_key(name: bytes, timeout: float = DNS_TIMEOUT) -> bytes | None:
    """dkimpy's DNS function: the key record's text, or None."""
    found = txt_records(name.decode("ascii", "replace").rstrip("."))
    return found[0].encode() if found else None


def dmarc_record(from_domain: str) -> dict[str, str] | None:
    """The DMARC record that applies to the From domain (its own, else its organizational
    domain's, RFC 7489 §6.6.3) as tags; for the organizational domain's, ``p`` is replaced by
    ``sp`` when given. None when there is none."""
    org = organizational(from_domain)
    for name in dict.fromkeys((from_domain, org)):
        for text in txt_records(f"_dmarc.{name}"):
            if not text.lower().startswith("v=dmarc1"):
                continue
            tags = {}
            for part in text.split(";"):
                key, _, value = part.partition("=")
                if key.strip():
                    tags[key.strip().lower()] = value.strip().lower()
            if name != from_domain and "sp" in tags:
                tags["p"] = tags["sp"]
            return tags
    return None


# ---------------------------------------------------------------------- checked here


def check(raw: bytes, *, from_domain: str, mail_from: str = "", ip: str = "",
          helo: str = "") -> Verdict:
    """Verify the mail's DKIM signatures, evaluate SPF when the client's address is known,
    and read the From domain's DMARC record. Raises DnsUnavailable when DNS cannot answer."""
    notes: list[str] = []
    signatures: list[tuple[str, str]] = []
    verifier = dkim.DKIM(raw, logger=log)
    count = sum(1 for name, _ in _headers(raw) if name.lower() == "dkim-signature")
    for index in range(count):
        try:
            ok = verifier.verify(idx=index, dnsfunc=_dkim_key)
            result = "pass" if ok else "fail"
        except DnsUnavailable:
            raise
        except dkim.DnsTimeoutError as exc:
            raise DnsUnavailable(f"DKIM key lookup: {exc}") from exc
        except dkim.ValidationError as exc:  # a signature that does not verify (body changed)
            result = "fail"
            notes.append(f"dkim: {exc}")
        except dkim.DKIMException as exc:  # a signature or key that cannot be read
            result = "permerror"
            notes.append(f"dkim: {exc}")
        domain = (verifier.domain or b"").decode("ascii", "replace").lower()
        signatures.append((domain, result))

    spf_result, spf_domain = "none", ""
    if ip:
        sender = mail_from.strip("<>") or (f"postmaster@{helo}" if helo else "")
        spf_domain = domain_of(sender)
        try:
            spf_result, explanation = spf.check2(i=ip, s=sender, h=helo or spf_domain,
                                                 querytime=2 * DNS_TIMEOUT)
        except Exception as exc:  # noqa: BLE001 (pyspf's own errors are results below)
            spf_result, explanation = "temperror", str(exc)
        if spf_result == "temperror":
            raise DnsUnavailable(f"SPF of {spf_domain}: {explanation}")
        if spf_result == "permerror":
            notes.append(f"spf: {explanation}")

    record = dmarc_record(from_domain) if from_domain else None
    strict_dkim = bool(record) and record.get("adkim") == "s"
    strict_spf = bool(record) and record.get("aspf") == "s"
    dkim_aligned = any(result == "pass" and aligned(domain, from_domain, strict_dkim)
                       for domain, result in signatures)
    spf_aligned = spf_result == "pass" and aligned(spf_domain, from_domain, strict_spf)
    passed = dkim_aligned or spf_aligned
    return Verdict(
        from_domain=from_domain, spf=spf_result, spf_domain=spf_domain,
        dkim=tuple(signatures), dmarc=("pass" if passed else "fail") if record else "none",
        dmarc_policy=record.get("p") if record else None, aligned=passed,
        notes=tuple(notes))


def _headers(raw: bytes) -> list[tuple[str, str]]:
    head = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(raw)
    return [(name, str(value)) for name, value in head.items()]


# ---------------------------------------------------------------------- trusted header


def trusted(raw: bytes, authserv_id: str, from_domain: str) -> Verdict | None:
    """The verdict of the topmost ``Authentication-Results`` header written by
    ``authserv_id`` (the MTA or mailbox provider in front, which removes forged ones of its
    own id, RFC 8601 §5); None if the mail carries none (then nothing is known)."""
    for name, value in _headers(raw):
        if name.lower() != "authentication-results":
            continue
        text = " ".join(value.split())
        parsed = _parse_results(text, authserv_id)
        if parsed is None:
            continue
        return _verdict_from(parsed, text, authserv_id, from_domain)
    return None


def _parse_results(text: str, authserv_id: str) -> authres.AuthenticationResultsHeader | None:
    wanted = authserv_id.lower()
    if wanted == MICROSOFT_365:
        # "spf=pass (sender IP is ...) smtp.mailfrom=...; dkim=...": no authserv-id first.
        if not re.match(r"^\s*(spf|dkim|dmarc|arc|compauth)=", text, re.IGNORECASE):
            return None
        text = f"{MICROSOFT_365}; {text}"
    try:
        header = authres.AuthenticationResultsHeader.parse_value(text)
    except Exception:  # noqa: BLE001 (an unreadable header tells nothing)
        return None
    return header if (header.authserv_id or "").lower() == wanted else None


def _verdict_from(header: authres.AuthenticationResultsHeader, text: str, authserv_id: str,
                  from_domain: str) -> Verdict:
    spf_result, spf_domain, dmarc, signatures = "none", "", "none", []
    for result in header.results:
        method = (result.method or "").lower()
        props = {f"{p.type}.{p.name}".lower(): (p.value or "") for p in result.properties}
        if method == "spf" and spf_result == "none":
            spf_result = (result.result or "none").lower()
            spf_domain = domain_of(props.get("smtp.mailfrom") or props.get("smtp.helo", ""))
        elif method == "dkim":
            domain = props.get("header.d") or domain_of(props.get("header.i", ""))
            signatures.append((domain.lower(), (result.result or "none").lower()))
        elif method == "dmarc":
            dmarc = (result.result or "none").lower()
    policy = re.search(r"dmarc=\w+[^;]*?\b(?:p|action)=(\w+)", text, re.IGNORECASE)
    dmarc_policy = policy.group(1).lower() if policy else None
    if dmarc_policy in {"oreject", "pquarantine"}:  # Microsoft's "override" actions
        dmarc_policy = dmarc_policy[1:]
    if dmarc in {"pass", "fail"}:  # the provider applied the domain's own record
        passed = dmarc == "pass"
    else:  # no record: the relaxed test, as when checked here
        passed = (spf_result == "pass" and aligned(spf_domain, from_domain)) or any(
            result == "pass" and aligned(domain, from_domain) for domain, result in signatures)
    return Verdict(from_domain=from_domain, spf=spf_result, spf_domain=spf_domain,
                   dkim=tuple(signatures), dmarc=dmarc, dmarc_policy=dmarc_policy,
                   aligned=passed, by=authserv_id)
