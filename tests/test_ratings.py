"""Star ratings: signed links of the "resolved" mail, the one-click page, scanners, reminders."""

from __future__ import annotations

import hashlib
import json
import re
import time
import warnings
from datetime import timedelta

import httpx
import pytest
from click.testing import CliRunner
from itsdangerous import TimestampSigner, URLSafeTimedSerializer
from sqlmodel import Session, select
from starlette.exceptions import StarletteDeprecationWarning

from gateway.cli import main
from gateway.links import RATING_SALT
from gateway.outbound.render import Renderer
from gateway.ratings import is_burst, opened, promote_pending, propose, queue_reminders
from storage.db import transaction
from storage.models import Notification, Ticket, utcnow
from storage.tickets import contact_by_email, ticket_by_number
from tests.conftest import PASSWORD, wait_for
from web.app import create_app

with warnings.catch_warnings():
    # Starlette asks for the httpx2 fork, not packaged here; its TestClient works with httpx.
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

MARIA = "maria.garcia@ferreteria-lopez.es"
LUCIA = "lucia.martin@clinicadental-sur.com"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def open_ticket(parts, email: str = MARIA, resolve: bool = True) -> tuple[int, int]:
    """A ticket of ``email``'s organization, resolved by an agent unless told otherwise."""
    with transaction(parts.engine) as session:
        contact = contact_by_email(session, email)
        assert contact is not None and contact.id is not None
        ticket = parts.workflow.open_ticket(session, requester=contact, channel="web",
                                            subject="Error al generar la factura")
        if resolve:
            parts.workflow.resolve(session, ticket, "Ana (soporte)", "Serie corregida.")
        return ticket.number, contact.id


def stored(parts, number: int) -> Ticket:
    with Session(parts.engine) as session:
        ticket = ticket_by_number(session, number)
        assert ticket is not None
        return ticket


def token(parts, number: int, contact_id: int, stars: int, *, age: float = 3600) -> str:
    """A star link's token as a mail written ``age`` seconds ago carries it (by default an
    hour: a person opening it later; 0: a scanner right after the mail went out)."""
    if not age:
        return parts.rating_links.token(number, contact_id, stars)

    class SignedBefore(TimestampSigner):
        def get_timestamp(self) -> int:
            return int(time.time() - age)

    serializer = URLSafeTimedSerializer(str(parts.settings.secret_key), salt=RATING_SALT,
                                        signer=SignedBefore,
                                        signer_kwargs={"digest_method": hashlib.sha256})
    return serializer.dumps([number, contact_id, stars])


def promoted(parts, minutes: float = 3) -> int:
    """What the gateway's ratings loop does, ``minutes`` from now."""
    return promote_pending(parts.engine, parts.workflow, utcnow() + timedelta(minutes=minutes))


@pytest.fixture
def client(parts, settings):
    with TestClient(create_app(settings, parts.engine)) as test_client:
        yield test_client


def post_form(client, path: str, page: httpx.Response, **fields: str) -> httpx.Response:
    """Send a page's form as a person's browser would, with the page's CSRF token."""
    match = CSRF.search(page.text)
    assert match, "the page has no form"
    return client.post(path, data={"csrf_token": match.group(1), **fields})


# --------------------------------------------------------------------------- the links


def test_star_link_round_trips_its_ticket_contact_and_stars(parts):
    # A token reads back as the ticket number, contact id and stars it was made for.
    choice = parts.rating_links.read(token(parts, 1001, 7, 4))
    assert (choice.ticket_number, choice.contact_id, choice.stars) == (1001, 7, 4)


