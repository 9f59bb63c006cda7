"""Which ticket a mail may belong to: the clues, in the design's order of trust. Pure.

1. a signed reply address among the recipients (we put it in Reply-To of every mail we send);
2. In-Reply-To / References naming a Message-ID we sent or received for a ticket;
3. a ``[#NUMBER]`` tag in the subject.
This module only reads the clues; ``gateway.inbound.ingest`` looks them up and enforces that a
mail is never attached to a ticket of another organization.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from gateway.inbound.parse import ParsedMail
from gateway.links import ReplyAddresses

SUBJECT_TAG = re.compile(r"\[#(\d{1,9})\]")


@dataclass(frozen=True)
class Clues:
    token_ticket: int | None
    referenced_ids: tuple[str, ...]
    subject_ticket: int | None


def clues(mail: ParsedMail, recipients: Iterable[str], reply: ReplyAddresses) -> Clues:
    token_ticket = None
    for address in (*recipients, *mail.to, *_cc(mail)):
        token_ticket = reply.ticket_number(address)
        if token_ticket is not None:
            break
    # Newest first: the direct parent, then the rest of References from the end.
    referenced = tuple(dict.fromkeys((*mail.in_reply_to, *reversed(mail.references))))
    tag = SUBJECT_TAG.search(mail.subject)
    return Clues(token_ticket, referenced, int(tag.group(1)) if tag else None)


def _cc(mail: ParsedMail) -> list[str]:
    return [part.strip().lower() for part in mail.headers.get("cc", "").split(",") if "@" in part]
