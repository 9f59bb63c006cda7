"""Webhooks to the team's helpdesk tool, delivered to a real HTTP receiver started here and
checked with the `standardwebhooks` package: signed, in order, once, retried while the
receiver is down, written in the change's own transaction; and end to end through `serve`."""

from __future__ import annotations

import re
import smtplib
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from sqlmodel import Session, select
from standardwebhooks import Webhook as Verifier

from gateway import webhooks
from gateway.webhooks import WebhookSender
from storage.agents import add_agent, create_token
from storage.db import transaction
from storage.directory import DirectoryError
from storage.models import WebhookDelivery
from storage.tickets import ticket_by_number
from tests.conftest import PASSWORD, free_port, load_mail, run_async, wait_for
from tests.test_customer_area import ingest

FAST = (timedelta(seconds=0),) * 3  # retries at once, three of them, for the tests


class Receiver:
    """The team's helpdesk tool: keeps what it is sent; ``answer`` is what it replies."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.answer = 200
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["content-length"]))
                with receiver.lock:
                    if receiver.answer == 200:
                        receiver.received.append((dict(self.headers), body))
                    status = receiver.answer
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks"

    def events(self, secret: str) -> list[dict]:
        """What arrived, each verified with the subscription's secret (raises if forged)."""
        with self.lock:
            return [Verifier(secret).verify(body, headers) for headers, body in self.received]

    def ids(self) -> list[str]:
        with self.lock:
            return [headers["webhook-id"] for headers, _ in self.received]


@pytest.fixture
def receiver():
    found = Receiver()
    found.thread.start()
    yield found
    found.server.shutdown()
    found.server.server_close()


def drain(parts, sender: WebhookSender, rounds: int = 10) -> None:
    async def run() -> None:
        async with httpx.AsyncClient() as client:
            for _ in range(rounds):
                await sender.deliver_due(client)

    run_async(run())


def queued(parts) -> list[WebhookDelivery]:
    with Session(parts.engine) as session:
        return list(session.exec(select(WebhookDelivery).order_by(WebhookDelivery.id)))


def test_events_arrive_signed_in_order_once(parts, receiver):
    hook = webhooks.add(parts.engine, receiver.url)
    outcome = ingest(parts, "outlook-new-request-es.eml")
    with transaction(parts.engine) as session:
        ticket = ticket_by_number(session, outcome.ticket)
        parts.workflow.move(session, ticket, "qualified", actor="Ana Ruiz", note="visto")
    sender = WebhookSender(parts.engine, "test")
    drain(parts, sender)
    events = receiver.events(hook.secret)
    assert [e["type"] for e in events][:2] == ["ticket.created", "ticket.status_changed"]
    created, moved = events[0]["data"], events[1]["data"]
    assert created["ticket"]["number"] == outcome.ticket
    assert created["ticket"]["requester"] == "maria.garcia@ferreteria-lopez.es"
    assert (moved["from"], moved["to"], moved["actor"], moved["note"]) == (
        "new", "qualified", "Ana Ruiz", "visto")
    assert len(set(receiver.ids())) == len(receiver.ids())  # each event once
    assert all(d.state == "sent" and d.attempts == 1 for d in queued(parts))
    drain(parts, sender)  # nothing more to send
    assert len(receiver.ids()) == len(events)
    # A forged body does not verify.
    headers, body = receiver.received[0]
    with pytest.raises(Exception, match="signature"):
        Verifier(hook.secret).verify(body.replace(b"ticket", b"tIcket"), headers)


def test_a_receiver_down_for_a_while_gets_everything_later_once_and_in_order(parts, receiver):
    hook = webhooks.add(parts.engine, receiver.url, ["ticket.created", "ticket.status_changed"])
    receiver.answer = 503
    numbers = [ingest(parts, "outlook-new-request-es.eml").ticket]
    with transaction(parts.engine) as session:
        parts.workflow.move(session, ticket_by_number(session, numbers[0]), "in_progress",
                            actor="Ana Ruiz")
    sender = WebhookSender(parts.engine, "test", retry_after=(timedelta(0),) * 20)
    drain(parts, sender, rounds=3)
    first = queued(parts)
    assert first[0].attempts == 3 and first[0].last_status == 503 and first[0].state == "queued"
    assert first[1].attempts == 0  # waits behind the first: order is kept
    assert receiver.received == []
    receiver.answer = 200
    drain(parts, sender)
    types = [e["type"] for e in receiver.events(hook.secret)]
    assert types == ["ticket.created", "ticket.status_changed"]
    after = queued(parts)
    assert [(d.state, d.last_status) for d in after] == [("sent", 200), ("sent", 200)]
    assert after[0].attempts == 4


def test_a_delivery_is_given_up_after_its_retries_and_the_next_one_goes(parts, receiver):
    hook = webhooks.add(parts.engine, receiver.url)
    receiver.answer = 500
    outcome = ingest(parts, "outlook-new-request-es.eml")
    sender = WebhookSender(parts.engine, "test", retry_after=FAST)
    drain(parts, sender, rounds=4)
    (given_up,) = queued(parts)
    assert given_up.state == "failed" and given_up.attempts == 4
    receiver.answer = 200
    with transaction(parts.engine) as session:
        parts.workflow.move(session, ticket_by_number(session, outcome.ticket), "qualified",
                            actor="Ana Ruiz")
    drain(parts, sender)
    assert [e["type"] for e in receiver.events(hook.secret)] == ["ticket.status_changed"]


