"""Where mail comes in: the SMTP listener and the IMAP mailboxes; each stores a mail durably,
queues it, and only then acknowledges it."""
