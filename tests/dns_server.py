"""A DNS server on loopback for tests (dnslib): the SPF, DKIM and DMARC records of test domains,
answered over UDP and TCP; ``failing`` turns every answer into SERVFAIL (DNS in trouble)."""

from __future__ import annotations

import base64

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from dnslib import QTYPE, RCODE, RR, TXT
from dnslib.server import BaseResolver, DNSLogger, DNSServer

from tests.conftest import free_port


class _Zone(BaseResolver):
    def __init__(self) -> None:
        self.txt: dict[str, list[str]] = {}
        self.failing = False
        self.asked: list[str] = []

    def resolve(self, request, handler):  # noqa: ANN001 (dnslib's interface)
        reply = request.reply()
        name = str(request.q.qname).rstrip(".").lower()
        self.asked.append(f"{QTYPE[request.q.qtype]} {name}")
        if self.failing:
            reply.header.rcode = RCODE.SERVFAIL
            return reply
        known = {n for n in self.txt} | {n.split(".", 1)[1] for n in self.txt if "." in n}
        if request.q.qtype == QTYPE.TXT and name in self.txt:
            for text in self.txt[name]:
                chunks = [text[i:i + 255] for i in range(0, len(text), 255)] or [""]
                reply.add_answer(RR(name, QTYPE.TXT, rdata=TXT(chunks), ttl=60))
        elif name not in known:
            reply.header.rcode = RCODE.NXDOMAIN
        return reply


class LocalDns:
    """``records`` maps names to TXT records; ``key(domain, selector)`` publishes a DKIM key
    made for the test and returns the private key (PEM) to sign with."""

    def __init__(self) -> None:
        self.zone = _Zone()
        self.port = free_port()
        quiet = DNSLogger(log="-request,-reply,-truncated,-error", logf=lambda _line: None)
        self._servers = [DNSServer(self.zone, port=self.port, address="127.0.0.1", tcp=tcp,
                                   logger=quiet) for tcp in (False, True)]

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> LocalDns:
        for server in self._servers:
            server.start_thread()
        return self

    def stop(self) -> None:
        for server in self._servers:
            server.stop()
            server.server.server_close()

    def txt(self, name: str, *texts: str) -> None:
        self.zone.txt[name.lower()] = list(texts)

    def key(self, domain: str, selector: str = "sel") -> bytes:
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        public = private.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        self.txt(f"{selector}._domainkey.{domain}",
                 f"v=DKIM1; k=rsa; p={base64.b64encode(public).decode()}")
        return private.private_bytes(serialization.Encoding.PEM,
                                     serialization.PrivateFormat.TraditionalOpenSSL,
                                     serialization.NoEncryption())


def sign(raw: bytes, domain: str, key: bytes, selector: str = "sel") -> bytes:
    """The mail with a DKIM-Signature of ``domain`` on top (relaxed/relaxed, as most MTAs)."""
    signature = dkim.sign(raw, selector.encode(), domain.encode(), key,
                          canonicalize=(b"relaxed", b"relaxed"),
                          include_headers=[b"from", b"to", b"subject", b"date", b"message-id"])
    return signature + raw
