"""From a queued mail to its outcome: parse, check attachments, apply the rules, correlate with a
ticket, store."""