def test_resolved_mail_has_five_star_links_in_both_languages(parts):
    # The "resolved" mail, in Spanish and English, links stars 1..5 for its ticket and contact.
    number, contact_id = open_ticket(parts)
    with Session(parts.engine) as session:
        row = session.exec(select(Notification).where(Notification.event == "resolved")).one()
    import json

    context = json.loads(row.context)
    for lang, words in (("es", ["Mal", "Regular", "Normal", "Muy bien", "Excelente"]),
                        ("en", ["Poor", "Fair", "Average", "Very good", "Excellent"])):
        mail = Renderer().render("resolved", lang, context)
        for part in (mail.html, mail.text):
            tokens = re.findall(r"/rate/([A-Za-z0-9_.\-]+)", part)
            choices = [parts.rating_links.read(t) for t in tokens]
            assert [c.stars for c in choices] == [1, 2, 3, 4, 5]
            assert {(c.ticket_number, c.contact_id) for c in choices} == {(number, contact_id)}
            assert all(word in part for word in words)
        assert mail.subject.startswith(f"[#{number}] ")


# --------------------------------------------------------------------------- workflow, reminders


def test_resolve_queues_exactly_one_resolved_notification(parts):
    # Resolving queues one "resolved" mail; resolving the resolved ticket again queues nothing.
    number, _ = open_ticket(parts)
    with transaction(parts.engine) as session:
        ticket = ticket_by_number(session, number)
        assert ticket is not None
        assert parts.workflow.resolve(session, ticket, "Ana (soporte)") is None
    with Session(parts.engine) as session:
        rows = session.exec(select(Notification).where(Notification.event == "resolved")).all()
    assert len(rows) == 1 and rows[0].recipient == MARIA
    assert stored(parts, number).status == "resolved"


def make_old(parts, number: int, **ago: timedelta) -> None:
    with transaction(parts.engine) as session:
        ticket = ticket_by_number(session, number)
        assert ticket is not None
        for field, delta in ago.items():
            setattr(ticket, field, utcnow() - delta)
        session.add(ticket)


def reminders(parts) -> list[Notification]:
    with Session(parts.engine) as session:
        return list(session.exec(
            select(Notification).where(Notification.event == "rating_reminder")).all())


def test_rating_reminder_is_queued_once_only(parts):
    # An unrated ticket resolved 4 days ago gets one reminder, with its own star links; never two.
    number, contact_id = open_ticket(parts)
    make_old(parts, number, resolved_at=timedelta(days=4))
    assert queue_reminders(parts.engine, parts.workflow, parts.rating_links, 3) == 1
    assert queue_reminders(parts.engine, parts.workflow, parts.rating_links, 3) == 0
    sent = reminders(parts)
    assert len(sent) == 1
    mail = Renderer().render("rating_reminder", "es", json.loads(sent[0].context))
    assert "Todavía no lo has valorado" in mail.text
    first_link = re.findall(r"/rate/(\S+)", mail.text)[0]
    assert parts.rating_links.read(first_link).contact_id == contact_id


def test_no_reminder_before_the_delay_or_for_a_rated_ticket(parts):
    # A ticket resolved today, and one already rated, get no reminder.
    open_ticket(parts)
    rated, _ = open_ticket(parts)
    make_old(parts, rated, resolved_at=timedelta(days=5))
    with transaction(parts.engine) as session:
        ticket = ticket_by_number(session, rated)
        assert ticket is not None
        ticket.rating = 5
        session.add(ticket)
    assert queue_reminders(parts.engine, parts.workflow, parts.rating_links, 3) == 0
    assert reminders(parts) == []


def test_ratings_remind_command_queues_the_reminders(parts, settings):
    # `helpdesk ratings remind` queues the due reminder and says how many.
    number, _ = open_ticket(parts)
    make_old(parts, number, resolved_at=timedelta(days=4))
    env = {"HELPDESK_DATABASE_URL": settings.database_url,
           "HELPDESK_VAR_DIR": str(settings.var_dir),
           "HELPDESK_SECRET_KEY": str(settings.secret_key)}
    result = CliRunner(env=env).invoke(main, ["ratings", "remind"])
    assert result.exit_code == 0, result.output
    assert "1 rating reminder(s) queued" in result.output
    assert len(reminders(parts)) == 1


# --------------------------------------------------------------------------- the one-click page


