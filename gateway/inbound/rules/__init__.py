"""Decisions about an inbound mail, one per module; ``gateway.inbound.ingest`` walks them in order.

Each rule is pure: it reads a ``ParsedMail`` (and the few facts ingest looked up for it) and
returns a reason string when it applies, else None.
"""
