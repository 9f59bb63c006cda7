"""Sender authentication (HELPDESK_SENDER_AUTH): SPF, DKIM and DMARC-style alignment checked
against a DNS server of the tests' own on loopback, with mails signed by dkimpy with keys made
for the test; over real SMTP (the gateway running) and over IMAP (Dovecot), where the
provider's Authentication-Results are trusted per mailbox. The attacks that worked before end
held for the team: not on María's ticket, no mail to a forged address, and her real mail still
gets through."""

from __future__ import annotations

import dataclasses
import json
import smtplib
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

import dns.resolver
import pytest
from click.testing import CliRunner
from sqlmodel import Session, col, select

from gateway.inbound import sender_auth
from gateway.service import build
from gateway.settings import imap_mailboxes
from storage.models import InboundMessage, Message, Notification, Ticket
from tests.conftest import RunningService, wait_for
from tests.dns_server import LocalDns, sign

MARIA = "maria.garcia@ferreteria-lopez.es"
LUCIA = "lucia.martin@clinicadental-sur.com"


@pytest.fixture
def dns_server():
    server = LocalDns().start()
    sender_auth.use_dns_servers((server.address,))
    try:
        yield server
    finally:
        server.stop()
        dns.resolver.reset_default_resolver()


@pytest.fixture
def keys(dns_server):
    """The test world's DNS: the hardware shop signs with DKIM and publishes a DMARC record,
    its SPF names another server than the test client (so only DKIM can pass for it); the
    clinic has SPF for the test client and nothing else; the attacker's own domain, a mailing
    list and a newsletter service have SPF for the test client; the newsletter service signs
    with its own key."""
    zone = dns_server
    zone.txt("ferreteria-lopez.es", "v=spf1 ip4:192.0.2.10 -all")
    zone.txt("_dmarc.ferreteria-lopez.es", "v=DMARC1; p=reject; rua=mailto:d@ferreteria-lopez.es")
    zone.txt("clinicadental-sur.com", "v=spf1 ip4:127.0.0.1 -all")
    for other in ("evil.example", "lists.example", "sendgrid.example"):
        zone.txt(other, "v=spf1 ip4:127.0.0.1 -all")
    return {"shop": zone.key("ferreteria-lopez.es"),
            "shop-mail": zone.key("mail.ferreteria-lopez.es"),
            "sendgrid": zone.key("sendgrid.example")}


@pytest.fixture
def guarded(settings, directory, smtp_sink, dns_server, keys):
    """The gateway with HELPDESK_SENDER_AUTH=enforce resolving through the test DNS."""
    _handler, port = smtp_sink
    judged = dataclasses.replace(settings, relay_host="127.0.0.1", relay_port=port,
                                 sender_auth="enforce", dns_servers=(dns_server.address,))
    with RunningService(judged) as running:
        yield running


