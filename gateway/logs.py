"""Logging of every gateway process: plain lines, or one JSON object a line
(HELPDESK_LOG_FORMAT=json) for a log collector, with the ticket number and the Message-ID as
fields of their own where a line is about one (``extra={"ticket": ..., "message_id": ...}``)."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
FIELDS = ("ticket", "message_id", "inbound_id", "notification_id")


class JsonLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "process": record.process,
            "message": record.getMessage(),
        }
        for name in FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def configure(level: int, log_format: str = "text", gateway_level: int | None = None) -> None:
    """The root logger at ``level`` (and the gateway's own loggers at ``gateway_level``)."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonLines() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    if gateway_level is not None:
        logging.getLogger("gateway").setLevel(gateway_level)
