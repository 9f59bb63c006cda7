"""Where each IMAP mailbox's poller is: the last UID handled under the mailbox's UIDVALIDITY."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.engine import Engine

from storage.db import transaction
from storage.models import ImapMailboxState, utcnow


@dataclass(frozen=True)
class Position:
    """UIDs are only meaningful under the UIDVALIDITY they were read with (RFC 3501 §2.3.1.1)."""

    uidvalidity: int
    last_uid: int


def load(engine: Engine, mailbox: str) -> Position | None:
    with transaction(engine, write=False) as session:
        row = session.get(ImapMailboxState, mailbox[:255])
        return Position(row.uidvalidity, row.last_uid) if row is not None else None


def save(engine: Engine, mailbox: str, position: Position) -> None:
    with transaction(engine) as session:
        row = session.get(ImapMailboxState, mailbox[:255])
        if row is None:
            row = ImapMailboxState(mailbox=mailbox[:255], uidvalidity=position.uidvalidity)
        row.uidvalidity = position.uidvalidity
        row.last_uid = position.last_uid
        row.updated_at = utcnow()
        session.add(row)
