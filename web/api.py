"""The support team's JSON API, mounted at /api: version 1 under /api/v1, its OpenAPI 3.1
description at /api/openapi.json (written by FastAPI from the types of web.api_types).

Every call is made with an API token (``Authorization: Bearer hd_...``, `helpdesk token
create`) and acts as its agent; every write is recorded with both (gateway.team). Errors are
``application/problem+json`` (RFC 9457). A write to a ticket may carry ``If-Match`` with the
ticket's version (its ETag): if the ticket changed meanwhile, 412 and nothing is done. A POST
may carry an ``Idempotency-Key``: sent again, it gets the first answer again instead of acting
twice (web.idempotency). Status changes and answers go through the same workflow as the
command line and the customer area (gateway.workflow).
"""

# No `from __future__ import annotations`: FastAPI reads the endpoints' annotations, some of
# them names local to create_api.
import email.parser
import email.policy
import json
import logging
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import (
    Depends,
    FastAPI,
    File,
    Form,
    Header,
    Path,
    Query,
    Request,
    Security,
    UploadFile,
)
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, col, select
from starlette.exceptions import HTTPException as StarletteHTTPException

from gateway import team, webhooks
from gateway.inbound.attachments import DEFAULT_MAX_SIZE
from gateway.inbound.sender_auth import Verdict
from gateway.sla import Clock
from gateway.sla_clocks import Plans, put_on_plan, save_plan, store_calendar, ticket_clocks
from gateway.sla_report import report
from gateway.team import Actor, StaleTicket, TeamError
from gateway.uploads import MAX_FILES, Upload, check_and_store
from gateway.workflow import TransitionError, Workflow
from storage import inbound, sessions
from storage.agents import add_agent, agent_for_token, agents
from storage.blobs import BlobStore
from storage.db import transaction
from storage.directory import (
    DirectoryError,
    add_application,
    add_contact,
    add_organization,
    edit_contact,
    set_sender_auth,
)
from storage.faults import is_unavailable
from storage.models import (
    Agent,
    AgentSession,
    Application,
    Contact,
    InboundMessage,
    Organization,
    SlaCalendar,
    SlaPlan,
    Ticket,
    aware,
)
from storage.team import FoundTicket, TicketFilter, TicketRecord, find_tickets, ticket_record
from storage.tickets import contact_by_email, managers_of
from web import api_types as out
from web.idempotency import Idempotency

log = logging.getLogger("gateway.web.api")

PROBLEM = "application/problem+json"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MAX_PAGE = 200


class ApiProblem(Exception):
    def __init__(self, status: int, title: str, detail: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(detail or title)
        self.status, self.title, self.detail, self.headers = status, title, detail, headers


def problem(status: int, title: str, detail: str | None = None,
            headers: dict[str, str] | None = None, **extra: Any) -> JSONResponse:
    body = {"type": "about:blank", "title": title, "status": status, **extra}
    if detail:
        body["detail"] = detail
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": out.Problem, "content": {PROBLEM: {}}, "description": text}
    for status, text in {401: "No token, or a token that does not work (any more).",
                         404: "No such ticket or file.",
                         409: "Impossible now (a status that cannot follow the ticket's).",
                         403: "An admin's token is needed.",
                         412: "The ticket changed since the version named by If-Match.",
                         422: "A field is missing or wrong."}.items()}


