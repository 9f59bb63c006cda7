"""The `helpdesk` command: serve, migrate, ingest files, set up organizations (wiring only)."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import dataclasses
import email.parser
import email.policy
import json
import logging
import mailbox
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import click

from gateway import logs, team, webhooks
from gateway.collector import settled_while
from gateway.contacts import TYPES as CONTACT_TYPES
from gateway.inbound import batch
from gateway.links import PasswordLinks
from gateway.outbound import preview
from gateway.outbound.render import to_bytes
from gateway.ratings import queue_reminders
from gateway.service import Parts, build, run_forever, smtp_hostname
from gateway.settings import Settings
from gateway.team import TeamError
from gateway.verification import decide, pending_request_of
from gateway.workflow import TransitionError
from storage import inbound, queues, sessions
from storage import outbox as outbox_queue
from storage.agents import (
    add_agent,
    agent_by_email,
    agents,
    create_token,
    revoke_token,
    tokens,
)
from storage.agents import set_active as set_agent_active
from storage.db import transaction
from storage.demo import seed_if_empty
from storage.directory import (
    DirectoryError,
    add_application,
    add_contact,
    add_organization,
    edit_contact,
    set_sender_auth,
)
from storage.migrate import upgrade
from storage.models import (
    AGENT_ROLES,
    PRIORITIES,
    WEBHOOK_EVENTS,
    InboundMessage,
    Notification,
    Organization,
    aware,
    utcnow,
)
from storage.team import TicketFilter, find_tickets, ticket_record
from storage.tickets import contact_by_email, ticket_by_number

log = logging.getLogger("gateway.cli")


def _parts(ctx: click.Context, settings: Settings | None = None) -> Parts:
    """The gateway's parts for one command; its database engine is closed when the command ends."""
    parts = build(settings or _settings(ctx))
    ctx.call_on_close(parts.engine.dispose)
    return parts


@contextlib.contextmanager
def _told(*errors: type[Exception]) -> Iterator[None]:
    """A refusal from the layers below (a duplicate, an impossible transition) as a clean error
    message and exit status, not a traceback."""
    try:
        yield
    except errors as exc:
        raise click.ClickException(str(exc)) from exc


def _settings(ctx: click.Context) -> Settings:
    return ctx.obj["settings"]


@click.group()
@click.option("--database", "database_url", envvar="HELPDESK_DATABASE_URL", default=None,
              help="Database URL (default: SQLite file under var/).")
@click.option("--storage", "storage_dir", default=None, type=click.Path(path_type=Path),
              help="Attachment and raw-mail store directory.")
@click.option("-v", "--verbose", is_flag=True, help="Log at INFO level.")
@click.pass_context
def main(ctx: click.Context, database_url: str | None, storage_dir: Path | None,
         verbose: bool) -> None:
    """Email-driven helpdesk gateway."""
    settings = Settings.from_env()
    logs.configure(logging.INFO if verbose else logging.WARNING, settings.log_format)
    if database_url:
        settings = dataclasses.replace(settings, database_url=database_url)
    if storage_dir:
        settings = dataclasses.replace(settings, storage_dir=storage_dir.resolve())
    ctx.obj = {"settings": settings}


@main.command()
@click.option("--demo/--no-demo", default=False, help="Migrate and seed demo data if empty.")
@click.pass_context
def serve(ctx: click.Context, demo: bool) -> None:
    """Run the SMTP server, the ingest worker, the notifier and the web site."""
    settings = _settings(ctx)
    if not demo and (refusal := settings.refusal_to_serve()):
        raise click.ClickException(f"{refusal}. (`serve --demo` runs a local try with a "
                                   "generated key.)")
    # Senders are judged by default: held when not authenticated (serve), or only reported
    # (the demo, whose mail comes from anywhere); HELPDESK_SENDER_AUTH decides otherwise.
    settings = dataclasses.replace(
        settings, sender_auth=settings.sender_auth or ("report" if demo else "enforce"))
    logging.getLogger("gateway").setLevel(logging.INFO)
    banner = ""
    if demo:
        if settings.smtp_tls_cert is None:  # STARTTLS to try, with a certificate made once
            from gateway.channels.tls import self_signed  # (cryptography: for serve only)

            cert, key = self_signed(settings.var_dir, smtp_hostname(settings))
            settings = dataclasses.replace(settings, smtp_tls_cert=cert, smtp_tls_key=key)
        upgrade(settings.database_url)
        parts = build(settings)
        login = seed_if_empty(parts.engine)
        parts.engine.dispose()
        if login:
            banner = f"\n  demo login: {login.email} / {login.password}"
        else:
            banner = "\n  demo login: maria.garcia@ferreteria-lopez.es (if not changed)"
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_forever(settings, banner))


@main.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
@click.pass_context
def db_upgrade(ctx: click.Context) -> None:
    """Apply every pending migration."""
    upgrade(_settings(ctx).database_url)
    click.echo("database is up to date")


@main.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False,
                                                                   path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="One JSON line per message.")
@click.option("--database", "database_url", default=None, help="Database URL for this run.")
@click.option("--storage", "storage_dir", default=None, type=click.Path(path_type=Path),
              help="Blob store directory for this run.")
