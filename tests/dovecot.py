"""A real Dovecot IMAP server for the tests: loopback ports, its own directory, a self-signed cert.

``Dovecot`` writes a minimal dovecot.conf (IMAP with STARTTLS, and IMAPS, on free ports of
127.0.0.1; one user in a passwd-file; maildir storage; XOAUTH2 checked against a small local
token-introspection endpoint) and runs ``dovecot -F -c dovecot.conf`` until ``stop()``. Mail gets
into it the way it gets into any mailbox a client shares: IMAP APPEND.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import re
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, quote, urlencode

from imapclient import IMAPClient

from tests.conftest import free_port

DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"
OPENSSL = shutil.which("openssl") or "/usr/bin/openssl"

CONFIG = """\
base_dir = {dir}/run
state_dir = {dir}/state
instance_name = helpdesk-test-{imap_port}
log_path = {dir}/dovecot.log
protocols = imap
# No statistics service: nothing reads them, and login processes would wait for it on shutdown.
stats_writer_socket_path =
listen = 127.0.0.1
ssl = yes
ssl_cert = <{dir}/cert.pem
ssl_key = <{dir}/key.pem
auth_mechanisms = plain login xoauth2
auth_failure_delay = 0
default_internal_user = {internal_user}
default_internal_group = {internal_group}
default_login_user = {login_user}
first_valid_uid = {uid}
first_valid_gid = {gid}
mail_location = maildir:~/Maildir
# Dovecot may miss a change made while an IDLE is being set up and only finds it at this
# periodic check (30 s by default); 1 s keeps the tests that race an APPEND against IDLE quick.
mailbox_idle_check_interval = 1 secs
{capabilities}
namespace inbox {{
  inbox = yes
  separator = /
}}
passdb {{
  driver = oauth2
  mechanisms = xoauth2
  args = {dir}/oauth2.conf
}}
passdb {{
  driver = passwd-file
  mechanisms = plain login
  args = scheme=PLAIN {dir}/users
}}
userdb {{
  driver = passwd-file
  args = {dir}/users
}}
# No chroot: an unprivileged user running Dovecot (a developer's machine) may not chroot.
service anvil {{
  chroot =
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    port = {imap_port}
  }}
  inet_listener imaps {{
    port = {imaps_port}
    ssl = yes
  }}
}}
"""

OAUTH2_CONFIG = """\
introspection_mode = post
introspection_url = http://127.0.0.1:{port}/introspect
username_attribute = username
active_attribute = active
active_value = true
"""


class Dovecot:
    """One Dovecot with one user, ``user`` / ``password``; OAuth2 tokens in ``valid_tokens``."""

    user = "soporte"
    password = "clave de prueba"  # noqa: S105 (a test account)

    def __init__(self, capabilities: str = "") -> None:
        """``capabilities`` replaces what Dovecot advertises after login, to play an older
        server (without IDLE or MOVE, say); the commands themselves keep working."""
        # Not pytest's tmp_path: its parents are private to the test runner's user, and as root
        # Dovecot runs the mailbox as an unprivileged user who must reach the maildir.
        self.dir = Path(tempfile.mkdtemp(prefix="helpdesk-dovecot-"))
        self.dir.chmod(0o755)
        self.cafile = self.dir / "cert.pem"
        self.imap_port = free_port()
        self.imaps_port = free_port()
        self.valid_tokens: set[str] = set()
        self.capabilities = capabilities
        self._process: subprocess.Popen[bytes] | None = None
        self._introspection: ThreadingHTTPServer | None = None

    # ------------------------------------------------------------------ lifetime

    def start(self, timeout: float = 20.0) -> Dovecot:
        self._make_certificate()
        self._start_introspection()
        internal_user, internal_group, login_user, uid, gid = _accounts()
        home = self.dir / "home" / self.user
        home.mkdir(parents=True)
        os.chown(home, uid, gid)
        users = self.dir / "users"
        users.write_text(f"{self.user}:{self.password}:{uid}:{gid}::{home}\n")
        assert self._introspection is not None
        (self.dir / "oauth2.conf").write_text(
            OAUTH2_CONFIG.format(port=self._introspection.server_address[1]))
        config = self.dir / "dovecot.conf"
        config.write_text(CONFIG.format(
            dir=self.dir, imap_port=self.imap_port, imaps_port=self.imaps_port,
            internal_user=internal_user, internal_group=internal_group, login_user=login_user,
            uid=uid, gid=gid,
            capabilities=f"imap_capability = {self.capabilities}" if self.capabilities else ""))
        with (self.dir / "dovecot.out").open("wb") as out:
            self._process = subprocess.Popen([DOVECOT, "-F", "-c", str(config)], stdout=out,
                                             stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while not (_listening(self.imap_port) and _listening(self.imaps_port)):
            if self._process.poll() is not None or time.monotonic() > deadline:
                output = self.log_text()
                self.stop()
                raise RuntimeError(f"Dovecot did not start:\n{output}")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(10)
            self._process = None
        if self._introspection is not None:
            self._introspection.shutdown()
            self._introspection.server_close()
            self._introspection = None
        shutil.rmtree(self.dir, ignore_errors=True)

    def log_text(self) -> str:
        parts = [path.read_text(errors="replace") for path in
                 (self.dir / "dovecot.out", self.dir / "dovecot.log") if path.exists()]
        return "\n".join(parts)

    # ------------------------------------------------------------------ for the tests

    def url(self, scheme: str = "imaps", folder: str = "INBOX", *, password: str | None = None,
            **options: str) -> str:
        """A HELPDESK_IMAP_MAILBOXES entry for this server; the CA file is trusted by default."""
        port = self.imaps_port if scheme == "imaps" else self.imap_port
        options = {"cafile": str(self.cafile), **options}
        query = urlencode({name: value for name, value in options.items() if value})
        secret = self.password if password is None else password
        userinfo = quote(self.user, safe="") + (f":{quote(secret, safe='')}" if secret else "")
        return f"{scheme}://{userinfo}@127.0.0.1:{port}/{quote(folder)}?{query}"

    def client(self) -> IMAPClient:
        """A logged-in client over IMAPS (close it with ``with``)."""
        context = ssl.create_default_context(cafile=str(self.cafile))
        client = IMAPClient("127.0.0.1", port=self.imaps_port, ssl=True, ssl_context=context,
                            timeout=10)
        client.login(self.user, self.password)
        return client

    def append(self, raw: bytes, folder: str = "INBOX",
               flags: tuple[bytes, ...] = ()) -> tuple[int, int]:
        """Put a mail into a folder with IMAP APPEND; its ``(UIDVALIDITY, UID)``."""
        with self.client() as client:
            response = client.append(folder, raw, flags=flags)
        # RFC 4315 §3: the APPENDUID response code names where the message went.
        found = re.search(rb"APPENDUID (\d+) (\d+)", response)
        assert found, response
        return int(found.group(1)), int(found.group(2))

    def flags(self, uid: int, folder: str = "INBOX") -> set[bytes]:
        with self.client() as client:
            client.select_folder(folder, readonly=True)
            return set(client.get_flags([uid]).get(uid, ()))

    def uids(self, folder: str = "INBOX") -> list[int]:
        with self.client() as client:
            client.select_folder(folder, readonly=True)
            return sorted(client.search("ALL"))

    def fetch(self, uid: int, folder: str = "INBOX") -> bytes:
        with self.client() as client:
            client.select_folder(folder, readonly=True)
            return client.fetch([uid], ["BODY.PEEK[]"])[uid][b"BODY[]"]

    # ------------------------------------------------------------------ parts

    def _make_certificate(self) -> None:
        subprocess.run(
            [OPENSSL, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
             "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
             "-keyout", str(self.dir / "key.pem"), "-out", str(self.cafile)],
            check=True, capture_output=True,
        )

    def _start_introspection(self) -> None:
        """OAuth2 token introspection (RFC 7662) for Dovecot's oauth2 passdb: the tokens in
        ``valid_tokens`` are active and belong to our user; any other is expired."""
        dovecot = self

        class Introspection(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's hook name)
                form = parse_qs(self.rfile.read(int(self.headers["Content-Length"])).decode())
                token = form.get("token", [""])[0]
                body = {"active": True, "username": dovecot.user} \
                    if token in dovecot.valid_tokens else {"active": False}
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: object) -> None:  # quiet
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Introspection)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        self._introspection = server


def _accounts() -> tuple[str, str, str, int, int]:
    """Internal user and group, login user, and the mailbox owner's uid and gid.

    Dovecot will not run its login and mail processes as root. Started by root (CI), it uses the
    accounts its Debian package creates and keeps the mailbox as ``nobody``; started by anyone
    else, everything runs as that user.
    """
    if os.geteuid() == 0:
        nobody = pwd.getpwnam("nobody")
        return "dovecot", "dovecot", "dovenull", nobody.pw_uid, nobody.pw_gid
    me = pwd.getpwuid(os.getuid())
    group = grp.getgrgid(os.getgid()).gr_name
    return me.pw_name, group, me.pw_name, os.getuid(), os.getgid()


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False
