"""a version number per organization that every change to one of its tickets raises (a trigger),
so that the customer area can keep a rendered ticket list until the tickets change

Only changes to what a list shows or selects by count (LISTED): a rating reminder's time, say,
changes no list.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30

SQLite copies a table to change it (batch mode) and the copy has no triggers: a later migration
that alters ``ticket`` on SQLite must create these triggers again (tests/test_ticket_version.py
fails if one is missing).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# What web/templates/_ticket_list.html shows, and what storage.tickets.ticket_page selects by.
LISTED = "number, organization_id, subject, status, rating, created_at, updated_at"
BUMP = "UPDATE organization SET ticket_version = ticket_version + 1 WHERE id = {row}.organization_id"

SQLITE_TRIGGERS = {
    "ticket_version_insert": f"AFTER INSERT ON ticket BEGIN {BUMP.format(row='NEW')}; END",
    "ticket_version_update": (f"AFTER UPDATE OF {LISTED} ON ticket BEGIN "
                              f"{BUMP.format(row='NEW')}; {BUMP.format(row='OLD')} "
                              f"AND OLD.organization_id != NEW.organization_id; END"),
    "ticket_version_delete": f"AFTER DELETE ON ticket BEGIN {BUMP.format(row='OLD')}; END",
}

POSTGRESQL_FUNCTION = f"""
CREATE FUNCTION bump_ticket_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'INSERT' THEN
        {BUMP.format(row='OLD')};
    END IF;
    IF TG_OP = 'INSERT' OR (TG_OP = 'UPDATE'
                            AND NEW.organization_id IS DISTINCT FROM OLD.organization_id) THEN
        {BUMP.format(row='NEW')};
    END IF;
    RETURN NULL;
END
$$
"""


def upgrade() -> None:
    with op.batch_alter_table("organization", schema=None) as batch_op:
        batch_op.add_column(sa.Column("ticket_version", sa.BigInteger(), nullable=False,
                                      server_default="0"))
    if op.get_bind().dialect.name == "sqlite":
        for name, body in SQLITE_TRIGGERS.items():
            op.execute(f"CREATE TRIGGER {name} {body}")
    else:
        op.execute(POSTGRESQL_FUNCTION)
        op.execute(f"CREATE TRIGGER ticket_version AFTER INSERT OR UPDATE OF {LISTED} OR DELETE "
                   f"ON ticket FOR EACH ROW EXECUTE FUNCTION bump_ticket_version()")


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for name in SQLITE_TRIGGERS:
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
    else:
        op.execute("DROP TRIGGER ticket_version ON ticket")
        op.execute("DROP FUNCTION bump_ticket_version()")
    with op.batch_alter_table("organization", schema=None) as batch_op:
        batch_op.drop_column("ticket_version")
