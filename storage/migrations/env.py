"""Alembic environment: migrates the database named by the caller or by HELPDESK_DATABASE_URL."""

from alembic import context
from sqlmodel import SQLModel

import storage.models  # noqa: F401  (registers the tables on SQLModel.metadata)
from gateway.settings import Settings
from storage.db import make_engine

config = context.config


def run_migrations() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = config.attributes.get("url") or Settings.from_env().database_url
    engine = make_engine(url)
    with engine.connect() as conn:
        if conn.dialect.name == "sqlite":
            _run_without_foreign_keys(conn)
        else:
            _run(conn)
    engine.dispose()


def _run_without_foreign_keys(conn) -> None:  # type: ignore[no-untyped-def]
    """SQLite changes a table by copying it into a new one and dropping the old (batch mode),
    which foreign keys of other tables' rows would refuse: they are checked once at the end
    instead, as SQLite's manual prescribes for such changes (ALTER TABLE, section 7). The
    pragma only takes effect outside a transaction, hence on the driver's connection."""
    raw = conn.connection.dbapi_connection
    raw.execute("PRAGMA foreign_keys=OFF")
    try:
        _run(conn)
        broken = raw.execute("PRAGMA foreign_key_check").fetchall()
        if broken:
            raise RuntimeError(f"the migration left rows whose foreign keys point nowhere: "
                               f"{broken[:5]}")
    finally:
        raw.execute("PRAGMA foreign_keys=ON")


def _run(connection) -> None:  # type: ignore[no-untyped-def]
    context.configure(
        connection=connection,
        target_metadata=SQLModel.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()


run_migrations()