def create_api(engine: Engine, workflow: Workflow, blobs: BlobStore,
               max_file_size: int = DEFAULT_MAX_SIZE) -> FastAPI:
    api = FastAPI(title="Helpdesk gateway API", version="1", openapi_url="/openapi.json",
                  docs_url=None, redoc_url=None, responses=ERRORS,
                  description=__doc__)
    bearer = HTTPBearer(auto_error=False, description="An API token: `helpdesk token create`.")

    def acting(credentials: Annotated[HTTPAuthorizationCredentials | None,
                                      Security(bearer)]) -> Actor:
        if credentials is None:
            raise ApiProblem(401, "Token required", "send Authorization: Bearer <token>",
                             {"WWW-Authenticate": "Bearer"})
        found = agent_for_token(engine, credentials.credentials)
        if found is None:
            raise ApiProblem(401, "Token not accepted",
                             "unknown or revoked token, or its agent is deactivated",
                             {"WWW-Authenticate": 'Bearer error="invalid_token"'})
        agent, token = found
        return Actor(agent, token.id)

    def administering(actor: Annotated[Actor, Depends(acting)]) -> Actor:
        if actor.agent.role != "admin":
            raise ApiProblem(403, "Admins only", "this needs an admin's token")
        return actor

    Agent_ = Annotated[Actor, Depends(acting)]
    Number = Annotated[int, Path(ge=1, le=999_999_999, description="The ticket's number.")]
    Id = Annotated[int, Path(ge=1, le=2_147_483_647)]
    Admin_ = Annotated[Actor, Depends(administering)]
    CalendarName = Annotated[str, Path(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
    PlanName = Annotated[str, Path(pattern=r"^[A-Za-z0-9_.-]{1,32}$")]
    IfMatch = Annotated[str | None, Header(
        pattern=r'^(\*|(W/)?"?[0-9]{1,12}"?)$',
        description="The ticket's version (its ETag) as read: 412 if it changed since.")]

    # ------------------------------------------------------------------ errors

    @api.exception_handler(ApiProblem)
    async def _problem(request: Request, exc: ApiProblem) -> JSONResponse:
        return problem(exc.status, exc.title, exc.detail, exc.headers)

    @api.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return problem(exc.status_code, str(exc.detail), headers=exc.headers)

    @api.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"field": ".".join(str(p) for p in error["loc"]), "message": error["msg"]}
                  for error in exc.errors()]
        return problem(422, "Invalid request", "; ".join(
            f"{e['field']}: {e['message']}" for e in errors), errors=errors)

    @api.exception_handler(TransitionError)
    async def _transition(request: Request, exc: TransitionError) -> JSONResponse:
        return problem(409, "Not possible now", str(exc))

    @api.exception_handler(StaleTicket)
    async def _stale(request: Request, exc: StaleTicket) -> JSONResponse:
        return problem(412, "The ticket changed", str(exc), {"ETag": f'"{exc.current}"'})

    @api.exception_handler(SQLAlchemyError)
    async def _database(request: Request, exc: SQLAlchemyError) -> JSONResponse:
        if is_unavailable(exc):
            return problem(503, "Database unavailable", "try again shortly",
                           {"Retry-After": "30"})
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return problem(500, "Internal error")

    @api.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Never a stack trace to a client: the details go to the log.
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return problem(500, "Internal error")

    @api.exception_handler(DirectoryError)
    async def _directory(request: Request, exc: DirectoryError) -> JSONResponse:
        if "already" in str(exc):
            return problem(409, "Already exists", str(exc))
        return problem(422, "Invalid request", str(exc))

    @api.exception_handler(TeamError)
    async def _team(request: Request, exc: TeamError) -> JSONResponse:
        return problem(422, "Invalid request", str(exc))

    # ------------------------------------------------------------------ tickets

    @api.get("/v1/tickets", response_model=out.TicketList, tags=["tickets"])
    def list_tickets(
        actor: Agent_,
        status: Annotated[list[out.Status] | None, Query()] = None,
        organization: Annotated[str | None, Query(description="An organization's code.")] = None,
        application: Annotated[str | None, Query(description="An application's name.")] = None,
        assignee: Annotated[str | None, Query(
            description="An agent's email, or `none` for tickets nobody has.")] = None,
        priority: Annotated[list[out.Priority] | None, Query()] = None,
        text: Annotated[str, Query(max_length=200,
                                   description="Words in the subject or a message.")] = "",
        created_from: datetime | None = None, created_to: datetime | None = None,
        updated_from: datetime | None = None, updated_to: datetime | None = None,
        due_before: Annotated[datetime | None, Query(
            description="Only tickets with an SLA clock running that is due before then.")
        ] = None,
        breached: Annotated[bool | None, Query(
            description="true: tickets with an SLA target breached; false: none breached.")
        ] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
        sort: Annotated[Literal["updated", "due"], Query(
            description="updated: the most recently updated first; due: the tickets with an "
                        "SLA clock running, the soonest due first.")] = "updated",
        cursor: Annotated[str | None, Query(
            pattern=r"^[0-9]{1,16}\.[0-9]{1,12}$",
            description="The `next_cursor` of the page before.")] = None,
    ) -> out.TicketList:
        """Tickets matching every filter given, the most recently updated first."""
        wanted = TicketFilter(statuses=status or (), organization_code=organization,
                              application=application, text=text, assignee=assignee,
                              priorities=priority or (), created_from=created_from,
                              created_to=created_to, updated_from=updated_from,
                              updated_to=updated_to, breached=breached,
                              due_before=_aware_utc(due_before) if due_before else None)
        with Session(engine) as session:
            found = find_tickets(session, wanted, limit=limit + 1, before=_cursor(cursor),
                                 sort=sort)
            agents = _agents(session, [row.ticket.assignee_id for row in found])
            applications = _applications(session, [row.ticket.application_id for row in found])
        page = found[:limit]
        more = len(found) > limit
        return out.TicketList(
            items=[_summary(row, agents, applications) for row in page],
            next_cursor=_cursor_of(page[-1], sort) if more and page else None)

    @api.get("/v1/tickets/{number}", response_model=out.TicketDetail, tags=["tickets"])
    def read_ticket(number: Number, actor: Agent_, request: Request,
                    response: Response) -> out.TicketDetail:
        """A ticket with its whole thread (internal notes included), files, status history
        and every mail sent about it with its delivery state."""
        with Session(engine) as session:
            record = ticket_record(session, number)
            if record is None:
                raise ApiProblem(404, "No such ticket", f"no ticket {number}")
            agents = _agents(session, [record.ticket.assignee_id])
            applications = _applications(session, [record.ticket.application_id])
            sla = ticket_clocks(session, record.ticket, Plans(session))
        response.headers["ETag"] = f'"{record.ticket.version}"'
        detail = _detail(record, agents, applications,
                         f"{request.scope.get('root_path', '')}/v1/tickets/{number}/files")
        detail.sla = [_clock(clock) for clock in sla]
        running = [c.due_at for c in sla if c.state == "running" and c.due_at is not None]
        detail.sla_due_at = min(running) if running else None
        return detail

    @api.get("/v1/tickets/{number}/files/{file_id}", tags=["tickets"],
             response_class=FileResponse,
             responses={200: {"content": {"application/octet-stream": {}},
                              "description": "The file, with the type we detected."}})
    def download(number: Number, file_id: Id, actor: Agent_) -> FileResponse:
        with Session(engine) as session:
            record = ticket_record(session, number)
        item = next((f for f in record.attachments if f.id == file_id), None) if record else None
        if item is None or not item.accepted or not item.storage_key:
            raise ApiProblem(404, "No such file", f"ticket {number} has no file {file_id}")
        path = blobs.path(item.storage_key)
        if not path.exists():
            raise ApiProblem(404, "No such file", "the file is missing from the store")
        return FileResponse(path, media_type=item.content_type, filename=item.filename,
                            headers={"X-Content-Type-Options": "nosniff"})

    def _change(number: int, if_match: str | None, actor: Actor, action) -> out.Done:
        """Run ``action(session, ticket)`` on the ticket, locked, after the If-Match check;
        what it did, with the ticket's version after it."""
        expected = _version(if_match)
        with transaction(engine) as session:
            ticket = team.ticket_for_change(session, number)
            if ticket is None:
                raise ApiProblem(404, "No such ticket", f"no ticket {number}")
            team.expect_version(ticket, expected)
            done = action(session, ticket)
            session.flush()
            ticket_id = ticket.id
        with Session(engine) as session:
            after = session.get(Ticket, ticket_id)
            assert after is not None
            return out.Done(number=number, status=after.status, version=after.version,
                            **done)

    @api.post("/v1/tickets/{number}/status", response_model=out.Done, tags=["actions"])
    def change_status(number: Number, body: out.StatusChangeIn, actor: Agent_,
                      if_match: IfMatch = None) -> out.Done:
        """Move the ticket to another status through the workflow's transitions; the customer
        is mailed where the design says so (resolved: with the star links)."""
        def act(session: Session, ticket: Ticket) -> dict:
            mail = team.move(session, workflow, ticket, actor, body.status, note=body.note,
                             planned_for=body.planned_for, request=body.request)
            session.flush()
            return {"notification_id": mail.id if mail else None}
        return _change(number, if_match, actor, act)

    @api.post("/v1/tickets/{number}/replies", response_model=out.Done, tags=["actions"])
    def reply(number: Number, body: out.TextIn, actor: Agent_,
              if_match: IfMatch = None) -> out.Done:
        """Answer the customer: kept on the thread and mailed to the requester."""
        def act(session: Session, ticket: Ticket) -> dict:
            mail = team.reply(session, workflow, ticket, actor, body.text)
            session.flush()
            return {"notification_id": mail.id}
        return _change(number, if_match, actor, act)

    @api.post("/v1/tickets/{number}/replies/with-files", response_model=out.Done,
              tags=["actions"])
    def reply_with_files(
        number: Number, actor: Agent_,
        text: Annotated[str, Form(min_length=1, max_length=100_000)],
        files: Annotated[list[UploadFile], File(description=(
            "Files to attach: the rules of mail attachments apply (type by content, size); "
            "one refused refuses the answer (422)."))],
        if_match: IfMatch = None,
    ) -> out.Done:
        """Answer the customer with files: kept on the thread with them, and mailed to the
        requester with them attached."""
        uploads = [Upload(item.filename or "", item.file.read(max_file_size + 1))
                   for item in files[:MAX_FILES]]
        checked = check_and_store(blobs, uploads, max_file_size)

        def act(session: Session, ticket: Ticket) -> dict:
            mail = team.reply(session, workflow, ticket, actor, text, checked)
            session.flush()
            return {"notification_id": mail.id}
        return _change(number, if_match, actor, act)

    @api.post("/v1/tickets/{number}/notes", response_model=out.Done, tags=["actions"])
    def add_note(number: Number, body: out.TextIn, actor: Agent_,
                 if_match: IfMatch = None) -> out.Done:
        """An internal note, for the team only: never in the customer area nor in a mail."""
        def act(session: Session, ticket: Ticket) -> dict:
            return {"message_id": team.note(session, ticket, actor, body.text).id}
        return _change(number, if_match, actor, act)

    @api.patch("/v1/tickets/{number}", response_model=out.Done, tags=["actions"])
    def update_ticket(number: Number, body: out.TicketPatch, actor: Agent_,
                      if_match: IfMatch = None) -> out.Done:
        """Set priority, application or assignee; only the fields sent change."""
        sent = body.model_fields_set
        def act(session: Session, ticket: Ticket) -> dict:
            changes: dict[str, Any] = {name: getattr(body, name) for name in
                                       ("application", "assignee") if name in sent}
            changed = team.update(session, ticket, actor, priority=body.priority, **changes)
            return {"changed": changed}
        return _change(number, if_match, actor, act)

    # ------------------------------------------------------------------ directory

    @api.get("/v1/organizations", response_model=list[out.Organization], tags=["directory"])
    def organizations(actor: Agent_) -> list[out.Organization]:
        with Session(engine) as session:
            rows = session.exec(select(Organization).order_by(col(Organization.code))).all()
        return [_organization(o) for o in rows]

    @api.post("/v1/organizations", response_model=out.Organization, status_code=201,
              tags=["directory"])
    def create_organization(body: out.OrganizationIn, actor: Agent_) -> out.Organization:
        made = add_organization(engine, code=body.code, tax_id=body.tax_id, name=body.name,
                                domains=body.domains)
        _recorded(actor, "organization.create", code=made.code)
        return _organization(made)

    @api.patch("/v1/organizations/{code}", response_model=out.Organization,
               tags=["directory"])
    def update_organization(code: Annotated[str, Path(max_length=20)],
                            body: out.OrganizationPatch, actor: Admin_) -> out.Organization:
        """Put an organization on another SLA plan (its open tickets' clocks follow within
        seconds; closed tickets keep what they were measured by), or change how mail from its
        domain that fails sender authentication is treated. Admins only."""
        with Session(engine) as session:
            found = session.exec(select(Organization).where(Organization.code == code)).first()
        if found is None:
            raise ApiProblem(404, "No such organization", f"no organization with code {code}")
        if body.sla_plan is not None:
            try:
                found = put_on_plan(engine, code, body.sla_plan)
            except ValueError as exc:
                raise ApiProblem(422, "Invalid request", str(exc)) from exc
        if body.sender_auth is not None:
            found = set_sender_auth(engine, code, body.sender_auth)
        _recorded(actor, "organization.update", code=code,
                  **body.model_dump(exclude_none=True))
        return _organization(found)

    @api.get("/v1/quarantine", response_model=list[out.QuarantinedOut], tags=["directory"])
    def quarantine(actor: Agent_, limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
                   ) -> list[out.QuarantinedOut]:
        """Mails held because their sender was not authenticated, the newest first: nothing
        was done with them (no ticket, no answer) until an agent releases one."""
        with Session(engine) as session:
            rows = inbound.quarantined(session, limit)
        return [_quarantined(row) for row in rows if row.id is not None]

    @api.post("/v1/quarantine/{inbound_id}/release", response_model=out.Released,
              tags=["directory"])
    def release(inbound_id: Id, actor: Agent_) -> out.Released:
        """Let a quarantined mail through as if its sender were authenticated (the agent
        vouches for it): processed again within seconds, into a ticket or a reply."""
        try:
            row = inbound.release_quarantined(engine, inbound_id, f"{actor.agent.email} (API)")
        except LookupError as exc:
            raise ApiProblem(404, "Not in quarantine", str(exc)) from exc
        _recorded(actor, "inbound.release", id=inbound_id)
        return out.Released(id=inbound_id, released_by=row.released_by or "")

    def _quarantined(row: InboundMessage) -> out.QuarantinedOut:
        head = email.parser.BytesHeaderParser(policy=email.policy.default).parsebytes(
            blobs.get(row.raw_key))
        return out.QuarantinedOut(
            id=row.id, received_at=aware(row.received_at), channel=row.channel,
            sender=str(head.get("from", ""))[:320], subject=str(head.get("subject", ""))[:500],
            reason=row.reason or "")

    @api.get("/v1/applications", response_model=list[str], tags=["directory"])
    def applications(actor: Agent_) -> list[str]:
        with Session(engine) as session:
            return list(session.exec(select(Application.name).where(col(Application.active))
                                     .order_by(col(Application.name))).all())

    @api.post("/v1/applications", response_model=str, status_code=201, tags=["directory"])
    def create_application(body: out.ApplicationIn, actor: Agent_) -> str:
        with Session(engine) as session:
            if session.exec(select(Application).where(Application.name == body.name)).first():
                raise DirectoryError(f"application {body.name!r} already exists")
        add_application(engine, body.name)
        _recorded(actor, "application.create", name=body.name)
        return body.name

    @api.get("/v1/contacts", response_model=list[out.ContactOut], tags=["directory"])
    def contacts(actor: Agent_, organization: Annotated[str | None, Query(
                     description="An organization's code.")] = None) -> list[out.ContactOut]:
        with Session(engine) as session:
            query = (select(Contact, Organization)
                     .join(Organization, col(Organization.id) == Contact.organization_id)
                     .order_by(col(Organization.code), col(Contact.name)))
            if organization:
                query = query.where(Organization.code == organization)
            return [_contact(c, o) for c, o in session.exec(query)]

    @api.post("/v1/contacts", response_model=out.ContactOut, status_code=201,
              tags=["directory"])
    def create_contact(body: out.ContactIn, actor: Agent_) -> out.ContactOut:
        made = add_contact(engine, organization_code=body.organization, name=body.name,
                           email=body.email, is_manager=body.is_manager,
                           language=body.language, role=body.role, phone=body.phone,
                           types=",".join(body.types) or "technical")
        _recorded(actor, "contact.create", email=made.email)
        return _contact_by_id(made.id)

    @api.patch("/v1/contacts/{contact_id}", response_model=out.ContactOut, tags=["directory"])
    def update_contact(contact_id: Id, body: out.ContactPatch,
                       actor: Agent_) -> out.ContactOut:
        found = _contact_by_id(contact_id)
        changes: dict[str, Any] = {name: getattr(body, name) for name in body.model_fields_set}
        if "types" in changes:
            changes["types"] = ",".join(changes["types"] or []) or "technical"
        if any(value is None for value in changes.values()):
            raise ApiProblem(422, "Invalid request", "a contact's fields cannot be null")
        if changes:
            edit_contact(engine, found.email, **changes)
            _recorded(actor, "contact.update", email=found.email, fields=sorted(changes))
        return _contact_by_id(contact_id)

    @api.post("/v1/contacts/pending", response_model=out.PendingContactOut, status_code=201,
              tags=["directory"])
    def register_pending(body: out.PendingContactIn, actor: Agent_) -> out.PendingContactOut:
        """Someone not yet a contact called: they become a pending contact with a held ticket
        for what they asked, and every manager of the organization is mailed to confirm them
        (as for an unknown sender's mail, the guide's §5)."""
        with transaction(engine) as session:
            organization = session.exec(select(Organization).where(
                Organization.code == body.organization)).first()
            if organization is None or organization.id is None:
                raise DirectoryError(f"no organization with code {body.organization}")
            email = body.email.strip().lower()
            if contact_by_email(session, email) is not None:
                raise DirectoryError(f"a contact with email {email} already exists")
            person = Contact(organization_id=organization.id, name=body.name.strip(),
                             email=email, phone=body.phone.strip(), state="pending")
            session.add(person)
            session.flush()
            ticket = workflow.hold_for_verification(
                session, sender=person, subject=body.subject, channel="phone",
                excerpt=body.description)
            asked = len(managers_of(session, organization.id))
            team.record(session, actor, "contact.pending", ticket, email=email)
            person_id, number = person.id, ticket.number
        return out.PendingContactOut(contact=_contact_by_id(person_id), ticket=number,
                                     managers_asked=asked)

    @api.get("/v1/sla/report", response_model=out.SlaReport, tags=["sla"])
    def sla_report(actor: Agent_, since: Annotated[datetime, Query(alias="from")],
                   until: Annotated[datetime, Query(alias="to")],
                   organization: Annotated[str | None, Query(max_length=32)] = None,
                   ) -> out.SlaReport:
        """Per organization and target: tickets opened in the period, met, breached, median
        and p90 business minutes taken; the ratings given in the period."""
        since, until = _aware_utc(since), _aware_utc(until)
        with Session(engine) as session:
            found = report(session, since, until, organization)
        return out.SlaReport(
            since=since, until=until,
            targets=[out.TargetReport(
                organization=r.organization, target=r.target, contractual=r.contractual,
                tickets=r.tickets, met=r.met, breached=r.breached, median_minutes=r.median,
                p90_minutes=r.p90) for r in found.targets],
            ratings=[out.RatingsReport(organization=r.organization, count=r.count,
                                       average=r.average,
                                       stars={str(n): r.stars[n] for n in range(1, 6)})
                     for r in found.ratings])

    @api.get("/v1/sla/calendars", response_model=list[out.SlaCalendarOut], tags=["sla"])
    def sla_calendars(actor: Agent_) -> list[out.SlaCalendarOut]:
        """The working-hours calendars SLA plans are measured on."""
        with Session(engine) as session:
            return [_calendar(c) for c in session.exec(
                select(SlaCalendar).order_by(col(SlaCalendar.name)))]

    @api.put("/v1/sla/calendars/{name}", response_model=out.SlaCalendarOut, tags=["sla"])
    def put_sla_calendar(name: CalendarName, body: out.SlaCalendarIn,
                         actor: Admin_) -> out.SlaCalendarOut:
        """Add or replace a calendar (admins). The due times of open tickets on plans using
        it are worked out again within seconds."""
        try:
            row = store_calendar(
                engine, name, hours=body.hours, timezone=body.timezone, country=body.country,
                subdivision=body.region,
                seasons=[{"from": s.start, "to": s.end, "hours": s.hours} for s in body.seasons],
                extra=[d.isoformat() for d in body.holidays])
        except (ValueError, LookupError) as exc:
            raise ApiProblem(422, "Invalid request", str(exc).strip("'\"")) from exc
        _recorded(actor, "sla.calendar", name=name)
        return _calendar(row)

    @api.get("/v1/sla/plans", response_model=list[out.SlaPlanOut], tags=["sla"])
    def sla_plans(actor: Agent_) -> list[out.SlaPlanOut]:
        """The SLA plans and which organizations are on each."""
        with Session(engine) as session:
            return [_plan(session, p) for p in session.exec(
                select(SlaPlan).order_by(col(SlaPlan.name)))]

    @api.put("/v1/sla/plans/{name}", response_model=out.SlaPlanOut, tags=["sla"])
    def put_sla_plan(name: PlanName, body: out.SlaPlanIn, actor: Admin_) -> out.SlaPlanOut:
        """Add or replace a plan (admins). Its open tickets' due times follow within
        seconds."""
        try:
            save_plan(engine, name, calendar=body.calendar, targets=body.targets,
                      default_priority=body.default_priority, warn_at=body.warn_at)
        except ValueError as exc:
            raise ApiProblem(422, "Invalid request", str(exc)) from exc
        _recorded(actor, "sla.plan", name=name)
        with Session(engine) as session:
            return _plan(session, session.exec(select(SlaPlan).where(SlaPlan.name == name)).one())

    # ------------------------------------------------------------------ admins

    @api.get("/v1/agents", response_model=list[out.AgentOut], tags=["team"])
    def list_agents(actor: Agent_) -> list[out.AgentOut]:
        return [_agent(a) for a in agents(engine)]

    @api.post("/v1/agents", response_model=out.AgentOut, status_code=201, tags=["team"])
    def create_agent(body: out.AgentIn, actor: Admin_) -> out.AgentOut:
        made = add_agent(engine, name=body.name, email=body.email, role=body.role,
                         language=body.language)
        _recorded(actor, "agent.create", email=made.email)
        return _agent(made)

    @api.patch("/v1/agents/{agent_id}", response_model=out.AgentOut, tags=["team"])
    def update_agent(agent_id: Id, body: out.AgentPatch, actor: Admin_) -> out.AgentOut:
        with transaction(engine) as session:
            agent = session.get(Agent, agent_id)
            if agent is None:
                raise ApiProblem(404, "No such agent", f"no agent {agent_id}")
            if agent.id == actor.agent_id and (body.active is False or body.role == "agent"):
                raise ApiProblem(409, "Not possible", "an admin cannot take away their own "
                                 "access or role")
            if body.active is not None:
                agent.active = body.active
                if not body.active:
                    sessions.end_all(session, agent_id, AgentSession)
            if body.role is not None:
                agent.role = body.role
            session.add(agent)
            team.record(session, actor, "agent.update", None, agent=agent.email,
                        active=body.active, role=body.role)
            return _agent(agent)

    @api.get("/v1/webhooks", response_model=list[out.WebhookOut], tags=["team"])
    def list_webhooks(actor: Admin_) -> list[out.WebhookOut]:
        return [_webhook(h) for h in webhooks.subscriptions(engine)]

    @api.post("/v1/webhooks", response_model=out.WebhookCreated, status_code=201,
              tags=["team"])
    def create_webhook(body: out.WebhookIn, actor: Admin_) -> out.WebhookCreated:
        hook = webhooks.add(engine, body.url, list(body.events), body.description)
        _recorded(actor, "webhook.create", url=hook.url)
        return out.WebhookCreated(**_webhook(hook).model_dump(), secret=hook.secret)

    @api.delete("/v1/webhooks/{webhook_id}", status_code=204, tags=["team"])
    def delete_webhook(webhook_id: Id, actor: Admin_) -> Response:
        webhooks.remove(engine, webhook_id)
        _recorded(actor, "webhook.remove", id=webhook_id)
        return Response(status_code=204)

    @api.get("/v1/webhooks/{webhook_id}/deliveries", response_model=list[out.DeliveryOut],
             tags=["team"])
    def webhook_deliveries(webhook_id: Id, actor: Admin_,
                           limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 20,
                           ) -> list[out.DeliveryOut]:
        return [out.DeliveryOut(
            id=d.id, event_id=d.event_id, event=d.event, state=d.state, attempts=d.attempts,
            last_status=d.last_status, last_error=d.last_error,
            created_at=aware(d.created_at),
            delivered_at=aware(d.delivered_at) if d.delivered_at else None)
            for d in webhooks.deliveries(engine, webhook_id, limit) if d.id is not None]

    def _recorded(actor: Actor, action: str, **detail: Any) -> None:
        with transaction(engine) as session:
            team.record(session, actor, action, None, **detail)

    def _contact_by_id(contact_id: int | None) -> out.ContactOut:
        with Session(engine) as session:
            found = session.get(Contact, contact_id) if contact_id is not None else None
            if found is None:
                raise ApiProblem(404, "No such contact", f"no contact {contact_id}")
            organization = session.get(Organization, found.organization_id)
            assert organization is not None
            return _contact(found, organization)

    Idempotency.install(api, engine)
    return api


