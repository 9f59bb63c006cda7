"""The team's JSON API (/api/v1): tokens, reading and finding tickets, acting on them through
the workflow, If-Match, Idempotency-Key, problem+json errors; on SQLite and PostgreSQL."""

from __future__ import annotations

import warnings
from datetime import timedelta

import pytest
from sqlmodel import Session, col, select
from starlette.exceptions import StarletteDeprecationWarning

from storage import idempotency
from storage.agents import add_agent, create_token, revoke_token
from storage.agents import set_active as set_agent_active
from storage.directory import add_application
from storage.models import Message, Notification, TeamAction, utcnow
from tests.test_customer_area import MARIA, ingest, log_in
from web.app import create_app

with warnings.catch_warnings():
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

PROBLEM = "application/problem+json"


@pytest.fixture
def team(parts):
    """Two agents with a token each: (ana's token, luis's token)."""
    add_agent(parts.engine, name="Ana Ruiz", email="ana@soporte.example")
    add_agent(parts.engine, name="Luis Gil", email="luis@soporte.example", role="admin")
    return (create_token(parts.engine, "ana@soporte.example", "ana's script").secret,
            create_token(parts.engine, "luis@soporte.example", "luis's tool").secret)


@pytest.fixture
def api(parts, settings, team):
    with TestClient(create_app(settings, parts.engine, parts.workflow)) as client:
        client.headers["Authorization"] = f"Bearer {team[0]}"
        yield client


def as_luis(team) -> dict[str, str]:
    return {"Authorization": f"Bearer {team[1]}"}


def new_tickets(parts, count: int = 1) -> list[int]:
    numbers = []
    for _ in range(count):
        outcome = ingest(parts, "outlook-new-request-es.eml",
                         raw=_fresh("outlook-new-request-es.eml", len(numbers)))
        numbers.append(outcome.ticket)
    return numbers


def _fresh(name: str, n: int) -> bytes:
    from tests.conftest import load_mail
    raw = load_mail(name)
    # Another Message-ID and subject each time, so that each mail is a new ticket.
    return raw.replace(b"Message-ID: <", f"Message-ID: <api{n}.".encode(), 1).replace(
        b"Subject: ", f"Subject: [{n}] ".encode(), 1)


def assert_problem(response, status: int, words: str = "") -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body = response.json()
    assert body["status"] == status and body["title"]
    assert words.lower() in (body.get("detail") or "").lower(), body
    return body


# --------------------------------------------------------------------------- authentication


def test_no_token_a_wrong_one_a_revoked_one_or_a_deactivated_agent_get_401(api, parts, team):
    bare = {"Authorization": ""}
    assert_problem(api.get("/api/v1/tickets", headers=bare), 401, "bearer")
    assert api.get("/api/v1/tickets", headers=bare).headers["www-authenticate"] == "Bearer"
    assert_problem(api.get("/api/v1/tickets", headers={"Authorization": "Bearer hd_nope"}),
                   401, "unknown or revoked")
    assert api.get("/api/v1/tickets").status_code == 200
    set_agent_active(parts.engine, "ana@soporte.example", False)
    assert_problem(api.get("/api/v1/tickets"), 401)
    set_agent_active(parts.engine, "ana@soporte.example", True)
    assert api.get("/api/v1/tickets").status_code == 200
    revoke_token(parts.engine, 1)
    assert_problem(api.get("/api/v1/tickets"), 401)
    assert api.get("/api/v1/tickets", headers=as_luis(team)).status_code == 200
    # Writes too.
    assert_problem(api.post("/api/v1/tickets/1001/notes", json={"text": "x"}), 401)


def test_the_openapi_description_is_served_and_names_every_route(api):
    description = api.get("/api/openapi.json", headers={"Authorization": ""})
    assert description.status_code == 200
    spec = description.json()
    assert spec["openapi"].startswith("3.1")
    assert {"/v1/tickets", "/v1/tickets/{number}", "/v1/tickets/{number}/status",
            "/v1/tickets/{number}/replies", "/v1/tickets/{number}/notes",
            "/v1/tickets/{number}/files/{file_id}"} <= set(spec["paths"])
    assert spec["servers"] == [{"url": "/api"}]
    assert "bearer" in str(spec["components"]["securitySchemes"]).lower()


# --------------------------------------------------------------------------- reading