def test_plain_get_and_head_of_a_star_link_record_nothing(parts, client):
    # A link scanner's GET (not following the form) and HEAD leave the ticket unrated.
    number, contact_id = open_ticket(parts)
    path = f"/rate/{token(parts, number, contact_id, 4)}"
    page = client.get(path)
    assert page.status_code == 200
    assert "Muy bien" in page.text and "data-send-itself" in page.text and "rate.js" in page.text
    assert client.head(path).status_code == 200
    assert stored(parts, number).rating is None


def test_the_pages_own_post_records_a_rating_that_stands_after_two_minutes(parts, client):
    # The page's POST (what its script sends) thanks the person and keeps 4 stars as
    # provisional; two minutes without another star opened, and they are the rating.
    number, contact_id = open_ticket(parts)
    path = f"/rate/{token(parts, number, contact_id, 4)}"
    thanks = post_form(client, path, client.get(path), stars="4")
    assert thanks.status_code == 200 and "Hemos registrado tu valoración" in thanks.text
    assert "Muy bien" in thanks.text
    ticket = stored(parts, number)
    assert (ticket.rating, ticket.pending_rating) == (None, 4)
    assert promoted(parts, minutes=1) == 0  # not yet
    assert promoted(parts) == 1
    ticket = stored(parts, number)
    assert (ticket.rating, ticket.rating_source, ticket.pending_rating) == (4, "email_link", None)
    assert ticket.rated_at is not None


def test_another_star_opened_within_two_minutes_cancels_the_provisional_rating(parts, client):
    # A scanner that opens the links one after another, a minute apart: the first page's POST
    # is provisional, the second star's opening cancels it and asks for a click; nothing stands.
    number, contact_id = open_ticket(parts)
    first = f"/rate/{token(parts, number, contact_id, 1)}"
    post_form(client, first, client.get(first), stars="1")
    assert stored(parts, number).pending_rating == 1
    second = client.get(f"/rate/{token(parts, number, contact_id, 2)}")
    assert "Confirmar mi valoración" in second.text and "data-send-itself" not in second.text
    assert stored(parts, number).pending_rating is None
    assert promoted(parts, minutes=10) == 0 and stored(parts, number).rating is None


def test_a_link_opened_right_after_the_mail_asks_for_a_click(parts, client):
    # Within HELPDESK_RATING_CONFIRM_MINUTES of the mail a scanner is the likely visitor: the
    # page does not send itself, its POST records nothing, a person's click does.
    number, contact_id = open_ticket(parts)
    path = f"/rate/{token(parts, number, contact_id, 3, age=0)}"
    page = client.get(path)
    assert "acaba de enviarse" in page.text and "data-send-itself" not in page.text
    scripted = post_form(client, path, page, stars="3")
    assert "Confirmar mi valoración" in scripted.text
    assert stored(parts, number).pending_rating is None
    assert promoted(parts, minutes=10) == 0 and stored(parts, number).rating is None
    confirmed = post_form(client, path, page, stars="3", confirm="1")
    assert "Hemos registrado tu valoración" in confirmed.text
    assert stored(parts, number).rating == 3


def test_post_without_the_csrf_token_records_nothing(parts, client):
    # A POST that did not come from our page is refused and the person asked to press the button.
    number, contact_id = open_ticket(parts)
    path = f"/rate/{token(parts, number, contact_id, 2)}"
    refused = client.post(path, data={"stars": "2"})
    assert refused.status_code == 400 and "Pulsa el botón" in refused.text
    assert stored(parts, number).rating is None


def test_tampered_star_link_gets_a_clear_page_and_records_nothing(parts, client):
    # A changed token shows "not valid" in the visitor's language (400), never an error.
    number, contact_id = open_ticket(parts)
    good = token(parts, number, contact_id, 5)
    tampered = good[:-3] + ("AAA" if not good.endswith("AAA") else "BBB")
    page = client.get(f"/rate/{tampered}")
    assert page.status_code == 400 and "Este enlace de valoración no es válido" in page.text
    english = client.get("/rate/garbage", headers={"Accept-Language": "en-GB,en;q=0.8"})
    assert english.status_code == 400 and "This rating link is not valid" in english.text
    assert client.post(f"/rate/{tampered}", data={"stars": "5"}).status_code == 400
    assert stored(parts, number).rating is None