# ---------------------------------------------------------------------- helpers


def _version(if_match: str | None) -> int | None:
    if if_match is None or if_match.strip() == "*":
        return None
    value = if_match.strip().removeprefix("W/").strip('"')
    if not value.isdigit():
        raise ApiProblem(412, "The ticket changed", f"If-Match {if_match!r} names no version")
    return int(value)


def _aware_utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _clock(clock: Clock) -> out.ClockOut:
    return out.ClockOut(
        target=clock.target, contractual=clock.contractual, minutes=clock.minutes,
        state=clock.state, due_at=clock.due_at, met_at=clock.met_at, breached=clock.breached,
        over_minutes=round(clock.over_minutes, 2), used=round(clock.used, 4),
        segments=[out.SegmentOut(kind=s.kind, start=s.start, end=s.end,
                                 minutes=round(s.minutes, 2)) for s in clock.segments])


def _agent(agent: Agent) -> out.AgentOut:
    assert agent.id is not None
    return out.AgentOut(id=agent.id, name=agent.name, email=agent.email, role=agent.role,
                        active=agent.active, language=agent.language)


def _webhook(hook: Any) -> out.WebhookOut:
    return out.WebhookOut(id=hook.id, url=hook.url, events=hook.events.split(","),
                          description=hook.description, active=hook.active)