def test_only_wanted_events_of_active_subscriptions_and_only_what_was_committed(parts,
                                                                               receiver):
    ratings_only = webhooks.add(parts.engine, receiver.url, ["rating.received"])
    removed = webhooks.add(parts.engine, receiver.url)
    webhooks.remove(parts.engine, removed.id)
    outcome = ingest(parts, "outlook-new-request-es.eml")
    assert queued(parts) == []  # ticket.created: nobody wants it
    # A change rolled back tells nobody.
    with pytest.raises(RuntimeError), transaction(parts.engine) as session:
        parts.workflow.resolve(session, ticket_by_number(session, outcome.ticket), "Ana")
        raise RuntimeError("the change fails after the event was written")
    assert queued(parts) == []
    from gateway import ratings
    with transaction(parts.engine) as session:
        ticket = ticket_by_number(session, outcome.ticket)
        parts.workflow.resolve(session, ticket, "Ana Ruiz")
        assert ratings.record(ticket, 2, "Tardó mucho", "web")
        session.add(ticket)
        parts.workflow.rating_received(session, ticket)
    drain(parts, WebhookSender(parts.engine, "test"))
    (event,) = receiver.events(ratings_only.secret)
    assert event["type"] == "rating.received"
    assert (event["data"]["rating"], event["data"]["comment"]) == (2, "Tardó mucho")
    with pytest.raises(DirectoryError, match="unknown event"):
        webhooks.add(parts.engine, receiver.url, ["ticket.deleted"])
    with pytest.raises(DirectoryError, match="not an http"):
        webhooks.add(parts.engine, "ftp://example.com/hooks")


# --------------------------------------------------------------------------- end to end

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def test_mail_api_reply_resolve_and_rating_reach_the_receiver_in_order(gateway, directory,
                                                                        receiver):
    # Mail in → the team qualifies, plans and asks through the API → the customer answers by
    # mail → resolved → the customer rates on the web: every event at the receiver, in order.
    hook = webhooks.add(directory, receiver.url)
    add_agent(directory, name="Ana Ruiz", email="ana@soporte.example")
    token = create_token(directory, "ana@soporte.example", "e2e").secret
    with smtplib.SMTP("127.0.0.1", gateway.smtp_port, timeout=10) as smtp:
        smtp.sendmail("maria.garcia@ferreteria-lopez.es", ["soporte@example.com"],
                      load_mail("outlook-new-request-es.eml"))
    api = httpx.Client(base_url=gateway.web_url + "/api/v1", timeout=10,
                       headers={"Authorization": f"Bearer {token}"})
    with api:
        wait_for(lambda: api.get("/tickets").json()["items"], timeout=30)
        number = api.get("/tickets").json()["items"][0]["number"]
        assert number == 1001  # the number the customer's reply below names
        for body in ({"status": "qualified"}, {"status": "planned", "planned_for": "2026-12-10"},
                     {"status": "awaiting_customer", "request": "El PDF de la factura"}):
            assert api.post(f"/tickets/{number}/status", json=body).status_code == 200
        with smtplib.SMTP("127.0.0.1", gateway.smtp_port, timeout=10) as smtp:
            smtp.sendmail("maria.garcia@ferreteria-lopez.es", ["soporte@example.com"],
                          load_mail("gmail-reply-awaiting-customer-es.eml"))
        wait_for(lambda: api.get(f"/tickets/{number}").json()["status"] == "in_progress",
                 timeout=30)
        assert api.post(f"/tickets/{number}/status",
                        json={"status": "resolved", "note": "Corregido"}).status_code == 200
    with httpx.Client(base_url=gateway.web_url, timeout=10) as customer:
        page = customer.get("/login")
        customer.post("/login", data={"email": "maria.garcia@ferreteria-lopez.es",
                                      "password": PASSWORD,
                                      "csrf_token": CSRF.search(page.text)[1]})
        page = customer.get(f"/tickets/{number}")
        rated = customer.post(f"/tickets/{number}/rating",
                              data={"stars": "5", "csrf_token": CSRF.search(page.text)[1]})
        assert rated.status_code in (200, 303), rated.text
    wanted = ["ticket.created", "ticket.status_changed", "ticket.status_changed",
              "ticket.status_changed", "ticket.status_changed", "message.received",
              "ticket.status_changed", "rating.received"]
    wait_for(lambda: len(receiver.ids()) >= len(wanted), timeout=30)
    events = receiver.events(hook.secret)
    assert [e["type"] for e in events] == wanted
    moves = [(e["data"]["from"], e["data"]["to"]) for e in events
             if e["type"] == "ticket.status_changed"]
    assert moves == [("new", "qualified"), ("qualified", "planned"),
                     ("planned", "awaiting_customer"), ("awaiting_customer", "in_progress"),
                     ("in_progress", "resolved")]
    assert events[5]["data"]["message"]["from"] == "maria.garcia@ferreteria-lopez.es"
    assert events[-1]["data"]["rating"] == 5
    assert len(set(receiver.ids())) == len(wanted)