@click.option("--unknown-senders", type=click.Choice(["reject", "accept"]), default=None,
              help="Senders matching no organization: reject, or accept into the catch-all.")
@click.pass_context
def ingest(ctx: click.Context, files: tuple[Path, ...], as_json: bool, database_url: str | None,
           storage_dir: Path | None, unknown_senders: str | None) -> None:
    """Feed raw .eml files (or mbox files) through the same pipeline as SMTP."""
    settings = _settings(ctx)
    changes: dict[str, object] = {}
    if database_url:
        changes["database_url"] = database_url
    if storage_dir:
        changes["storage_dir"] = storage_dir.resolve()
    if unknown_senders:
        changes["unknown_senders"] = unknown_senders
    settings = dataclasses.replace(settings, **changes)  # type: ignore[arg-type]
    upgrade(settings.database_url)
    parts = _parts(ctx, settings)
    with settled_while():  # (and the pool's processes, forked, start settled)
        for label, result in batch.ingest(parts.ingestor, _messages(files)):
            if as_json:
                click.echo(json.dumps({"file": label, **result}, ensure_ascii=False))
            else:
                click.echo(f"{label}: {result['outcome']}"
                           + (f" #{result['ticket']}" if result.get("ticket") else "")
                           + (f" ({result.get('reason')})" if result.get("reason") else ""))


def _messages(files: tuple[Path, ...]) -> Iterator[tuple[str, Path | bytes]]:
    """Each message of the files: a file is one mail (read where it is prepared), or an mbox
    of several."""
    for path in files:
        if not _is_mbox(path):
            yield str(path), path
            continue
        box = mailbox.mbox(path, create=False)
        try:
            for index, key in enumerate(box.iterkeys(), start=1):
                yield f"{path}#{index}", box.get_bytes(key)
        finally:
            box.close()


def _is_mbox(path: Path) -> bool:
    if path.suffix.lower() == ".mbox":
        return True
    with path.open("rb") as handle:
        start = handle.read(5)
        if start != b"From ":
            return False
        return b"\nFrom " in start + handle.read()


@main.group("inbound")
def inbound_group() -> None:
    """The inbound queue."""


@inbound_group.command("retry")
@click.argument("ids", nargs=-1, type=int)
@click.pass_context
def inbound_retry(ctx: click.Context, ids: tuple[int, ...]) -> None:
    """Queue failed mails again, and try now those waiting after temporary errors (all of them,
    or the ids given)."""
    parts = _parts(ctx)
    count = inbound.requeue_failed(parts.engine, list(ids) or None)
    click.echo(f"{count} mail(s) queued again")


@inbound_group.command("status")
@click.pass_context
def inbound_status(ctx: click.Context) -> None:
    """Mails by state, and the newest ones failed or waiting after temporary errors."""
    parts = _parts(ctx)
    counts, rows = queues.overview(parts.engine, InboundMessage)
    _echo_counts(counts)
    for row in rows:
        when = (f"failing since {row.failing_since:%Y-%m-%d %H:%M}, next try "
                f"{row.next_attempt_at:%H:%M:%S}" if row.state == "queued" and row.next_attempt_at
                else "failed")
        click.echo(f"  {row.id}  {row.channel}  {when} UTC  {row.error}")


@inbound_group.command("quarantine")
@click.option("--limit", default=50, show_default=True)
@click.pass_context
def inbound_quarantine(ctx: click.Context, limit: int) -> None:
    """Mails held because their sender was not authenticated (HELPDESK_SENDER_AUTH=enforce):
    id, when, who they claim to be, subject and why."""
    parts = _parts(ctx)
    with transaction(parts.engine, write=False) as session:
        rows = inbound.quarantined(session, limit)
        for row in rows:
            mail = _headline(parts, row.raw_key)
            click.echo(f"{row.id}  {row.received_at:%Y-%m-%d %H:%M}  {row.channel}  "
                       f"{mail[0]}  {mail[1]!r}\n    {row.reason}")
    if not rows:
        click.echo("no mail in quarantine")


@inbound_group.command("release")
@click.argument("inbound_id", type=int)
@click.option("--by", default="cli", show_default=True, help="Who vouches for the sender.")
@click.pass_context
def inbound_release(ctx: click.Context, inbound_id: int, by: str) -> None:
    """Let a quarantined mail through, as if its sender were authenticated: it is processed
    again (a ticket, a reply...) within seconds by the running gateway."""
    parts = _parts(ctx)
    with _told(LookupError):
        inbound.release_quarantined(parts.engine, inbound_id, by)
    click.echo(f"mail {inbound_id} released: queued again")


def _headline(parts: Parts, raw_key: str) -> tuple[str, str]:
    """A quarantined mail's From and Subject, as written."""
    head = email.parser.BytesHeaderParser(policy=email.policy.default).parsebytes(
        parts.blobs.get(raw_key))
    return str(head.get("from", "")), str(head.get("subject", ""))


@main.group()
def org() -> None:
    """Organizations (clientes)."""