def _contact(contact: Contact, organization: Organization) -> out.ContactOut:
    assert contact.id is not None
    return out.ContactOut(id=contact.id, organization=organization.code, name=contact.name,
                          email=contact.email, role=contact.role, phone=contact.phone,
                          types=[t for t in contact.types.split(",") if t],
                          language=contact.language, is_manager=contact.is_manager,
                          state=contact.state, active=contact.active)


def _cursor_of(row: FoundTicket, sort: str) -> str:
    """Where a page ended: its last ticket's update (or due) time, µs since 1970, and id."""
    ticket = row.ticket
    moment = row.due_at if sort == "due" and row.due_at is not None else aware(ticket.updated_at)
    micros = (moment - EPOCH) // timedelta(microseconds=1)
    return f"{micros}.{ticket.id}"


def _cursor(value: str | None) -> tuple[datetime, int] | None:
    if not value:
        return None
    micros, _, ticket_id = value.partition(".")
    return EPOCH + timedelta(microseconds=int(micros)), int(ticket_id)


def _agents(session: Session, ids: list[int | None]) -> dict[int, Agent]:
    wanted = {i for i in ids if i is not None}
    if not wanted:
        return {}
    return {a.id: a for a in session.exec(select(Agent).where(col(Agent.id).in_(wanted)))
            if a.id is not None}


