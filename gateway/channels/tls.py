"""TLS for the SMTP edge: the server's context from its certificate, and a self-signed
certificate made once for the demo and the tests.

A self-signed certificate is fine for STARTTLS between MTAs: RFC 3207 §4.1 leaves the client
to decide what it trusts, and MTAs delivering to us opportunistically do not check it. A
production listener that customers' servers should verify gets a real certificate through
HELPDESK_SMTP_TLS_CERT / HELPDESK_SMTP_TLS_KEY.
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
import shutil
import ssl
import tempfile
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

log = logging.getLogger("gateway.smtp")

SELF_SIGNED_DIR = "smtp-tls"  # under HELPDESK_VAR_DIR: cert.pem and key.pem
DEMO_DAYS = 825  # the longest validity clients accept for a server certificate


def server_context(cert: Path, key: Path | None = None) -> ssl.SSLContext:
    """The server side of STARTTLS. The client is not asked for a certificate (aiosmtpd
    warns when the context would check one): senders are judged by SPF, DKIM and DMARC."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    return context


def self_signed(var_dir: Path, hostname: str) -> tuple[Path, Path]:
    """A certificate for ``hostname`` (and localhost, 127.0.0.1) and its key, made once into
    ``var_dir``/smtp-tls/ and reused after; returns their paths (certificate, key)."""
    directory = var_dir / SELF_SIGNED_DIR
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    if not cert_path.exists():
        _make(directory, hostname)
    return cert_path, key_path


def _make(directory: Path, hostname: str) -> None:
    """Both files are written into a folder of their own, renamed into place whole: a process
    starting at the same moment uses one pair or the other, never one's key with the other's
    certificate."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    making = Path(tempfile.mkdtemp(prefix=".smtp-tls-", dir=directory.parent))
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = datetime.datetime.now(datetime.UTC)
    names: list[x509.GeneralName] = [x509.DNSName(n) for n in dict.fromkeys([hostname,
                                                                             "localhost"])]
    names.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=DEMO_DAYS))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    (making / "key.pem").write_bytes(key_pem)  # mkdtemp's folder is ours only (0700)
    (making / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    try:
        making.rename(directory)
    except OSError:  # another process was first: theirs is used
        shutil.rmtree(making, ignore_errors=True)
        return
    log.info("made a self-signed certificate for %s in %s", hostname, directory)
