"""Fresh databases for one trial: a SQLite file in a temporary directory, or a new PostgreSQL
schema in database ``test`` (as tests/conftest.py does), dropped afterwards whatever happened."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg

PG_URL = os.environ.get("HELPDESK_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")


@contextmanager
def fresh_database(kind: str, workdir: Path, pg_url: str = PG_URL) -> Iterator[str]:
    """Yield the SQLAlchemy URL of an empty database of ``kind`` (sqlite / postgresql)."""
    if kind == "sqlite":
        yield f"sqlite:///{workdir / 'helpdesk.db'}"
        return
    if kind != "postgresql":
        raise ValueError(f"unknown database kind {kind!r}")
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_url, autocommit=True, connect_timeout=5) as admin:
        admin.execute(f'CREATE SCHEMA "{schema}"')
        try:
            yield f"{pg_url}?options=-csearch_path%3D{schema}"
        finally:
            admin.execute(f'DROP SCHEMA "{schema}" CASCADE')


def postgresql_version(pg_url: str = PG_URL) -> str | None:
    try:
        with psycopg.connect(pg_url, connect_timeout=5) as conn:
            row = conn.execute("SHOW server_version").fetchone()
            return str(row[0]) if row else None
    except psycopg.OperationalError:
        return None