def _applications(session: Session, ids: list[int | None]) -> dict[int, str]:
    wanted = {i for i in ids if i is not None}
    if not wanted:
        return {}
    rows = session.exec(select(Application.id, Application.name)
                        .where(col(Application.id).in_(wanted)))
    return {i: name for i, name in rows if i is not None}


def _organization(row: Organization) -> out.Organization:
    return out.Organization(code=row.code, name=row.name, tax_id=row.tax_id,
                            sla_plan=row.sla_plan, sender_auth=row.sender_auth)


def _sender_auth(row: InboundMessage | None) -> out.SenderAuthOut | None:
    verdict = Verdict.from_json(row.sender_auth) if row is not None else None
    if row is None or (verdict is None and row.released_by is None):
        return None
    return out.SenderAuthOut(authenticated=row.authenticated,
                             summary=verdict.summary() if verdict else "",
                             released_by=row.released_by)


def _calendar(row: SlaCalendar) -> out.SlaCalendarOut:
    def week(hours: dict[str, list[list[str]]]) -> dict[str, list[str]]:
        return {day: [f"{a}-{b}" for a, b in windows] for day, windows in hours.items()}

    return out.SlaCalendarOut(
        name=row.name, timezone=row.timezone, country=row.country, region=row.subdivision,
        hours=week(json.loads(row.hours)),
        seasons=[out.SlaSeason(start=s["from"], end=s["to"], hours=week(s["hours"]))
                 for s in json.loads(row.seasons)],
        holidays=json.loads(row.extra_holidays))


