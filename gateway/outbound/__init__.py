"""Mail we send: templates rendered to bytes, and the outbox sender that delivers them."""
