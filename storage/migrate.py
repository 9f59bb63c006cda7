"""Schema migrations with Alembic, run from code (``helpdesk db upgrade``, tests, ``make run``)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import create_engine, inspect, text

from storage.db import normalize_url

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
# A migration's file is named after its revision: 0001_initial_schema.py is revision "0001",
# each one revising the one before (tests.test_migrations checks it against Alembic's view).
_REVISION_FILE = re.compile(r"^(\d{4})_\w+\.py$")


def alembic_config(url: str) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["url"] = url
    return config


def upgrade(url: str, revision: str = "head") -> None:
    """Migrate the database to ``revision``. Alembic (a quarter of a second to import) only
    when there is something to do: every command upgrades first, and mostly finds nothing."""
    if revision == "head" and current_revision(url) == head_revision():
        return
    from alembic import command

    command.upgrade(alembic_config(url), revision)


def head_revision() -> str:
    """The newest migration's revision, from the files' names."""
    return max(match[1] for path in (MIGRATIONS / "versions").iterdir()
               if (match := _REVISION_FILE.match(path.name)))


def current_revision(url: str) -> str | None:
    """The revision the database is at; None before the first migration."""
    engine = create_engine(normalize_url(url))
    try:
        with engine.connect() as connection:
            if not inspect(connection).has_table("alembic_version"):
                return None
            return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
    finally:
        engine.dispose()