def _plan(session: Session, row: SlaPlan) -> out.SlaPlanOut:
    calendar = session.get(SlaCalendar, row.calendar_id)
    return out.SlaPlanOut(
        name=row.name, calendar=calendar.name if calendar else "",
        default_priority=row.default_priority, targets=json.loads(row.targets),
        warn_at=json.loads(row.warn_at),
        organizations=list(session.exec(select(Organization.code).where(
            Organization.sla_plan == row.name).order_by(col(Organization.code)))))


def _summary(row: FoundTicket | TicketRecord, agents: dict[int, Agent],
             applications: dict[int, str]) -> dict[str, Any]:
    ticket = row.ticket
    assignee = agents.get(ticket.assignee_id) if ticket.assignee_id is not None else None
    return {
        "number": ticket.number, "subject": ticket.subject, "status": ticket.status,
        "priority": ticket.priority, "channel": ticket.channel,
        "organization": _organization(row.organization),
        "requester": out.Person(name=row.requester.name, email=row.requester.email),
        "application": applications.get(ticket.application_id)
        if ticket.application_id is not None else None,
        "assignee": out.Person(name=assignee.name, email=assignee.email) if assignee else None,
        "rating": ticket.rating, "created_at": aware(ticket.created_at),
        "updated_at": aware(ticket.updated_at), "version": ticket.version,
        "sla_due_at": getattr(row, "due_at", None),
    }