def test_tickets_are_found_by_filters_a_page_at_a_time(api, parts, team):
    numbers = new_tickets(parts, 5)
    seen, cursor = [], None
    while True:
        page = api.get("/api/v1/tickets", params={"limit": 2, **({"cursor": cursor}
                                                                  if cursor else {})}).json()
        seen += [item["number"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted(numbers, reverse=True)  # each once, the latest updated first
    item = api.get("/api/v1/tickets", params={"limit": 1}).json()["items"][0]
    assert item["organization"]["code"] == "C0001" and item["requester"]["email"] == MARIA
    assert item["priority"] == "normal" and item["assignee"] is None and item["version"] >= 1

    first = numbers[0]
    api.patch(f"/api/v1/tickets/{first}", json={"priority": "urgent",
                                                 "assignee": "luis@soporte.example"})
    api.post(f"/api/v1/tickets/{first}/status", json={"status": "qualified"})

    def found(**params) -> list[int]:
        answer = api.get("/api/v1/tickets", params=params)
        assert answer.status_code == 200, answer.text
        return [i["number"] for i in answer.json()["items"]]

    assert found(status="qualified") == [first]
    assert sorted(found(status=["new", "qualified"])) == sorted(numbers)
    assert found(priority="urgent") == [first]
    assert found(assignee="luis@soporte.example") == [first]
    assert len(found(assignee="none")) == 4
    assert found(text="[0] factura") == [first]
    assert sorted(found(text="4012")) == sorted(numbers)  # a word of the mails, not subjects
    assert found(organization="C0002") == []
    assert_problem(api.get("/api/v1/tickets", params={"status": "done"}), 422, "status")
    assert_problem(api.get("/api/v1/tickets", params={"cursor": "???"}), 422, "cursor")
    assert found(cursor="99.1") == []  # a cursor before everything: nothing after it
    assert_problem(api.get("/api/v1/tickets", params={"limit": 0}), 422, "limit")


def test_a_ticket_is_read_whole_with_its_files_and_mails(api, parts):
    outcome = ingest(parts, "apple-mail-screenshot-es.eml")
    number = outcome.ticket
    answer = api.get(f"/api/v1/tickets/{number}")
    assert answer.status_code == 200
    ticket = answer.json()
    assert answer.headers["etag"] == f'"{ticket["version"]}"'
    assert ticket["messages"][0]["direction"] == "in" and ticket["messages"][0]["new_text"]
    assert ticket["history"][0]["to_status"] == "new"
    assert [n["event"] for n in ticket["notifications"]] == ["received"]
    assert ticket["notifications"][0]["state"] == "queued"
    files = [f for f in ticket["files"] if f["accepted"]]
    assert files, ticket["files"]
    download = api.get(files[0]["download_url"])
    assert download.status_code == 200
    assert download.headers["content-type"].startswith(files[0]["content_type"])
    assert download.headers["x-content-type-options"] == "nosniff"
    assert len(download.content) == files[0]["size"]
    assert_problem(api.get(f"/api/v1/tickets/{number}/files/999999"), 404)
    assert_problem(api.get("/api/v1/tickets/999999"), 404, "no ticket")


# --------------------------------------------------------------------------- acting


def test_actions_go_through_the_workflow_and_are_recorded_with_agent_and_token(api, parts):
    (number,) = new_tickets(parts)
    add_application(parts.engine, "Facturación Plus")
    done = api.post(f"/api/v1/tickets/{number}/status", json={"status": "qualified",
                                                               "note": "revisado"})
    assert done.status_code == 200, done.text
    assert done.json()["status"] == "qualified" and done.json()["notification_id"]
    # Impossible moves are refused, with the reason; required fields are asked for.
    assert_problem(api.post(f"/api/v1/tickets/{number}/status", json={"status": "closed"}),
                   409, "cannot become closed")
    assert_problem(api.post(f"/api/v1/tickets/{number}/status", json={"status": "planned"}),
                   409, "planned date")
    assert_problem(api.post(f"/api/v1/tickets/{number}/status",
                            json={"status": "awaiting_customer"}), 409, "what the customer")
    asked = api.post(f"/api/v1/tickets/{number}/status",
                     json={"status": "awaiting_customer", "request": "El PDF de la factura"})
    assert asked.status_code == 200
    assert_problem(api.post(f"/api/v1/tickets/{number}/status", json={"status": "lost"}), 422)

    answered = api.post(f"/api/v1/tickets/{number}/replies",
                        json={"text": "Gracias, lo revisamos."})
    assert answered.status_code == 200
    noted = api.post(f"/api/v1/tickets/{number}/notes",
                     json={"text": "Nota interna: cliente importante"})
    assert noted.status_code == 200
    patched = api.patch(f"/api/v1/tickets/{number}",
                        json={"priority": "high", "application": "Facturación Plus",
                              "assignee": "ana@soporte.example"})
    assert patched.json()["changed"] == ["application", "assignee", "priority"]
    assert_problem(api.patch(f"/api/v1/tickets/{number}", json={"assignee": "x@y.z"}), 422,
                   "no active agent")
    assert_problem(api.patch(f"/api/v1/tickets/{number}", json={"priority": "asap"}), 422)
    cleared = api.patch(f"/api/v1/tickets/{number}", json={"assignee": None})
    assert cleared.json()["changed"] == ["assignee"]

    ticket = api.get(f"/api/v1/tickets/{number}").json()
    assert ticket["status"] == "awaiting_customer" and ticket["priority"] == "high"
    assert ticket["application"] == "Facturación Plus" and ticket["assignee"] is None
    events = [n["event"] for n in ticket["notifications"]]
    assert events == ["received", "qualified", "awaiting_customer", "agent_reply"]
    note = [m for m in ticket["messages"] if m["internal"]]
    assert [m["text"] for m in note] == ["Nota interna: cliente importante"]
    with Session(parts.engine) as session:
        actions = session.exec(select(TeamAction).order_by(col(TeamAction.id))).all()
        reply = session.exec(select(Message).where(Message.channel == "agent")).one()
        mails = session.exec(select(Notification.context)).all()
    assert [a.action for a in actions] == ["status", "status", "reply", "note", "update",
                                           "update"]
    assert {(a.agent_id, a.token_id) for a in actions} == {(1, 1)}
    assert reply.author_agent_id == 1
    assert not any("Nota interna" in context for context in mails)


def test_an_internal_note_never_reaches_the_customer_area(api, parts, settings):
    (number,) = new_tickets(parts)
    api.post(f"/api/v1/tickets/{number}/notes", json={"text": "Ojo: moroso, no prometer nada"})
    api.post(f"/api/v1/tickets/{number}/replies", json={"text": "Lo estamos mirando."})
    with TestClient(create_app(settings, parts.engine, parts.workflow)) as customer:
        log_in(customer)
        page = customer.get(f"/tickets/{number}")
    assert page.status_code == 200
    assert "Lo estamos mirando." in page.text
    assert "moroso" not in page.text


def test_if_match_refuses_a_change_made_on_a_stale_version(api, parts, team):
    (number,) = new_tickets(parts)
    version = api.get(f"/api/v1/tickets/{number}").headers["etag"]
    first = api.patch(f"/api/v1/tickets/{number}", json={"priority": "high"},
                      headers={"If-Match": version})
    assert first.status_code == 200 and f'"{first.json()["version"]}"' != version
    # Luis read the same version: his change is refused, and says what the version is now.
    stale = api.patch(f"/api/v1/tickets/{number}", json={"priority": "low"},
                      headers={"If-Match": version, **as_luis(team)})
    assert_problem(stale, 412, "changed since")
    assert stale.headers["etag"] == f'"{first.json()["version"]}"'
    assert_problem(api.post(f"/api/v1/tickets/{number}/replies", json={"text": "x"},
                            headers={"If-Match": version}), 412)
    assert api.get(f"/api/v1/tickets/{number}").json()["priority"] == "high"
    # Any change moves the version, a customer's mail included; without If-Match, no check.
    assert api.patch(f"/api/v1/tickets/{number}", json={"priority": "low"}).status_code == 200


def test_a_post_sent_again_with_its_idempotency_key_acts_once(api, parts):
    (number,) = new_tickets(parts)
    key = {"Idempotency-Key": "retry-7f3a"}
    first = api.post(f"/api/v1/tickets/{number}/replies", json={"text": "Una vez"},
                     headers=key)
    again = api.post(f"/api/v1/tickets/{number}/replies", json={"text": "Una vez"},
                     headers=key)
    assert first.status_code == again.status_code == 200
    assert again.json() == first.json() and again.headers["idempotent-replayed"] == "true"
    with Session(parts.engine) as session:
        replies = session.exec(select(Notification).where(
            Notification.event == "agent_reply")).all()
    assert len(replies) == 1
    # The same key for another request is a mistake, said so; another key acts again.
    assert_problem(api.post(f"/api/v1/tickets/{number}/replies", json={"text": "Otra"},
                            headers=key), 422, "another request")
    other = api.post(f"/api/v1/tickets/{number}/replies", json={"text": "Una vez"},
                     headers={"Idempotency-Key": "retry-8b1c"})
    assert other.status_code == 200 and "idempotent-replayed" not in other.headers
    # An error answer is kept too (nothing was done, and retrying will not change that).
    wrong = {"Idempotency-Key": "retry-9"}
    assert api.post("/api/v1/tickets/999999/notes", json={"text": "x"},
                    headers=wrong).status_code == 404
    assert api.post("/api/v1/tickets/999999/notes", json={"text": "x"},
                    headers=wrong).headers["idempotent-replayed"] == "true"
    # Housekeeping forgets the keys after a day: the same key then acts anew.
    assert idempotency.forget_before(parts.engine, utcnow() - idempotency.KEEP) == 0
    assert idempotency.forget_before(parts.engine, utcnow() + timedelta(seconds=1)) == 3
    anew = api.post(f"/api/v1/tickets/{number}/replies", json={"text": "Una vez"}, headers=key)
    assert anew.status_code == 200 and "idempotent-replayed" not in anew.headers


# --------------------------------------------------------------------------- directory, team


def test_organizations_applications_and_contacts_are_listed_created_and_edited(api, parts):
    made = api.post("/api/v1/organizations", json={
        "code": "C0100", "tax_id": "B99999999", "name": "Talleres Norte S.L.",
        "domains": ["talleres-norte.es"]})
    assert made.status_code == 201 and made.json()["code"] == "C0100"
    assert_problem(api.post("/api/v1/organizations", json={
        "code": "C0100", "tax_id": "B1", "name": "Otra"}), 409, "already exists")
    assert "C0100" in [o["code"] for o in api.get("/api/v1/organizations").json()]
    assert api.post("/api/v1/applications", json={"name": "Nóminas"}).status_code == 201
    assert_problem(api.post("/api/v1/applications", json={"name": "Nóminas"}), 409)
    assert "Nóminas" in api.get("/api/v1/applications").json()

    contact = api.post("/api/v1/contacts", json={
        "organization": "C0100", "name": "Rosa Vidal", "email": "Rosa@Talleres-Norte.es",
        "types": ["billing", "technical"], "is_manager": True})
    assert contact.status_code == 201, contact.text
    person = contact.json()
    assert (person["email"], person["state"], person["types"]) == (
        "rosa@talleres-norte.es", "verified", ["billing", "technical"])
    assert_problem(api.post("/api/v1/contacts", json={
        "organization": "NOPE", "name": "X", "email": "x@y.es"}), 422, "no organization")
    assert_problem(api.post("/api/v1/contacts", json={
        "organization": "C0100", "name": "X", "email": "rosa@talleres-norte.es"}), 409)
    changed = api.patch(f"/api/v1/contacts/{person['id']}",
                        json={"phone": "976 000 111", "language": "en", "active": False})
    assert changed.json()["phone"] == "976 000 111" and changed.json()["active"] is False
    assert_problem(api.patch(f"/api/v1/contacts/{person['id']}", json={"name": None}), 422)
    moved = api.patch(f"/api/v1/contacts/{person['id']}",
                      json={"email": "R.Vidal@talleres-norte.es"})
    assert moved.status_code == 200 and moved.json()["email"] == "r.vidal@talleres-norte.es"
    api.patch(f"/api/v1/contacts/{person['id']}", json={"email": "rosa@talleres-norte.es"})
    listed = api.get("/api/v1/contacts", params={"organization": "C0100"}).json()
    assert [c["email"] for c in listed] == ["rosa@talleres-norte.es"]
    assert_problem(api.patch("/api/v1/contacts/999999", json={"phone": "1"}), 404)


def test_a_caller_not_yet_a_contact_waits_for_the_managers_with_a_held_ticket(api, parts):
    answer = api.post("/api/v1/contacts/pending", json={
        "organization": "C0001", "name": "Pedro Ruiz", "email": "pedro.ruiz@ferreteria-lopez.es",
        "phone": "600 111 222", "subject": "No puedo entrar en el programa",
        "description": "Llamó a las 9:10; error al iniciar sesión."})
    assert answer.status_code == 201, answer.text
    body = answer.json()
    assert body["contact"]["state"] == "pending" and body["managers_asked"] == 1
    held = api.get(f"/api/v1/tickets/{body['ticket']}").json()
    assert held["status"] == "held" and held["channel"] == "phone"
    with Session(parts.engine) as session:
        asked = session.exec(select(Notification).where(
            Notification.event == "verification_request")).all()
    assert [n.recipient for n in asked] == [MARIA]  # the organization's manager
    assert_problem(api.post("/api/v1/contacts/pending", json={
        "organization": "C0001", "name": "María", "email": MARIA, "subject": "x"}), 409)


def test_agents_and_webhooks_are_for_admins(api, parts, team):
    admin = as_luis(team)
    assert_problem(api.post("/api/v1/agents", json={"name": "Eva", "email": "eva@s.example"}),
                   403, "admin")
    assert_problem(api.get("/api/v1/webhooks"), 403)
    assert_problem(api.post("/api/v1/webhooks", json={"url": "http://127.0.0.1:9/h"}), 403)
    made = api.post("/api/v1/agents", json={"name": "Eva Sanz", "email": "eva@s.example"},
                    headers=admin)
    assert made.status_code == 201 and made.json()["role"] == "agent"
    assert [a["email"] for a in api.get("/api/v1/agents").json()] == [
        "ana@soporte.example", "eva@s.example", "luis@soporte.example"]
    ana = api.get("/api/v1/agents").json()[0]
    assert api.patch(f"/api/v1/agents/{ana['id']}", json={"active": False},
                     headers=admin).json()["active"] is False
    assert_problem(api.get("/api/v1/tickets"), 401)  # Ana's own token stopped with her
    luis = api.get("/api/v1/agents", headers=admin).json()[2]
    assert_problem(api.patch(f"/api/v1/agents/{luis['id']}", json={"role": "agent"},
                             headers=admin), 409, "own")
    hook = api.post("/api/v1/webhooks", json={"url": "http://127.0.0.1:9/hooks",
                                              "events": ["rating.received"]}, headers=admin)
    assert hook.status_code == 201 and hook.json()["secret"].startswith("whsec_")
    listed = api.get("/api/v1/webhooks", headers=admin).json()
    assert listed == [{k: v for k, v in hook.json().items() if k != "secret"}]
    assert api.get(f"/api/v1/webhooks/{listed[0]['id']}/deliveries",
                   headers=admin).json() == []
    assert api.delete(f"/api/v1/webhooks/{listed[0]['id']}", headers=admin).status_code == 204
    assert api.get("/api/v1/webhooks", headers=admin).json()[0]["active"] is False


def test_an_answer_with_files_is_mailed_with_them_attached_and_kept_on_the_ticket(api, parts):
    from tests.conftest import deliver, parse_mail
    from tests.test_customer_area import EXE, PDF, PNG

    (number,) = new_tickets(parts)
    sent = api.post(f"/api/v1/tickets/{number}/replies/with-files",
                    data={"text": "Adjunto la factura corregida y una captura."},
                    files=[("files", ("factura ñ 11.pdf", PDF, "application/pdf")),
                           ("files", ("captura.png", PNG, "image/png"))])
    assert sent.status_code == 200, sent.text
    ticket = api.get(f"/api/v1/tickets/{number}").json()
    answer = next(m for m in ticket["messages"] if m["channel"] == "agent")
    files = [f for f in ticket["files"] if f["message_id"] == answer["id"]]
    assert [(f["filename"], f["content_type"]) for f in files] == [
        ("factura ñ 11.pdf", "application/pdf"), ("captura.png", "image/png")]
    deliver(parts)
    notification_id = sent.json()["notification_id"]
    (eml,) = parts.sender.outbox_dir.glob(f"{notification_id:06d}-*.eml")
    mail = parse_mail(eml.read_bytes())
    assert mail.get_content_type() == "multipart/mixed"
    assert "Adjunto la factura corregida" in mail.get_body(("plain",)).get_content()
    attached = [(part.get_filename(), part.get_content_type(), part.get_content())
                for part in mail.iter_attachments()]
    assert attached == [("factura ñ 11.pdf", "application/pdf", PDF),
                        ("captura.png", "image/png", PNG)]
    # A file the attachment rules refuse refuses the answer, naming it; nothing is sent.
    refused = api.post(f"/api/v1/tickets/{number}/replies/with-files",
                       data={"text": "Y el instalador"},
                       files=[("files", ("setup.exe", EXE, "application/octet-stream"))])
    assert_problem(refused, 422, "setup.exe")
    with Session(parts.engine) as session:
        replies = session.exec(select(Notification).where(
            Notification.event == "agent_reply")).all()
    assert len(replies) == 1


def test_tickets_sort_by_their_sla_due_time_and_a_ticket_explains_its_clocks(api, parts):
    from gateway.sla_clocks import refresh_changed

    numbers = new_tickets(parts, 3)
    api.patch(f"/api/v1/tickets/{numbers[1]}", json={"priority": "urgent"})
    api.post(f"/api/v1/tickets/{numbers[2]}/status",
             json={"status": "awaiting_customer", "request": "El PDF"})  # its clocks stand
    assert refresh_changed(parts.engine) == 3
    seen, cursor = [], None
    while True:
        page = api.get("/api/v1/tickets", params={"sort": "due", "limit": 1,
                                                  **({"cursor": cursor} if cursor else {})})
        assert page.status_code == 200, page.text
        seen += [(i["number"], i["sla_due_at"]) for i in page.json()["items"]]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            break
    # The urgent one first; the one awaiting the customer has no clock running: not listed.
    assert [n for n, _ in seen] == [numbers[1], numbers[0]]
    assert seen[0][1] < seen[1][1]
    detail = api.get(f"/api/v1/tickets/{numbers[1]}").json()
    clocks = {c["target"]: c for c in detail["sla"]}
    assert set(clocks) == {"first_response", "resolution", "qualify", "plan"}
    assert clocks["first_response"]["minutes"] == 30 and clocks["first_response"]["contractual"]
    assert clocks["qualify"]["contractual"] is False
    assert clocks["first_response"]["segments"][0]["kind"] in ("running", "outside_hours",
                                                               "holiday")
    paused = {c["target"]: c for c in api.get(f"/api/v1/tickets/{numbers[2]}").json()["sla"]}
    assert paused["resolution"]["state"] == "paused" and paused["resolution"]["due_at"] is None


def test_tickets_are_filtered_by_due_time_and_breach(api, parts):
    from datetime import UTC, datetime

    from sqlmodel import update

    from gateway.sla_clocks import refresh_changed
    from storage.models import SlaClock, Ticket

    numbers = new_tickets(parts, 3)
    api.patch(f"/api/v1/tickets/{numbers[1]}", json={"priority": "urgent"})
    assert refresh_changed(parts.engine) == 3
    with Session(parts.engine) as session:
        due = {number: min(c.due_at for c in session.exec(
            select(SlaClock).join(Ticket, Ticket.id == SlaClock.ticket_id).where(
                Ticket.number == number)) if c.due_at is not None) for number in numbers}
    urgent = due[numbers[1]]
    assert urgent < min(due[numbers[0]], due[numbers[2]])

    def found(**params) -> list[int]:
        answer = api.get("/api/v1/tickets", params=params)
        assert answer.status_code == 200, answer.text
        return sorted(i["number"] for i in answer.json()["items"])

    moment = (urgent + timedelta(seconds=1)).astimezone(UTC).isoformat()
    assert found(due_before=moment) == [numbers[1]]
    assert found(due_before=datetime(2000, 1, 1, tzinfo=UTC).isoformat()) == []
    assert found(breached="false") == sorted(numbers)
    # Long after: every one of them breached something (its refresh, at a later moment).
    refresh_changed(parts.engine)  # nothing to do yet
    later = urgent + timedelta(days=60)
    with Session(parts.engine) as session:
        session.exec(update(SlaClock).values(recheck_at=urgent))
        session.commit()
    refresh_changed(parts.engine, now=later)
    assert found(breached="true") == sorted(numbers)
    assert found(breached="true", priority="urgent") == [numbers[1]]


def test_calendars_and_plans_are_managed_through_the_api_by_admins(api, parts, team):
    from gateway.sla_clocks import refresh_changed
    from storage.models import SlaClock, Ticket

    listed = api.get("/api/v1/sla/calendars").json()
    assert [c["name"] for c in listed] == ["spain"]
    assert listed[0]["hours"]["mon"] == ["09:00-14:00", "15:30-18:30"]
    assert listed[0]["seasons"][0] == {"from": "06-15", "to": "09-15",
                                       "hours": {d: ["08:00-15:00"] for d in
                                                 ("mon", "tue", "wed", "thu", "fri")}}
    plans = api.get("/api/v1/sla/plans").json()
    assert plans[0]["name"] == "standard" and plans[0]["calendar"] == "spain"
    assert plans[0]["organizations"] == ["C0001", "C0002"]
    assert plans[0]["targets"]["qualify"]["normal"] == 60

    zaragoza = {"timezone": "Europe/Madrid", "country": "ES", "region": "AR",
                "hours": {"mon": ["15:30-18:30", "09:00-14:00"], "fri": ["08:00-15:00"]},
                "seasons": [{"from": "07-01", "to": "08-31",
                             "hours": {"mon": ["08:00-14:00"]}}],
                "holidays": ["2026-01-29"]}
    assert_problem(api.put("/api/v1/sla/calendars/zaragoza", json=zaragoza), 403)
    saved = api.put("/api/v1/sla/calendars/zaragoza", json=zaragoza, headers=as_luis(team))
    assert saved.status_code == 200, saved.text
    assert saved.json()["hours"] == {"mon": ["09:00-14:00", "15:30-18:30"],
                                     "fri": ["08:00-15:00"]}
    assert saved.json()["holidays"] == ["2026-01-29"] and saved.json()["region"] == "AR"
    for wrong, words in (({"hours": {"mon": ["09:00-14:00", "13:00-15:00"]}}, "overlap"),
                         ({"hours": {"mon": ["14:00-09:00"]}}, "ends after it starts"),
                         ({"timezone": "Europe/Nowhere"}, "Europe/Nowhere"),
                         ({"region": "XX"}, "XX"),
                         ({"seasons": [{"from": "02-30", "to": "03-01", "hours": {}}]},
                          "day")):
        answer = api.put("/api/v1/sla/calendars/zaragoza", json={**zaragoza, **wrong},
                         headers=as_luis(team))
        assert_problem(answer, 422, words)

    number = new_tickets(parts)[0]
    refresh_changed(parts.engine)
    plan = {"calendar": "zaragoza", "default_priority": "high",
            "targets": {"first_response": {"high": 45}, "resolution": {"high": 600}},
            "warn_at": [0.5]}
    assert_problem(api.put("/api/v1/sla/plans/gold", json={**plan, "calendar": "nope"},
                           headers=as_luis(team)), 422, "no calendar 'nope'")
    assert_problem(api.put("/api/v1/sla/plans/gold", json={
        **plan, "targets": {"resolution": {"low": 900}}}, headers=as_luis(team)), 422,
        "default priority")
    saved = api.put("/api/v1/sla/plans/gold", json=plan, headers=as_luis(team))
    assert saved.status_code == 200, saved.text
    assert saved.json()["organizations"] == []
    assert_problem(api.patch("/api/v1/organizations/C0001", json={"sla_plan": "gold"}), 403)
    assert_problem(api.patch("/api/v1/organizations/C0001", json={"sla_plan": "nope"},
                             headers=as_luis(team)), 422, "no SLA plan")
    assert_problem(api.patch("/api/v1/organizations/C9999", json={"sla_plan": "gold"},
                             headers=as_luis(team)), 404)
    moved = api.patch("/api/v1/organizations/C0001", json={"sla_plan": "gold"},
                      headers=as_luis(team))
    assert moved.status_code == 200 and moved.json()["sla_plan"] == "gold"
    assert refresh_changed(parts.engine) == 1  # the open ticket follows its new plan
    with Session(parts.engine) as session:
        clocks = {c.target: c for c in session.exec(
            select(SlaClock).join(Ticket, Ticket.id == SlaClock.ticket_id).where(
                Ticket.number == number))}
    assert set(clocks) == {"first_response", "resolution"}
    assert clocks["first_response"].minutes == 45  # the plan's default priority's minutes
    assert {o["code"]: o["sla_plan"] for o in api.get("/api/v1/organizations").json()} == {
        "C0001": "gold", "C0002": "standard"}