def test_expired_star_link_gets_a_clear_page(parts, client, settings):
    # A link signed 31 days ago (valid for 30) shows "expired" (410) and records nothing.
    number, contact_id = open_ticket(parts)

    class SignedLongAgo(TimestampSigner):
        def get_timestamp(self) -> int:
            return int(time.time()) - 31 * 24 * 3600

    old = URLSafeTimedSerializer(str(settings.secret_key), salt=RATING_SALT, signer=SignedLongAgo,
                                 signer_kwargs={"digest_method": hashlib.sha256})
    path = f"/rate/{old.dumps([number, contact_id, 3])}"
    page = client.get(path)
    assert page.status_code == 410 and "ha caducado" in page.text
    assert client.post(path, data={"stars": "3"}).status_code == 410
    assert stored(parts, number).rating is None


def test_rating_and_comment_can_be_changed_before_it_is_final(parts, client):
    # After 2 stars, the thank-you page's form changes them to 4 and adds a comment.
    number, contact_id = open_ticket(parts)
    path = f"/rate/{token(parts, number, contact_id, 2)}"
    thanks = post_form(client, path, client.get(path), stars="2")
    promoted(parts)  # the provisional 2 stars stand
    first = stored(parts, number).rated_at
    assert first is not None
    changed = post_form(client, path, thanks, stars="4", comment="Rápidos y amables.",
                        confirm="1")
    assert changed.status_code == 200 and "Rápidos y amables." in changed.text
    ticket = stored(parts, number)
    assert (ticket.rating, ticket.rating_comment) == (4, "Rápidos y amables.")
    assert ticket.rated_at == first  # the moment of the first rating, which makes it final


def test_replayed_star_link_after_the_rating_is_final_changes_nothing(parts, client):
    # 15 days after the first rating, opening or posting another star keeps the rating.
    number, contact_id = open_ticket(parts)
    path = f"/rate/{token(parts, number, contact_id, 5)}"
    opened = client.get(path)
    post_form(client, path, opened, stars="5", confirm="1")
    make_old(parts, number, rated_at=timedelta(days=15))
    other = f"/rate/{token(parts, number, contact_id, 1)}"
    page = client.get(other)
    assert "definitiva" in page.text and 'id="rate-form"' not in page.text
    replay = post_form(client, path, opened, stars="1", confirm="1")
    assert "definitiva" in replay.text
    assert stored(parts, number).rating == 5


def test_closing_the_ticket_makes_the_rating_final(parts, client):
    # Once the ticket is closed, a rating already given cannot change.
    number, contact_id = open_ticket(parts)
    path = f"/rate/{token(parts, number, contact_id, 3)}"
    opened = client.get(path)
    post_form(client, path, opened, stars="3", confirm="1")
    with transaction(parts.engine) as session:
        ticket = ticket_by_number(session, number)
        assert ticket is not None
        parts.workflow.change_status(session, ticket, "closed", "Ana (soporte)")
    again = f"/rate/{token(parts, number, contact_id, 1)}"
    assert "definitiva" in post_form(client, again, opened, stars="1", confirm="1").text
    assert stored(parts, number).rating == 3


def test_star_link_for_another_organizations_ticket_is_refused(parts, client):
    # A link naming a contact of another organization gets "not valid" (404), no rating.
    number, _ = open_ticket(parts)
    with Session(parts.engine) as session:
        lucia = contact_by_email(session, LUCIA)
        assert lucia is not None and lucia.id is not None
    page = client.get(f"/rate/{token(parts, number, lucia.id, 5)}")
    assert page.status_code == 404 and "No corresponde a ningún ticket" in page.text
    assert stored(parts, number).rating is None


