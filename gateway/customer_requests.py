"""What a customer asks for in the web area: a new ticket ("Abrir ticket"), or an answer on one.

Neither is a second way of making tickets: both go through ``gateway.workflow`` as a mail does
(the same numbering, the "received" mail, the status history, an answer putting an
awaiting-customer ticket back to work), and their files are checked as a mail's are
(``gateway.uploads``). The message is kept on the ticket like a mail's, with channel "web".
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlmodel import Session

from gateway.inbound.prepare import PreparedFile
from gateway.workflow import RefusedFile, Workflow
from storage.models import Application, Contact, Message, Ticket, utcnow
from storage.tickets import add_files

SUBJECT_LENGTH = 120


def subject_from(description: str) -> str:
    """The form has no subject field (the customer guide's): the first line of the description,
    cut at a word if it is long."""
    first = next((line for line in description.splitlines() if line.strip()), "")
    first = " ".join(first.split())
    if len(first) <= SUBJECT_LENGTH:
        return first or "(sin asunto)"
    cut = first[:SUBJECT_LENGTH].rsplit(" ", 1)[0]
    return (cut if len(cut) > SUBJECT_LENGTH // 2 else first[:SUBJECT_LENGTH]) + "…"


def open_ticket(session: Session, workflow: Workflow, *, submitter: Contact, requester: Contact,
                application: Application, description: str,
                files: Sequence[PreparedFile]) -> Ticket:
    """A ticket from the open-ticket form. ``requester`` is the contact chosen in the form (the
    submitter, a colleague, or a person just added); a person a non-manager added is pending,
    and the ticket is held until a manager verifies them, as an unknown sender's mail is."""
    subject = subject_from(description)
    if requester.state == "pending":
        ticket = workflow.hold_for_verification(
            session, sender=requester, subject=subject, channel="web", excerpt=description,
            requested_by=submitter)
        ticket.application_id = application.id
    else:
        refused = [RefusedFile(f.filename, f.reason or "") for f in files if not f.accepted]
        ticket = workflow.open_ticket(session, requester=requester, subject=subject,
                                      channel="web", refused=refused,
                                      application_id=application.id)
    # Written before the "received" mail the workflow queued, so the thread keeps its order.
    _keep(session, ticket, submitter, subject, description, files, at=ticket.created_at)
    return ticket


def answer(session: Session, workflow: Workflow, *, ticket: Ticket, author: Contact, text: str,
           files: Sequence[PreparedFile]) -> Message:
    """A customer's answer from the ticket page: like a mail reply, it puts a ticket that was
    waiting for the customer (or just resolved) back to work."""
    workflow.customer_replied(session, ticket, author)
    subject = ticket.subject if ticket.subject.lower().startswith("re:") \
        else f"Re: {ticket.subject}"
    message = _keep(session, ticket, author, subject, text, files, at=utcnow())
    workflow.message_received(session, ticket, message)
    return message


def _keep(session: Session, ticket: Ticket, author: Contact, subject: str, text: str,
          files: Sequence[PreparedFile], *, at: datetime) -> Message:
    assert ticket.id is not None
    message = Message(ticket_id=ticket.id, direction="in", channel="web",
                      author_contact_id=author.id, from_address=author.email,
                      subject=subject[:500], text=text, new_text=text, created_at=at)
    session.add(message)
    session.flush()
    add_files(session, message, files)
    return message