@org.command("add")
@click.option("--code", required=True, help="Client code (código de cliente).")
@click.option("--tax-id", required=True, help="Tax id (CIF).")
@click.option("--name", required=True)
@click.option("--domain", "domains", multiple=True, help="A mail domain; repeat for several.")
@click.pass_context
def org_add(ctx: click.Context, code: str, tax_id: str, name: str,
            domains: tuple[str, ...]) -> None:
    """Add an organization."""
    parts = _parts(ctx)
    with _told(DirectoryError):
        add_organization(parts.engine, code=code, tax_id=tax_id, name=name, domains=list(domains))
    click.echo(f"organization {code} added")


@org.command("sender-auth")
@click.argument("code")
@click.argument("rule", type=click.Choice(["strict", "dmarc"]))
@click.pass_context
def org_sender_auth(ctx: click.Context, code: str, rule: str) -> None:
    """How mail from the organization's domain that fails sender authentication is treated:
    held for the team (strict, the default), or held only where the domain's DMARC policy
    says quarantine or reject (dmarc: a customer whose mail server cannot authenticate)."""
    parts = _parts(ctx)
    with _told(DirectoryError):
        set_sender_auth(parts.engine, code, rule)
    click.echo(f"organization {code}: sender authentication {rule}")


@org.command("plan")
@click.argument("code")
@click.argument("plan")
@click.pass_context
def org_plan(ctx: click.Context, code: str, plan: str) -> None:
    """Put an organization on an SLA plan (`helpdesk sla plan`)."""
    from gateway.sla_clocks import put_on_plan  # (holidays: for the SLA commands only)

    parts = _parts(ctx)
    with _told(LookupError, ValueError):
        put_on_plan(parts.engine, code, plan)
    click.echo(f"organization {code} is on plan {plan}")


@main.group()
def contact() -> None:
    """Contacts of organizations."""


def _types(value: str | None) -> str | None:
    """``billing,quotes,technical`` (any of them, any order) as stored, or None if not given."""
    if value is None:
        return None
    wanted = {part.strip().lower() for part in value.split(",") if part.strip()}
    unknown = wanted - set(CONTACT_TYPES)
    if unknown or not wanted:
        raise click.BadParameter(f"give one or more of {', '.join(CONTACT_TYPES)}",
                                 param_hint="--types")
    return ",".join(t for t in CONTACT_TYPES if t in wanted)


@contact.command("add")
@click.option("--org", "org_code", required=True, help="Client code of the organization.")
@click.option("--name", required=True)
@click.option("--email", required=True)
@click.option("--role", default="", help="Role in the company (cargo).")
@click.option("--phone", default="")
@click.option("--types", default="technical", show_default=True,
              help="Contact types, comma-separated: billing, quotes, technical.")
@click.option("--manager", is_flag=True, help="May manage the organization's contacts.")
@click.option("--language", type=click.Choice(["es", "en"]), default="es")
@click.option("--password", default=None, help="Web area password (omit: no web login yet).")
@click.pass_context
def contact_add(ctx: click.Context, org_code: str, name: str, email: str, role: str, phone: str,
                types: str, manager: bool, language: str, password: str | None) -> None:
    """Add a verified contact."""
    parts = _parts(ctx)
    with _told(DirectoryError):
        add_contact(parts.engine, organization_code=org_code, name=name, email=email,
                    password=password, is_manager=manager, language=language, role=role,
                    phone=phone, types=_types(types) or "technical")
    click.echo(f"contact {email.lower()} added to {org_code}")


@contact.command("edit")
@click.argument("email")
@click.option("--name", default=None)
@click.option("--new-email", default=None, help="A new address for the contact.")
@click.option("--role", default=None, help="Role in the company (cargo).")
@click.option("--phone", default=None)
@click.option("--types", default=None,
              help="Contact types, comma-separated: billing, quotes, technical.")
@click.option("--language", type=click.Choice(["es", "en"]), default=None)
@click.option("--manager/--no-manager", default=None, help="May manage the contacts.")
@click.option("--active/--inactive", default=None,
              help="Inactive: cannot sign in, and their mail is held as a stranger's.")
@click.pass_context
def contact_edit(ctx: click.Context, email: str, name: str | None, new_email: str | None,
                 role: str | None, phone: str | None, types: str | None,
                 language: str | None, manager: bool | None, active: bool | None) -> None:
    """Change a contact's details; only the options given change."""
    changes = {key: value for key, value in {
        "name": name, "email": new_email, "role": role, "phone": phone, "types": _types(types),
        "language": language, "is_manager": manager, "active": active}.items()
        if value is not None}
    if not changes:
        raise click.UsageError("nothing to change: give at least one option")
    parts = _parts(ctx)
    with _told(DirectoryError):
        changed = edit_contact(parts.engine, email, **changes)
    click.echo(f"contact {changed.email} changed: {', '.join(sorted(changes))}")


@contact.command("invite")
@click.argument("email")
@click.pass_context
def contact_invite(ctx: click.Context, email: str) -> None:
    """Mail a contact a single-use link to set their web area password."""
    settings = _settings(ctx)
    parts = _parts(ctx, settings)
    links = PasswordLinks(str(settings.secret_key), settings.public_url,
                          settings.password_link_hours)
    from gateway.accounts import queue_password_link  # (zxcvbn: for this command only)

    with transaction(parts.engine) as session:
        found = contact_by_email(session, email)
        if found is None or not found.active or found.state != "verified":
            raise click.ClickException(f"no active, verified contact {email.lower()}")
        queue_password_link(session, parts.workflow, links, found, invited=True)
    click.echo(f"set-password link queued for {email.lower()} (valid "
               f"{settings.password_link_hours} h)")


