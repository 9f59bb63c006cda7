"""Persistence only: models, engine and sessions, blob store, queries, migrations."""
