"""The Alembic migrations build exactly the schema the models describe, on both databases, and
go down and up again."""

from __future__ import annotations

import hashlib
from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlmodel import SQLModel

from storage.db import make_engine
from storage.migrate import alembic_config, current_revision, head_revision, upgrade
from storage.models import utcnow


def test_migrated_schema_matches_the_models(engine):
    # Every table, column, index and constraint of storage/models.py, and nothing else.
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        differences = compare_metadata(context, SQLModel.metadata)
    assert differences == []


def test_the_quick_look_at_the_revision_agrees_with_alembic(db_url):
    # upgrade() skips Alembic when the database is at the newest file's revision: that file is
    # Alembic's one head, and every file is named after its revision.
    scripts = ScriptDirectory.from_config(alembic_config(db_url))
    assert scripts.get_heads() == [head_revision()]
    for script in scripts.walk_revisions():
        assert Path(script.path).name.startswith(f"{script.revision}_"), script.path
    assert current_revision(db_url) is None  # an empty database
    upgrade(db_url, "0019")
    assert current_revision(db_url) == "0019"
    upgrade(db_url)  # not at the head: Alembic migrates
    assert current_revision(db_url) == head_revision()
    upgrade(db_url)  # at the head: nothing to do
    assert current_revision(db_url) == head_revision()


def test_claims_are_made_for_the_mails_processed_before_0008(db_url):
    # A database at 0007 with three processed mails (the second a copy of the first, the third
    # with its own bytes but the first's Message-ID): the upgrade claims the first mail's bytes
    # and Message-ID for it and the third's bytes for the third, so a later copy of any of them
    # is a duplicate; down to 0007 and up again works.
    upgrade(db_url, "0007")
    engine = make_engine(db_url)
    try:
        with engine.begin() as connection:
            for n, (sha, mid, outcome) in enumerate([("a" * 64, "<m1@x>", "created"),
                                                     ("a" * 64, "<m1@x>", "duplicate"),
                                                     ("b" * 64, "<m1@x>", "created")], start=1):
                connection.execute(text(
                    "INSERT INTO inbound_message (id, channel, source, mail_from, rcpt_to, "
                    "raw_key, raw_sha256, size, state, attempts, outcome, header_message_id, "
                    "received_at) VALUES (:id, 'smtp', '', '', '', :sha, :sha, 1, 'done', 1, "
                    ":outcome, :mid, :now)"),
                    {"id": n, "sha": sha, "mid": mid, "outcome": outcome, "now": utcnow()})
        upgrade(db_url)
        with engine.connect() as connection:
            rows = connection.execute(text("SELECT key, inbound_id FROM inbound_claim"))
            claims = {key: inbound_id for key, inbound_id in rows}
        mid = "mid:" + hashlib.sha256(b"<m1@x>").hexdigest()
        assert claims == {f"raw:{'a' * 64}": 1, mid: 1, f"raw:{'b' * 64}": 3}
        command.downgrade(alembic_config(db_url), "0007")
        upgrade(db_url)
    finally:
        engine.dispose()