def mail(sender: str = f"María García <{MARIA}>", subject: str = "Error al generar la factura",
         body: str = "Buenos días,\n\nLa factura de noviembre sale con el IVA mal.\n",
         headers: dict[str, str] | None = None) -> bytes:
    message = EmailMessage()
    for name, value in (headers or {}).items():
        message[name] = value
    message["From"] = sender
    message["To"] = "soporte@example.com"
    message["Subject"] = subject
    message["Date"] = format_datetime(datetime.now(UTC))
    message["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2].strip(">"))
    message.set_content(body)
    return message.as_bytes(policy=message.policy.clone(linesep="\r\n"))


def send(gateway, raw: bytes, mail_from: str, helo: str = "mail.example.net") -> int:
    """Over SMTP from 127.0.0.1; the queue id of the mail once it has an outcome."""
    with smtplib.SMTP("127.0.0.1", gateway.smtp_port, local_hostname=helo, timeout=10) as smtp:
        smtp.sendmail(mail_from, ["soporte@example.com"], raw)
    engine = gateway.service.parts.engine
    with Session(engine) as session:
        newest = session.exec(select(InboundMessage).order_by(
            col(InboundMessage.id).desc())).first()
    assert newest is not None and newest.id is not None
    wait_for(lambda: outcome(engine, newest.id)[0] is not None, timeout=30)
    return newest.id


def outcome(engine, inbound_id: int) -> tuple[str | None, str | None, bool | None]:
    with Session(engine) as session:
        row = session.get(InboundMessage, inbound_id)
        assert row is not None
        return row.outcome, row.reason, row.authenticated


def test_the_authentication_matrix_over_smtp(guarded, dns_server, keys):
    engine = guarded.service.parts.engine

    def judged(raw: bytes, mail_from: str) -> tuple[str | None, str, bool | None]:
        found, reason, authenticated = outcome(engine, send(guarded, raw, mail_from))
        return found, reason or "", authenticated

    # DKIM pass, aligned (SPF fails: the test client is not the shop's server).
    found, _, authenticated = judged(sign(mail(), "ferreteria-lopez.es", keys["shop"]), MARIA)
    assert (found, authenticated) == ("created", True)
    # SPF pass for the envelope sender, aligned, no DKIM at all.
    found, _, authenticated = judged(mail(f"Lucía Martín <{LUCIA}>"), LUCIA)
    assert (found, authenticated) == ("created", True)
    # Signed by a subdomain of the shop: relaxed alignment (the shop's record says nothing).
    found, _, _ = judged(sign(mail(), "mail.ferreteria-lopez.es", keys["shop-mail"]), MARIA)
    assert found == "created"
    # Forged: the attacker's own domain passes SPF, which says nothing of the shop.
    found, reason, authenticated = judged(mail(), "attacker@evil.example")
    assert (found, authenticated) == ("quarantined", False)
    assert "spf=pass (evil.example)" in reason and "dmarc=fail (p=reject)" in reason
    # Through a mailing list: the footer breaks the shop's signature, the list's envelope is
    # not the shop's.
    listed = sign(mail(), "ferreteria-lopez.es", keys["shop"]).replace(
        b"Subject: Error", b"Subject: [soporte-list] Error") + b"-- \r\nLista soporte-list\r\n"
    found, reason, _ = judged(listed, "soporte-list-bounces@lists.example")
    assert found == "quarantined" and "dkim=fail (ferreteria-lopez.es)" in reason
    # Signed by a third party (a newsletter service) for its own domain: not the shop's.
    found, reason, _ = judged(sign(mail(), "sendgrid.example", keys["sendgrid"]),
                              "bounce-123@sendgrid.example")
    assert found == "quarantined" and "dkim=pass (sendgrid.example)" in reason
    # No record at all for the clinic any more: nothing passes.
    dns_server.zone.txt.pop("clinicadental-sur.com")
    found, reason, _ = judged(mail(f"Lucía Martín <{LUCIA}>"), LUCIA)
    assert found == "quarantined" and "spf=none" in reason and "dkim=none" in reason
    # The shop asks for strict alignment: its subdomain's signature no longer counts.
    dns_server.txt("_dmarc.ferreteria-lopez.es", "v=DMARC1; p=reject; adkim=s")
    found, reason, _ = judged(sign(mail(), "mail.ferreteria-lopez.es", keys["shop-mail"]),
                              MARIA)
    assert found == "quarantined" and "dkim=pass (mail.ferreteria-lopez.es)" in reason
    found, _, _ = judged(sign(mail(), "ferreteria-lopez.es", keys["shop"]), MARIA)
    assert found == "created"

    # Every verdict is kept on its queued mail, and shown with the message in the API.
    with Session(engine) as session:
        rows = session.exec(select(InboundMessage).order_by(col(InboundMessage.id))).all()
        first = session.exec(select(Message).where(Message.inbound_id == rows[0].id)).one()
        ticket = session.get(Ticket, first.ticket_id)
    assert all(row.sender_auth for row in rows)
    assert json.loads(rows[0].sender_auth)["dkim"] == [["ferreteria-lopez.es", "pass"]]
    assert ticket is not None
    from storage.agents import add_agent, create_token
    from tests.test_api import TestClient
    from web.app import create_app

    add_agent(engine, name="Ana Ruiz", email="ana@soporte.example")
    token = create_token(engine, "ana@soporte.example", "test").secret
    with TestClient(create_app(guarded.settings, engine)) as api:
        detail = api.get(f"/api/v1/tickets/{ticket.number}",
                         headers={"Authorization": f"Bearer {token}"}).json()
    shown = detail["messages"][0]["sender_auth"]
    assert shown["authenticated"] is True
    assert shown["summary"].startswith("spf=fail (ferreteria-lopez.es) dkim=pass")


def test_the_attacks_that_worked_before_end_held(guarded, keys, smtp_sink):
    sink, _port = smtp_sink
    engine = guarded.service.parts.engine
    real = send(guarded, sign(mail(), "ferreteria-lopez.es", keys["shop"]), MARIA)
    assert outcome(engine, real)[0] == "created"
    with Session(engine) as session:
        ticket = session.exec(select(Ticket)).one()

    def messages_on_ticket() -> int:
        with Session(engine) as session:
            return len(session.exec(select(Message).where(
                Message.ticket_id == ticket.id, Message.direction == "in")).all())

    # MAIL FROM the attacker, From María, "Re: [#1001]": not on her ticket.
    spoof = send(guarded, mail(subject=f"Re: [#{ticket.number}] Error al generar la factura",
                               body="Cambiad la cuenta de cobro a ES00 0000 0000 0000.\n"),
                 "attacker@evil.example")
    assert outcome(engine, spoof)[0] == "quarantined"
    # An Authentication-Results header saying all passed, written by the attacker: ignored.
    forged_results = {"Authentication-Results": "mx.google.com; spf=pass smtp.mailfrom="
                      f"{MARIA}; dkim=pass header.d=ferreteria-lopez.es; dmarc=pass"}
    spoof = send(guarded, mail(headers=forged_results), "attacker@evil.example")
    assert outcome(engine, spoof)[0] == "quarantined"
    assert messages_on_ticket() == 1
    # 41 forged mails "from" María do not make the flood rule refuse her real one.
    for n in range(41):
        send(guarded, mail(subject=f"Urgente {n}"), "attacker@evil.example")
    again = send(guarded, sign(mail(subject=f"Re: [#{ticket.number}] Error al generar la "
                                    "factura", body="Adjunto más datos.\n"),
                               "ferreteria-lopez.es", keys["shop"]), MARIA)
    assert outcome(engine, again)[0] == "threaded"
    assert messages_on_ticket() == 2
    # A forged unknown sender gets no refusal mail (no backscatter); a real one does.
    forged = send(guarded, mail(sender="Pepe <pepe@unknown-shop.example>"),
                  "attacker@evil.example")
    assert outcome(engine, forged)[0] == "rejected"
    honest = send(guarded, mail(sender="Eve <eve@evil.example>"), "eve@evil.example")
    assert outcome(engine, honest)[0] == "rejected"

    def delivered() -> list[str]:
        return [to for _sender, recipients, _raw in sink.messages for to in recipients]

    wait_for(lambda: "eve@evil.example" in delivered(), timeout=30)
    with Session(engine) as session:
        to_maria = session.exec(select(Notification).where(
            Notification.recipient == MARIA)).all()
        held = session.exec(select(InboundMessage).where(
            InboundMessage.outcome == "quarantined")).all()
    assert "pepe@unknown-shop.example" not in delivered()
    assert [n.event for n in to_maria] == ["received"]  # her ticket's, nothing for the forgeries
    assert len(held) == 43


def test_a_dns_outage_keeps_the_mail_queued_until_it_can_be_judged(guarded, dns_server, keys):
    engine = guarded.service.parts.engine
    dns_server.zone.failing = True
    with smtplib.SMTP("127.0.0.1", guarded.smtp_port, timeout=10) as smtp:
        smtp.sendmail(MARIA, ["soporte@example.com"],
                      sign(mail(), "ferreteria-lopez.es", keys["shop"]))

    def waiting() -> InboundMessage | None:
        with Session(engine) as session:
            row = session.exec(select(InboundMessage)).one()
            return row if row.state == "queued" and row.next_attempt_at else None

    row = wait_for(waiting, timeout=30)
    assert row.outcome is None and "DNS" in (row.error or "") and row.failing_since
    dns_server.zone.failing = False
    wait_for(lambda: outcome(engine, row.id)[0] == "created", timeout=60)


def test_an_agent_or_the_cli_releases_a_held_mail_and_an_organization_can_be_relaxed(
        guarded, dns_server, keys):
    from gateway.cli import main
    from storage.agents import add_agent, create_token
    from tests.test_api import TestClient
    from tests.test_console import PASSWORD, sign_in
    from web.app import create_app

    engine = guarded.service.parts.engine
    first = send(guarded, mail(subject="Primera"), "attacker@evil.example")
    second = send(guarded, mail(subject="Segunda"), "someone@lists.example")
    env = {"HELPDESK_DATABASE_URL": guarded.settings.database_url,
           "HELPDESK_SECRET_KEY": str(guarded.settings.secret_key),
           "HELPDESK_STORAGE_DIR": str(guarded.settings.storage_dir)}
    runner = CliRunner()
    listed = runner.invoke(main, ["inbound", "quarantine"], env=env)
    assert listed.exit_code == 0, listed.output
    assert f"{first}  " in listed.output and "'Primera'" in listed.output
    assert "not aligned with ferreteria-lopez.es" in listed.output
    released = runner.invoke(main, ["inbound", "release", str(first), "--by", "Ana"], env=env)
    assert released.exit_code == 0, released.output
    wait_for(lambda: outcome(engine, first)[0] == "created", timeout=30)
    assert runner.invoke(main, ["inbound", "release", str(first)], env=env).exit_code != 0

    add_agent(engine, name="Luis Gil", email="luis@soporte.example", role="admin",
              password=PASSWORD)
    token = create_token(engine, "luis@soporte.example", "test").secret
    headers = {"Authorization": f"Bearer {token}"}
    with TestClient(create_app(guarded.settings, engine)) as api:
        held = api.get("/api/v1/quarantine", headers=headers).json()
        assert [(h["id"], h["subject"]) for h in held] == [(second, "Segunda")]
        assert held[0]["sender"] == f"María García <{MARIA}>"
        answer = api.post(f"/api/v1/quarantine/{second}/release", headers=headers)
        assert answer.status_code == 200, answer.text
        wait_for(lambda: outcome(engine, second)[0] == "created", timeout=30)
        assert api.post(f"/api/v1/quarantine/{second}/release",
                        headers=headers).status_code == 404
        detail = api.get("/api/v1/tickets/1002", headers=headers).json()
        assert detail["messages"][0]["sender_auth"]["released_by"] == \
            "luis@soporte.example (API)"
        assert detail["messages"][0]["sender_auth"]["authenticated"] is False
        # The console says so too, with the verdict on hover.
        assert sign_in(api, "luis@soporte.example").status_code == 303
        page = api.get("/team/tickets/1002").text
        assert 'data-authenticated="no"' in page
        assert "remitente no verificado; dejado pasar por luis@soporte.example (API)" in page
        assert "not aligned with ferreteria-lopez.es" in page

        # The shop's server cannot sign: relaxed to its DMARC policy. With p=reject, still
        # held; with p=none, let through.
        relaxed = api.patch("/api/v1/organizations/C0001", json={"sender_auth": "dmarc"},
                            headers=headers)
        assert relaxed.status_code == 200 and relaxed.json()["sender_auth"] == "dmarc"
    assert outcome(engine, send(guarded, mail(), "someone@lists.example"))[0] == "quarantined"
    dns_server.txt("_dmarc.ferreteria-lopez.es", "v=DMARC1; p=none")
    assert outcome(engine, send(guarded, mail(), "someone@lists.example"))[0] == "created"
    strict = runner.invoke(main, ["org", "sender-auth", "C0001", "strict"], env=env)
    assert strict.exit_code == 0, strict.output
    assert outcome(engine, send(guarded, mail(), "someone@lists.example"))[0] == "quarantined"


def test_report_mode_records_the_verdict_and_acts_as_before(settings, directory, dns_server,
                                                            keys):
    parts = build(dataclasses.replace(settings, sender_auth="report",
                                      dns_servers=(dns_server.address,)), directory)
    from storage import inbound

    queued = inbound.enqueue(parts.engine, parts.blobs, mail(), channel="smtp",
                             source="127.0.0.1", mail_from="attacker@evil.example")
    result = parts.ingestor.process_next(queued)
    assert result.outcome == "created"
    assert outcome(parts.engine, queued)[2] is False
    dns_server.zone.failing = True  # report: an unknown verdict does not hold the mail
    queued = inbound.enqueue(parts.engine, parts.blobs, mail(subject="Otra"), channel="smtp",
                             source="127.0.0.1", mail_from=MARIA)
    assert parts.ingestor.process_next(queued).outcome == "created"
    with Session(parts.engine) as session:
        row = session.get(InboundMessage, queued)
        assert row.authenticated is False and json.loads(row.sender_auth)["temporary"] is True


def test_imap_mailboxes_trust_their_provider_or_check_dkim(settings, directory, dovecot,
                                                           dns_server, keys):
    from tests.test_imap_poller import poller_for

    trusting = dovecot.url(auth_results="mx.google.com")
    parts = build(dataclasses.replace(settings, sender_auth="enforce",
                                      dns_servers=(dns_server.address,),
                                      imap_mailboxes=imap_mailboxes(trusting)), directory)
    google_pass = {"Authentication-Results": (
        f"mx.google.com; dkim=pass header.i=@ferreteria-lopez.es header.s=sel header.b=Ab12; "
        f"spf=pass (google.com: domain of {MARIA} designates 192.0.2.10 as permitted sender) "
        f"smtp.mailfrom={MARIA}; dmarc=pass (p=REJECT sp=REJECT dis=NONE) "
        "header.from=ferreteria-lopez.es")}
    dovecot.append(mail(headers=google_pass))
    # Google's own verdict on top says it failed; an older one below, written by the attacker
    # with Google's name, says it passed: the topmost counts.
    forged = mail(subject="Cambio de cuenta", headers={
        "Authentication-Results": "mx.google.com; spf=softfail smtp.mailfrom=evil.example; "
                                  "dkim=none; dmarc=fail (p=REJECT sp=REJECT dis=QUARANTINE) "
                                  "header.from=ferreteria-lopez.es"})
    forged = forged.replace(b"From:", b"Authentication-Results: mx.google.com; dmarc=pass "
                                      b"header.from=ferreteria-lopez.es\r\nFrom:", 1)
    dovecot.append(forged)
    poller = poller_for(parts, trusting)
    assert poller.run_once() == 2
    assert parts.ingestor.process_next().outcome == "created"
    held = parts.ingestor.process_next()
    assert held.outcome == "quarantined" and "dmarc=fail (p=reject)" in held.reason
    assert "by mx.google.com" in held.reason

    # A mailbox trusting nobody: DKIM checked here (no client address, so no SPF).
    plain = dovecot.url(folder="Otros")
    with dovecot.client() as client:
        client.create_folder("Otros")
    dovecot.append(sign(mail(subject="Firmado"), "ferreteria-lopez.es", keys["shop"]), "Otros")
    dovecot.append(mail(subject="Sin firmar"), "Otros")
    poller_for(parts, plain).run_once()
    signed, unsigned = parts.ingestor.process_next(), parts.ingestor.process_next()
    assert signed.outcome == "threaded" or signed.outcome == "created"
    assert unsigned.outcome == "quarantined" and "spf=none" in unsigned.reason


def test_verdicts_of_providers_headers_are_read():
    microsoft = (b"Authentication-Results: spf=pass (sender IP is 192.0.2.10) "
                 b"smtp.mailfrom=ferreteria-lopez.es; dkim=none (message not signed) "
                 b"header.d=none;dmarc=pass action=none header.from=ferreteria-lopez.es;"
                 b"compauth=pass reason=100\r\n" + mail())
    verdict = sender_auth.trusted(microsoft, "microsoft365", "ferreteria-lopez.es")
    assert verdict is not None and verdict.authenticated and verdict.spf == "pass"
    assert verdict.dmarc_policy == "none"
    assert sender_auth.trusted(microsoft, "mx.google.com", "ferreteria-lopez.es") is None
    quarantined = microsoft.replace(b"dmarc=pass action=none", b"dmarc=fail action=oreject")
    verdict = sender_auth.trusted(quarantined, "microsoft365", "ferreteria-lopez.es")
    assert verdict is not None and not verdict.authenticated
    assert verdict.dmarc_policy == "reject"
    # Alignment: the organizational domain, or the very domain when strict.
    assert sender_auth.aligned("mail.ferreteria-lopez.es", "ferreteria-lopez.es")
    assert not sender_auth.aligned("mail.ferreteria-lopez.es", "ferreteria-lopez.es",
                                   strict=True)
    assert not sender_auth.aligned("ferreteria-lopez.com", "ferreteria-lopez.es")
    assert sender_auth.organizational("a.b.example.co.uk") == "example.co.uk"