@contact.command("signout")
@click.argument("email")
@click.pass_context
def contact_signout(ctx: click.Context, email: str) -> None:
    """Sign a contact out everywhere: every session of theirs in the customer area ends."""
    parts = _parts(ctx)
    with transaction(parts.engine) as session:
        found = contact_by_email(session, email)
        if found is None:
            raise click.ClickException(f"no contact {email.lower()}")
        assert found.id is not None
        ended = sessions.end_all(session, found.id)
    click.echo(f"{email.lower()} signed out of {ended} session(s)")


@contact.command("verify")
@click.argument("email")
@click.option("--approve/--reject", required=True, help="The organization's answer.")
@click.option("--by", "actor", required=True, help="Who decides (and who told us).")
@click.pass_context
def contact_verify(ctx: click.Context, email: str, approve: bool, actor: str) -> None:
    """Decide a pending verification for the team (an organization without managers, or an
    answer that came by phone)."""
    parts = _parts(ctx)
    with transaction(parts.engine) as session:
        pending = pending_request_of(session, email)
        if pending is None:
            raise click.ClickException(f"no pending verification for {email.lower()}")
        decision = decide(session, parts.workflow, pending, approve=approve, actor=actor)
    outcome = "approved" if approve else "rejected"
    click.echo(f"{decision.sender.email} {outcome}; tickets {list(decision.tickets)}")


@main.group()
def mail() -> None:
    """Outgoing mail."""


@mail.command("preview")
@click.argument("event")
@click.option("--lang", type=click.Choice(["es", "en"]), default="es")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=None,
              help="Folder for the .eml (default: var/preview).")
@click.pass_context
def mail_preview(ctx: click.Context, event: str, lang: str, out_dir: Path | None) -> None:
    """Write a sample mail of EVENT as .eml (open it in any mail client)."""
    if event not in preview.events():
        raise click.ClickException(f"no template for {event!r}; events: "
                                   + ", ".join(preview.events()))
    target_dir = out_dir or _settings(ctx).var_dir / "preview"
    target_dir.mkdir(parents=True, exist_ok=True)
    target = target_dir / f"{event}-{lang}.eml"
    target.write_bytes(to_bytes(preview.sample(event, lang)))
    click.echo(str(target))


@main.group()
def outbox() -> None:
    """Outgoing mail queue."""


@outbox.command("send")
@click.pass_context
def outbox_send(ctx: click.Context) -> None:
    """Deliver every notification due now, then exit (the gateway does this continuously)."""
    parts = _parts(ctx)

    async def drain() -> int:
        total = 0
        while sent := await parts.sender.deliver_due():
            total += sent
        return total

    click.echo(f"{asyncio.run(drain())} notification(s) attempted")


@outbox.command("retry")
@click.argument("ids", nargs=-1, type=int)
@click.option("--refused", is_flag=True,
              help="Also the notifications the relay refused for good (5xx), say after a "
                   "relay's configuration was fixed.")
@click.pass_context
def outbox_retry(ctx: click.Context, ids: tuple[int, ...], refused: bool) -> None:
    """Send again now, with a fresh retry time: the notifications named (failed or waiting,
    whatever the reason), or else all those that gave up after temporary failures or wait for
    their next attempt."""
    parts = _parts(ctx)
    count = outbox_queue.retry(parts.engine, list(ids) or None, refused=refused)
    click.echo(f"{count} notification(s) queued again")


@outbox.command("status")
@click.pass_context
def outbox_status(ctx: click.Context) -> None:
    """Notifications by state, and the newest ones failed or waiting after temporary
    failures."""
    parts = _parts(ctx)
    counts, rows = queues.overview(parts.engine, Notification)
    _echo_counts(counts)
    for row in rows:
        when = (f"failing since {row.failing_since:%Y-%m-%d %H:%M} UTC, {row.attempts} "
                f"attempt(s), next {row.next_attempt_at:%Y-%m-%d %H:%M:%S}"
                if row.state == "queued" else f"failed ({row.failure or 'refused'})")
        click.echo(f"  {row.id}  {row.event} to {row.recipient}  {when}  {row.last_error}")


def _echo_counts(counts: dict[str, int]) -> None:
    click.echo(", ".join(f"{state}: {count}" for state, count in sorted(counts.items()))
               or "empty")


@main.group()
def ticket() -> None:
    """Agents' actions on tickets."""


@ticket.command("move")
@click.argument("number", type=int)
@click.argument("status")
@click.option("--actor", required=True, help="Who makes the change (an agent's name).")
@click.option("--note", default="")
@click.option("--date", "planned_for", type=click.DateTime(["%Y-%m-%d"]), default=None,
              help="The planned date (status planned).")
