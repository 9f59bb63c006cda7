"""Is this mail a delivery status notification (a bounce) of a mail we sent? RFC 3464.

Bounces create no ticket; ingest marks the notification they answer as bounced (a delay
warning only says the mail is late, so it marks nothing).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from gateway.inbound.parse import ParsedMail

_DAEMON = re.compile(r"^(mailer-daemon|postmaster|mail-daemon|mailerdaemon)@", re.IGNORECASE)


@dataclass(frozen=True)
class Bounce:
    reason: str
    permanent: bool
    message_ids: tuple[str, ...]


def check(mail: ParsedMail, envelope_sender: str | None) -> Bounce | None:
    report = mail.delivery_report
    null_sender = envelope_sender is not None and envelope_sender.strip() in {"", "<>"}
    from_daemon = bool(_DAEMON.match(mail.from_address))
    if report is None and not (null_sender and from_daemon):
        return None
    ids = tuple(dict.fromkeys((*(report.original_message_ids if report else ()),
                               *mail.in_reply_to, *mail.references)))
    if report is not None:
        permanent = report.action in {"failed", ""}
        reason = f"{report.action or 'failed'} {report.status}".strip()
        if report.diagnostic:
            reason += f": {report.diagnostic}"
        return Bounce(reason[:500], permanent, ids)
    return Bounce("bounce from mailer daemon", True, ids)
