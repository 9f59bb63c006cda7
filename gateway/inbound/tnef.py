"""winmail.dat (TNEF, Outlook's "rich text" wrapping) → the files inside it. Pure.

Outlook in rich-text mode, and Exchange for some recipients, wrap every attachment in one
``application/ms-tnef`` part that no other mail client opens (MS-OXTNEF). Each file inside is
what the customer sent, so each is judged like any attachment; a winmail.dat that cannot be
unpacked is judged as it is.
"""

from __future__ import annotations

import logging

from tnefparse import TNEF

log = logging.getLogger("gateway.parse")

TYPES = frozenset({"application/ms-tnef", "application/vnd.ms-tnef"})


def unpack(payload: bytes) -> list[tuple[str, bytes]] | None:
    """(filename, bytes) of each file in a TNEF stream, or None when it is not one or is
    damaged. The checksums are checked: a damaged stream is kept whole, not half-read."""
    try:
        found = TNEF(payload, do_checksum=True)
        return [(_name(item.long_filename()), bytes(item.data or b""))
                for item in found.attachments]
    except Exception as exc:  # tnefparse raises bare ValueError, struct.error, IndexError...
        log.info("winmail.dat not unpacked (%d bytes): %s", len(payload), exc)
        return None


def _name(value: str | bytes | None) -> str:
    if isinstance(value, bytes):
        value = value.decode("cp1252", "replace")
    return (value or "").rstrip("\x00").strip()