@click.option("--request", default=None, help="What we need (status awaiting_customer).")
@click.pass_context
def ticket_move(ctx: click.Context, number: int, status: str, actor: str, note: str,
                planned_for: datetime | None, request: str | None) -> None:
    """Change a ticket's status; the customer is mailed where the design says so."""
    parts = _parts(ctx)
    with _told(TransitionError), transaction(parts.engine) as session:
        found = ticket_by_number(session, number)
        if found is None:
            raise click.ClickException(f"no ticket {number}")
        parts.ingestor.workflow.move(session, found, status, actor=actor, note=note,
                                     planned_for=planned_for.date() if planned_for else None,
                                     request=request)
    click.echo(f"ticket {number} is now {status}")


@ticket.command("reply")
@click.argument("number", type=int)
@click.option("--agent", required=True, help="The agent's name, as the customer sees it.")
@click.option("--text", required=True)
@click.pass_context
def ticket_reply(ctx: click.Context, number: int, agent: str, text: str) -> None:
    """Answer a ticket; the requester gets the answer by mail."""
    parts = _parts(ctx)
    with transaction(parts.engine) as session:
        found = ticket_by_number(session, number)
        if found is None:
            raise click.ClickException(f"no ticket {number}")
        parts.ingestor.workflow.agent_reply(session, found, agent_name=agent, text=text)
    click.echo(f"reply queued for ticket {number}")


@ticket.command("set")
@click.argument("number", type=int)
@click.option("--agent", "agent_email", required=True, help="The agent making the change.")
@click.option("--priority", type=click.Choice(list(PRIORITIES)), default=None)
@click.option("--assignee", default=None, help='An active agent\'s email, or "none".')
@click.option("--app", "application", default=None, help='An application\'s name, or "none".')
@click.pass_context
def ticket_set(ctx: click.Context, number: int, agent_email: str, priority: str | None,
               assignee: str | None, application: str | None) -> None:
    """Set a ticket's priority, assignee or application (recorded with the agent)."""
    parts = _parts(ctx)
    changes: dict[str, str | None] = {}
    if assignee is not None:
        changes["assignee"] = None if assignee == "none" else assignee
    if application is not None:
        changes["application"] = None if application == "none" else application
    with _told(TeamError), transaction(parts.engine) as session:
        agent = agent_by_email(session, agent_email)
        if agent is None or not agent.active:
            raise click.ClickException(f"no active agent {agent_email.strip().lower()}")
        found = team.ticket_for_change(session, number)
        if found is None:
            raise click.ClickException(f"no ticket {number}")
        changed = team.update(session, found, team.Actor(agent), priority=priority, **changes)
    click.echo(f"ticket {number}: " + (", ".join(changed) + " changed" if changed
                                       else "nothing changed"))


@ticket.command("list")
@click.option("--status", "statuses", multiple=True,
              help="Only tickets in this status (repeat for several).")
@click.option("--org", "organization_code", default=None, help="An organization's code.")
@click.option("--app", "application", default=None, help="An application's name.")
@click.option("--text", default="", help="Words found in the subject or a message.")
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@click.pass_context
def ticket_list(ctx: click.Context, statuses: tuple[str, ...], organization_code: str | None,
                application: str | None, text: str, limit: int) -> None:
    """Tickets, the most recently updated first."""
    parts = _parts(ctx)
    wanted = TicketFilter(statuses=statuses, organization_code=organization_code,
                          application=application, text=text)
    with _told(ValueError), transaction(parts.engine, write=False) as session:
        found = find_tickets(session, wanted, limit=limit)
    if not found:
        click.echo("no tickets")
    for row in found:
        ticket = row.ticket
        click.echo(f"#{ticket.number}  {ticket.status:<17}  {row.organization.code:<10}  "
                   f"{_when(ticket.updated_at)}  {row.requester.email}  {ticket.subject}")


@ticket.command("show")
@click.argument("number", type=int)
@click.pass_context
def ticket_show(ctx: click.Context, number: int) -> None:
    """One ticket: its thread, files, status history and the mails sent about it."""
    parts = _parts(ctx)
    with transaction(parts.engine, write=False) as session:
        record = ticket_record(session, number)
    if record is None:
        raise click.ClickException(f"no ticket {number}")
    ticket = record.ticket
    click.echo(f"#{ticket.number}  {ticket.subject}")
    click.echo(f"status       {ticket.status}")
    click.echo(f"organization {record.organization.code}  {record.organization.name}")
    click.echo(f"requester    {record.requester.name} <{record.requester.email}>")
    click.echo(f"application  {record.application.name if record.application else '-'}")
    click.echo(f"created      {_when(ticket.created_at)}   updated {_when(ticket.updated_at)}")
    if ticket.rating is not None:
        click.echo(f"rating       {ticket.rating}/5  {ticket.rating_comment or ''}".rstrip())
    click.echo("\nthread")
    for message in record.messages:
        who = message.from_address or ("us" if message.direction == "out" else "?")
        click.echo(f"  {_when(message.created_at)}  {message.direction:<3} {message.channel:<5} "
                   f"{who}" + ("  (automatic)" if message.automatic else ""))
        for line in (message.new_text or message.text).strip().splitlines()[:40]:
            click.echo(f"      {line}")
    if record.attachments:
        click.echo("\nfiles")
        for file in record.attachments:
            state = "" if file.accepted else f"  refused: {file.reason}"
            click.echo(f"  {file.id}  {file.filename}  {file.content_type}  {file.size} B{state}")
    click.echo("\nhistory")
    for change in record.history:
        note = f"  {change.note}" if change.note else ""
        click.echo(f"  {_when(change.created_at)}  {change.from_status or '-'} -> "
                   f"{change.to_status}  by {change.actor}{note}")
    if record.notifications:
        click.echo("\nmails sent")
        for mail in record.notifications:
            click.echo(f"  {_when(mail.created_at)}  {mail.event} to {mail.recipient}  "
                       f"{mail.state}" + (f" ({mail.failure})" if mail.failure else ""))