def _detail(record: TicketRecord, agents: dict[int, Agent], applications: dict[int, str],
            files_url: str) -> out.TicketDetail:
    return out.TicketDetail(
        **_summary(record, agents, applications),
        rating_comment=record.ticket.rating_comment,
        messages=[out.MessageOut(
            id=m.id, direction=m.direction, channel=m.channel, internal=m.internal,
            author=m.from_address, subject=m.subject, new_text=m.new_text or m.text,
            text=m.text, automatic=m.automatic, created_at=aware(m.created_at),
            sender_auth=_sender_auth(record.inbound.get(m.id)))
            for m in record.messages if m.id is not None],
        files=[out.FileOut(
            id=f.id, message_id=f.message_id, filename=f.filename,
            content_type=f.content_type, size=f.size, accepted=f.accepted, reason=f.reason,
            download_url=f"{files_url}/{f.id}" if f.accepted and f.storage_key else None)
            for f in record.attachments if f.id is not None],
        history=[out.HistoryEntry(from_status=h.from_status, to_status=h.to_status,
                                  actor=h.actor, note=h.note, created_at=aware(h.created_at))
                 for h in record.history],
        notifications=[out.NotificationOut(
            id=n.id, event=n.event, recipient=n.recipient, state=n.state,
            attempts=n.attempts, failure=n.failure, last_error=n.last_error,
            created_at=aware(n.created_at),
            sent_at=aware(n.sent_at) if n.sent_at else None)
            for n in record.notifications if n.id is not None],
    )