def test_star_link_for_a_ticket_that_is_not_resolved_is_refused(parts, client):
    # An open (or reopened) ticket cannot be rated through a link (409), nothing recorded.
    number, contact_id = open_ticket(parts, resolve=False)
    path = f"/rate/{token(parts, number, contact_id, 5)}"
    page = client.get(path)
    assert page.status_code == 409 and "no se puede valorar" in page.text
    assert client.post(path, data={"stars": "5"}).status_code == 409
    assert stored(parts, number).rating is None


def test_burst_of_different_stars_records_nothing_until_a_person_confirms(parts, client):
    # Stars 1, 3 and 5 opened within seconds: no auto-POST, the automatic POST records nothing,
    # and the confirm button's POST records the 5 stars.
    number, contact_id = open_ticket(parts)
    pages = [client.get(f"/rate/{token(parts, number, contact_id, n)}") for n in (1, 3, 5)]
    last = pages[-1]
    assert "Confirmar mi valoración" in last.text and "data-send-itself" not in last.text
    path = f"/rate/{token(parts, number, contact_id, 5)}"
    scripted = post_form(client, path, last, stars="5")  # what a script-running scanner sends
    assert "Confirmar mi valoración" in scripted.text
    assert stored(parts, number).rating is None
    confirmed = post_form(client, path, last, stars="5", confirm="1")
    assert "Hemos registrado tu valoración" in confirmed.text
    assert stored(parts, number).rating == 5


# --------------------------------------------------------------------------- the ticket page


def log_in(client, email: str = MARIA) -> None:
    page = client.get("/login")
    response = post_form(client, "/login", page, email=email, password=PASSWORD)
    assert response.status_code in (200, 303)


def test_ticket_page_rate_form_records_a_web_rating(parts, client):
    # A contact of the organization rates a resolved ticket from its page: source "web".
    number, _ = open_ticket(parts)
    log_in(client)
    page = client.get(f"/tickets/{number}")
    assert "Valorar el ticket" in page.text
    post_form(client, f"/tickets/{number}/rating", page, stars="4", comment="Todo bien.")
    ticket = stored(parts, number)
    assert (ticket.rating, ticket.rating_source, ticket.rating_comment) == (4, "web", "Todo bien.")
    assert "Muy bien" in client.get(f"/tickets/{number}").text


def test_ticket_page_rating_of_another_organization_is_refused(parts, client):
    # Lucía (another organization) cannot rate María's ticket: 404, nothing recorded.
    number, _ = open_ticket(parts)
    log_in(client, LUCIA)
    page = client.get("/tickets")
    refused = post_form(client, f"/tickets/{number}/rating", page, stars="1")
    assert refused.status_code == 404
    assert stored(parts, number).rating is None


# --------------------------------------------------------------------------- real browser


@pytest.mark.browser
def test_opening_a_star_link_in_the_browser_records_the_rating(gateway, browser):
    # One click in the mail: the page posts itself and thanks the customer; 4 stars recorded.
    parts = gateway.service.parts
    number, contact_id = open_ticket(parts)
    context = browser.new_context(locale="es-ES")
    page = context.new_page()
    page.goto(f"{gateway.web_url}/rate/{token(parts, number, contact_id, 4)}")
    page.get_by_text("¡Gracias! Hemos registrado tu valoración.").wait_for()
    assert wait_for(lambda: stored(parts, number).pending_rating == 4)
    assert promoted(parts) == 1  # two minutes later, no other star opened: it stands
    assert (stored(parts, number).rating, stored(parts, number).rating_source) == \
        (4, "email_link")
    page.get_by_label("Comentario (opcional)").fill("Muy rápidos.")
    page.get_by_role("button", name="Guardar").click()
    assert page.locator("p.comment").inner_text() == "Muy rápidos."
    assert stored(parts, number).rating_comment == "Muy rápidos."
    context.close()