def _when(moment: datetime | None) -> str:
    return aware(moment).strftime("%Y-%m-%d %H:%M UTC") if moment is not None else "-"


@main.group()
def agent() -> None:
    """The support team's accounts."""


@agent.command("add")
@click.argument("email")
@click.option("--name", required=True)
@click.option("--role", type=click.Choice(list(AGENT_ROLES)), default="agent",
              show_default=True, help="An admin also manages agents and tokens.")
@click.option("--language", type=click.Choice(["es", "en"]), default="es", show_default=True)
@click.option("--password", default=None,
              help="Console password (omit: API tokens only, for now).")
@click.pass_context
def agent_add(ctx: click.Context, email: str, name: str, role: str, language: str,
              password: str | None) -> None:
    """Add an agent."""
    from gateway.accounts import guessable_for  # (zxcvbn: for this command only)

    if password and guessable_for(password, name, email):
        raise click.BadParameter("too easy to guess (zxcvbn): use a longer phrase of "
                                 "unrelated words", param_hint="--password")
    parts = _parts(ctx)
    with _told(DirectoryError):
        added = add_agent(parts.engine, name=name, email=email, role=role, language=language,
                          password=password)
    click.echo(f"agent {added.email} added ({added.role})")


@agent.command("list")
@click.pass_context
def agent_list(ctx: click.Context) -> None:
    """Every agent, active or not."""
    parts = _parts(ctx)
    found = agents(parts.engine)
    if not found:
        click.echo("no agents")
    for one in found:
        state = "active" if one.active else "deactivated"
        click.echo(f"{one.email:<40} {one.name:<30} {one.role:<6} {state}")


@agent.command("deactivate")
@click.argument("email")
@click.option("--undo", is_flag=True, help="Reactivate instead.")
@click.pass_context
def agent_deactivate(ctx: click.Context, email: str, undo: bool) -> None:
    """Deactivate an agent: no console login, and their API tokens stop working."""
    parts = _parts(ctx)
    with _told(DirectoryError):
        changed = set_agent_active(parts.engine, email, undo)
    click.echo(f"agent {changed.email} {'reactivated' if undo else 'deactivated'}")


@main.group()
def token() -> None:
    """API tokens: each acts as its agent."""


@token.command("create")
@click.argument("email")
@click.option("--name", required=True, help="What the token is for (\"helpdesk sync\").")
@click.pass_context
def token_create(ctx: click.Context, email: str, name: str) -> None:
    """Make a token for an agent; it is shown this once."""
    parts = _parts(ctx)
    with _told(DirectoryError):
        made = create_token(parts.engine, email, name)
    click.echo(f"token {made.token.id} ({made.token.name}) for {email.strip().lower()}; "
               "keep it now, it is not shown again:")
    click.echo(made.secret)


@token.command("list")
@click.pass_context
def token_list(ctx: click.Context) -> None:
    """Every token: its id, name, agent, when made and last used, and whether revoked."""
    parts = _parts(ctx)
    found = tokens(parts.engine)
    if not found:
        click.echo("no tokens")
    for made, owner in found:
        state = f"revoked {_when(made.revoked_at)}" if made.revoked_at else "active"
        click.echo(f"{made.id:>4}  {made.prefix}...  {made.name:<24} {owner.email:<32} "
                   f"made {_when(made.created_at)}  last used {_when(made.last_used_at)}  "
                   f"{state}")


@token.command("revoke")
@click.argument("token_id", type=int)
@click.pass_context
def token_revoke(ctx: click.Context, token_id: int) -> None:
    """Revoke a token: it stops working at once."""
    parts = _parts(ctx)
    with _told(DirectoryError):
        revoke_token(parts.engine, token_id)
    click.echo(f"token {token_id} revoked")


@main.group()
def sla() -> None:
    """SLA clocks."""


