"""Mail in and out: the SMTP and IMAP channels, ingestion, workflow, rendering and sending."""