@pytest.mark.browser
def test_scanner_burst_then_a_person_confirms_in_the_browser(gateway, browser):
    # A scanner fetched stars 1 and 2; the person opening 5 sees a confirm button and nothing
    # is recorded until they press it.
    parts = gateway.service.parts
    number, contact_id = open_ticket(parts)
    for stars in (1, 2):
        httpx.get(f"{gateway.web_url}/rate/{token(parts, number, contact_id, stars)}")
    context = browser.new_context(locale="es-ES")
    page = context.new_page()
    page.goto(f"{gateway.web_url}/rate/{token(parts, number, contact_id, 5)}")
    button = page.get_by_role("button", name="Confirmar mi valoración")
    assert button.is_visible()
    assert stored(parts, number).rating is None
    button.click()
    page.get_by_text("¡Gracias! Hemos registrado tu valoración.").wait_for()
    assert stored(parts, number).rating == 5
    context.close()


# --------------------------------------------------------------------------- link scanners


def test_openings_a_minute_apart_leave_no_rating(parts):
    # The rule itself, with the clock in hand: a scanner opening 1, 2, 3, 4, 5 a minute apart,
    # each page posting itself when it is not a burst, leaves nothing provisional and no rating.
    number, _ = open_ticket(parts)
    start = utcnow()
    for n, stars in enumerate((1, 2, 3, 4, 5)):
        now = start + timedelta(seconds=60 * n)
        with transaction(parts.engine) as session:
            ticket = ticket_by_number(session, number)
            if not opened(session, ticket, stars, now) and not is_burst(session, ticket, now):
                propose(ticket, stars, now + timedelta(seconds=1))
                session.add(ticket)
        promote_pending(parts.engine, parts.workflow, now + timedelta(seconds=30))
    ticket = stored(parts, number)
    assert (ticket.rating, ticket.pending_rating) == (None, None)
    assert promote_pending(parts.engine, parts.workflow, start + timedelta(hours=1)) == 0


def scan(browser, urls: list[str], *, pause: float = 0.0, parallel: bool = False) -> None:
    """A mail security scanner: a browser that runs scripts and opens every link of a mail,
    one after another (``pause`` apart) or all at once, letting each page do what it does."""
    context = browser.new_context(locale="es-ES")
    try:
        if parallel:
            pages = [context.new_page() for _ in urls]
            for page, url in zip(pages, urls, strict=True):
                page.goto(url, wait_until="commit")
            for page in pages:
                page.wait_for_load_state("networkidle")
        else:
            page = context.new_page()
            for url in urls:
                page.goto(url)
                page.wait_for_load_state("networkidle")
                time.sleep(pause)
    finally:
        context.close()


@pytest.mark.browser
@pytest.mark.parametrize(("order", "pause"), [((1, 2, 3, 4, 5), 0.2), ((5, 4, 3, 2, 1), 1.0)])
def test_a_scanner_opening_every_star_link_leaves_no_rating(gateway, browser, order, pause):
    parts = gateway.service.parts
    number, contact_id = open_ticket(parts)
    scan(browser, [f"{gateway.web_url}/rate/{token(parts, number, contact_id, n)}"
                   for n in order], pause=pause)
    ticket = stored(parts, number)
    assert (ticket.rating, ticket.pending_rating) == (None, None)
    assert promoted(parts, minutes=10) == 0


@pytest.mark.browser
def test_a_scanner_opening_the_links_in_parallel_leaves_no_rating(gateway, browser):
    parts = gateway.service.parts
    number, contact_id = open_ticket(parts)
    scan(browser, [f"{gateway.web_url}/rate/{token(parts, number, contact_id, n)}"
                   for n in (3, 1, 5, 2, 4)], parallel=True)
    ticket = stored(parts, number)
    assert (ticket.rating, ticket.pending_rating) == (None, None)
    assert promoted(parts, minutes=10) == 0


@pytest.mark.browser
def test_a_scanner_opening_one_link_of_a_mail_just_sent_leaves_no_rating(gateway, browser):
    # A link made just now (the "resolved" mail has just gone out), opened by a scanner at once.
    parts = gateway.service.parts
    number, contact_id = open_ticket(parts)
    scan(browser, [f"{gateway.web_url}/rate/{token(parts, number, contact_id, 5, age=0)}"])
    ticket = stored(parts, number)
    assert (ticket.rating, ticket.pending_rating) == (None, None)
    assert promoted(parts, minutes=10) == 0