@sla.command("explain")
@click.argument("number", type=int)
@click.pass_context
def sla_explain(ctx: click.Context, number: int) -> None:
    """Why each due time of a ticket is what it is: target, due, state, and the segments of
    its clock (running, paused, outside hours, holiday), in the calendar's time."""
    from gateway.sla_clocks import Plans, ahead, ticket_clocks

    parts = _parts(ctx)
    with transaction(parts.engine, write=False) as session:
        found = ticket_by_number(session, number)
        if found is None:
            raise click.ClickException(f"no ticket {number}")
        plans = Plans(session)
        organization = session.get(Organization, found.organization_id)
        plan = plans.get(organization.sla_plan) if organization else None
        now = utcnow()
        measured = ticket_clocks(session, found, plans, now)
    if plan is None or not measured:
        click.echo(f"ticket {number}: no SLA clock (plan "
                   f"{organization.sla_plan if organization else '-'!r}, status {found.status})")
        return
    zone = ZoneInfo(plan.calendar.timezone)

    def when(moment: datetime | None) -> str:
        return moment.astimezone(zone).strftime("%a %Y-%m-%d %H:%M") if moment else "-"

    click.echo(f"ticket {number}, plan {plan.name}, priority {found.priority}, calendar "
               f"{plan.calendar.name or '-'} ({plan.calendar.timezone})")
    for clock in measured:
        kind = "contractual" if clock.contractual else "internal"
        click.echo(f"\n{clock.target} ({kind}): {clock.minutes} business minutes; "
                   f"{clock.state}, {clock.used:.0%} used; due {when(clock.due_at)}"
                   + (f"; met {when(clock.met_at)}" if clock.met_at else "")
                   + (f"; {clock.over_minutes:.0f} min over" if clock.breached else ""))
        for segment in clock.segments:
            click.echo(f"  {segment.kind:<13} {when(segment.start)} -> {when(segment.end)}  "
                       f"{segment.minutes:.0f} min")
        for segment in ahead(clock, plan, now):
            click.echo(f"  {segment.kind:<13} {when(segment.start)} -> {when(segment.end)}  "
                       f"{segment.minutes:.0f} min (ahead)")


@sla.command("calendar")
@click.argument("name")
@click.option("--hours", required=True, help='Working windows: "09:00-14:00,15:30-18:30".')
@click.option("--days", default="mon-fri", show_default=True, help='"mon-fri" or "mon,tue,thu".')
@click.option("--season", "seasons", multiple=True,
              help='Hours of their own between two dates of every year: '
                   '"06-15:09-15=08:00-15:00" (repeat for several).')
@click.option("--timezone", default="Europe/Madrid", show_default=True)
@click.option("--country", default="ES", show_default=True,
              help='Public holidays of this country ("" for none).')
@click.option("--region", default=None, help='And of this region: "AR", "MD", "CT"...')
@click.option("--holiday", "extra", multiple=True, help="An extra date: 2026-01-29.")
@click.pass_context
def sla_calendar(ctx: click.Context, name: str, hours: str, days: str, seasons: tuple[str, ...],
                 timezone: str, country: str, region: str | None, extra: tuple[str, ...]) -> None:
    """Add or replace a working-hours calendar of the SLA clocks."""
    parts = _parts(ctx)
    parsed = []
    for season in seasons:
        span, _, season_hours = season.partition("=")
        start, _, end = span.partition(":")
        parsed.append((start, end, season_hours))
    from gateway.sla_clocks import save_calendar

    with _told(ValueError, KeyError, NotImplementedError):
        save_calendar(parts.engine, name, hours=hours, days=days, seasons=parsed,
                      timezone=timezone, country=country or None, subdivision=region,
                      extra=list(extra))
    click.echo(f"calendar {name} saved")


@sla.command("plan")
@click.argument("name")
@click.option("--calendar", required=True)
@click.option("--target", "targets", multiple=True, required=True,
              help='"first_response:urgent=30,high=60,normal=240,low=480" (repeat per target: '
                   "first_response, resolution, qualify, plan; business minutes).")
@click.option("--default-priority", type=click.Choice(list(PRIORITIES)), default="normal",
              show_default=True)
@click.option("--warn-at", default="0.75,0.9", show_default=True,
              help="Shares of a target used at which the team is warned.")
@click.pass_context
def sla_plan(ctx: click.Context, name: str, calendar: str, targets: tuple[str, ...],
             default_priority: str, warn_at: str) -> None:
    """Add or replace an SLA plan (organizations name it: `helpdesk org plan`)."""
    parsed: dict[str, dict[str, int]] = {}
    try:
        for spec in targets:
            target, _, values = spec.partition(":")
            parsed[target.strip()] = {p.strip(): int(m) for p, m in
                                      (pair.split("=") for pair in values.split(","))}
        shares = [float(v) for v in warn_at.split(",") if v.strip()]
    except ValueError as exc:
        raise click.BadParameter(f"cannot read {exc}") from exc
    from gateway.sla_clocks import save_plan

    parts = _parts(ctx)
    with _told(ValueError):
        save_plan(parts.engine, name, calendar=calendar, targets=parsed,
                  default_priority=default_priority, warn_at=shares)
    click.echo(f"plan {name} saved")


@sla.command("report")
@click.option("--from", "since", type=click.DateTime(["%Y-%m-%d"]), required=True,
              help="First day of the period.")
@click.option("--to", "until", type=click.DateTime(["%Y-%m-%d"]), required=True,
              help="Day after the period (not included).")
@click.option("--org", "organization", default=None, help="One organization's code.")
@click.option("--csv", "as_csv", is_flag=True, help="CSV rows instead of a table.")
@click.pass_context
def sla_report(ctx: click.Context, since: datetime, until: datetime, organization: str | None,
               as_csv: bool) -> None:
    """Per organization and target: tickets opened in the period, met, breached, median and
    p90 business minutes; and the ratings given in the period."""
    from gateway.sla_report import report

    parts = _parts(ctx)
    with transaction(parts.engine, write=False) as session:
        found = report(session, since.replace(tzinfo=UTC), until.replace(tzinfo=UTC),
                       organization)
    if as_csv:
        out = csv.writer(sys.stdout)
        out.writerow(["organization", "target", "contractual", "tickets", "met", "breached",
                      "median_minutes", "p90_minutes"])
        for row in found.targets:
            out.writerow([row.organization, row.target, row.contractual, row.tickets, row.met,
                          row.breached, row.median, row.p90])
        out.writerow([])
        out.writerow(["organization", "ratings", "average", "1", "2", "3", "4", "5"])
        for rated in found.ratings:
            out.writerow([rated.organization, rated.count, rated.average,
                          *(rated.stars[n] for n in range(1, 6))])
        return
    click.echo(f"SLA report {since:%Y-%m-%d} to {until:%Y-%m-%d} (not included)")
    click.echo(f"{'org':<10} {'target':<15} {'kind':<11} {'tickets':>7} {'met':>5} "
               f"{'breached':>8} {'median':>8} {'p90':>8}")
    for row in found.targets:
        kind = "contract" if row.contractual else "internal"
        click.echo(f"{row.organization:<10} {row.target:<15} {kind:<11} {row.tickets:>7} "
                   f"{row.met:>5} {row.breached:>8} {_minutes(row.median):>8} "
                   f"{_minutes(row.p90):>8}")
    for rated in found.ratings:
        spread = " ".join(f"{n}*:{rated.stars[n]}" for n in range(1, 6))
        click.echo(f"ratings {rated.organization}: {rated.count}, average {rated.average}, "
                   f"{spread}")


def _minutes(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


@main.group()
def webhook() -> None:
    """Webhooks to the team's helpdesk tool."""


@webhook.command("add")
@click.argument("url")
@click.option("--event", "events", multiple=True, type=click.Choice(list(WEBHOOK_EVENTS)),
              help="An event to send (repeat for several; none: all of them).")
@click.option("--description", default="")
@click.pass_context
def webhook_add(ctx: click.Context, url: str, events: tuple[str, ...], description: str) -> None:
    """Subscribe URL to events; prints the signing secret once."""
    parts = _parts(ctx)
    with _told(DirectoryError):
        hook = webhooks.add(parts.engine, url, list(events), description)
    click.echo(f"webhook {hook.id} to {hook.url} for {hook.events.replace(',', ', ')}; "
               "its signing secret (Standard Webhooks), not shown again:")
    click.echo(hook.secret)


@webhook.command("list")
@click.pass_context
def webhook_list(ctx: click.Context) -> None:
    """Every subscription."""
    parts = _parts(ctx)
    found = webhooks.subscriptions(parts.engine)
    if not found:
        click.echo("no webhooks")
    for hook in found:
        state = "active" if hook.active else "removed"
        click.echo(f"{hook.id:>4}  {hook.url}  {hook.events}  {state}  {hook.description}")


@webhook.command("remove")
@click.argument("webhook_id", type=int)
@click.pass_context
def webhook_remove(ctx: click.Context, webhook_id: int) -> None:
    """Stop a subscription: nothing more is sent to it."""
    parts = _parts(ctx)
    with _told(DirectoryError):
        webhooks.remove(parts.engine, webhook_id)
    click.echo(f"webhook {webhook_id} removed")


@webhook.command("deliveries")
@click.argument("webhook_id", type=int, required=False)
@click.option("--limit", type=click.IntRange(1, 500), default=20, show_default=True)
@click.pass_context
def webhook_deliveries(ctx: click.Context, webhook_id: int | None, limit: int) -> None:
    """The latest deliveries, newest first: event, state, attempts, last answer."""
    parts = _parts(ctx)
    found = webhooks.deliveries(parts.engine, webhook_id, limit)
    if not found:
        click.echo("no deliveries")
    for item in found:
        answer = item.last_status or "-"
        error = f"  {item.last_error[:80]}" if item.last_error else ""
        click.echo(f"{item.id:>6}  webhook {item.webhook_id}  {item.event:<22} {item.state:<7} "
                   f"attempts {item.attempts}  last answer {answer}  "
                   f"made {_when(item.created_at)}{error}")


@main.group("app")
def application() -> None:
    """Applications a ticket can be about."""


@application.command("add")
@click.argument("name")
@click.pass_context
def application_add(ctx: click.Context, name: str) -> None:
    """Add an application."""
    parts = _parts(ctx)
    with _told(DirectoryError):
        add_application(parts.engine, name)
    click.echo(f"application {name} added")


@main.group()
def ratings() -> None:
    """Ticket ratings (valoraciones)."""


@ratings.command("remind")
@click.pass_context
def ratings_remind(ctx: click.Context) -> None:
    """Queue one reminder per unrated ticket resolved HELPDESK_RATING_REMINDER_DAYS ago."""
    settings = _settings(ctx)
    parts = _parts(ctx, settings)
    count = queue_reminders(parts.engine, parts.workflow, parts.rating_links,
                            settings.rating_reminder_days)
    click.echo(f"{count} rating reminder(s) queued")

if __name__ == "__main__":
    sys.exit(main())
