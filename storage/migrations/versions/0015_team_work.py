"""the team's work on tickets: priority, assignee, a row version for If-Match, internal notes,
a record of every agent's action, and the answers kept for Idempotency-Key

Revision ID: 0015
Revises: 0014
Create Date: 2026-11-30

The new columns are added in place (SQLite: ``ALTER TABLE ... ADD COLUMN ... REFERENCES``), not
by copying the tables, so the triggers of 0010 stay. ``ticket.version`` is raised by a trigger
on every update of the row, whoever makes it.
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# WHEN: the trigger's own update leaves the version moved, so it never runs for itself.
SQLITE_VERSION_TRIGGER = """
CREATE TRIGGER ticket_row_version AFTER UPDATE ON ticket FOR EACH ROW
WHEN NEW.version = OLD.version
BEGIN
    UPDATE ticket SET version = OLD.version + 1 WHERE id = NEW.id;
END
"""
POSTGRESQL_VERSION_FUNCTION = """
CREATE FUNCTION raise_ticket_row_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.version := OLD.version + 1;
    RETURN NEW;
END
$$
"""


def _add_reference(table: str, column: str, target: str) -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute(f"ALTER TABLE {table} ADD COLUMN {column} INTEGER REFERENCES {target} (id)")
    else:
        op.add_column(table, sa.Column(column, sa.Integer(), nullable=True))
        op.create_foreign_key(None, table, target, [column], ["id"])


def upgrade() -> None:
    op.add_column("ticket", sa.Column("priority", sqlmodel.sql.sqltypes.AutoString(length=8),
                                      nullable=False, server_default="normal"))
    op.add_column("ticket", sa.Column("version", sa.Integer(), nullable=False,
                                      server_default="1"))
    _add_reference("ticket", "assignee_id", "agent")
    op.create_index(op.f("ix_ticket_priority"), "ticket", ["priority"], unique=False)
    op.create_index(op.f("ix_ticket_assignee_id"), "ticket", ["assignee_id"], unique=False)
    op.add_column("message", sa.Column("internal", sa.Boolean(), nullable=False,
                                       server_default=sa.false()))
    _add_reference("message", "author_agent_id", "agent")
    if op.get_bind().dialect.name == "sqlite":
        op.execute(SQLITE_VERSION_TRIGGER)
    else:
        op.execute(POSTGRESQL_VERSION_FUNCTION)
        op.execute("CREATE TRIGGER ticket_row_version BEFORE UPDATE ON ticket FOR EACH ROW "
                   "EXECUTE FUNCTION raise_ticket_row_version()")

    op.create_table(
        "team_action",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("ticket_id", sa.Integer(), nullable=True),
        sa.Column("agent_id", sa.Integer(), nullable=False),
        sa.Column("token_id", sa.Integer(), nullable=True),
        sa.Column("action", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["agent_id"], ["agent.id"]),
        sa.ForeignKeyConstraint(["ticket_id"], ["ticket.id"]),
        sa.ForeignKeyConstraint(["token_id"], ["api_token.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_team_action_ticket_id"), "team_action", ["ticket_id"])
    op.create_index(op.f("ix_team_action_agent_id"), "team_action", ["agent_id"])
    op.create_table(
        "idempotent_request",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("agent_id", sa.Integer(), nullable=False),
        sa.Column("key", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("fingerprint", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=False),
        sa.Column("headers", sa.Text(), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=True),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["agent_id"], ["agent.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("agent_id", "key"),
    )
    op.create_index(op.f("ix_idempotent_request_created_at"), "idempotent_request",
                    ["created_at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_idempotent_request_created_at"), table_name="idempotent_request")
    op.drop_table("idempotent_request")
    op.drop_index(op.f("ix_team_action_agent_id"), table_name="team_action")
    op.drop_index(op.f("ix_team_action_ticket_id"), table_name="team_action")
    op.drop_table("team_action")
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TRIGGER IF EXISTS ticket_row_version")
        # Dropped in place (SQLite 3.35+), not by copying the tables: the triggers of 0010 stay.
        for table, column in (("message", "author_agent_id"), ("message", "internal"),
                              ("ticket", "assignee_id"), ("ticket", "version"),
                              ("ticket", "priority")):
            if column in ("assignee_id", "priority"):
                op.execute(f"DROP INDEX IF EXISTS ix_ticket_{column}")
            op.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
        return
    op.execute("DROP TRIGGER IF EXISTS ticket_row_version ON ticket")
    op.execute("DROP FUNCTION IF EXISTS raise_ticket_row_version()")
    op.drop_column("message", "author_agent_id")
    op.drop_column("message", "internal")
    op.drop_index(op.f("ix_ticket_assignee_id"), table_name="ticket")
    op.drop_index(op.f("ix_ticket_priority"), table_name="ticket")
    op.drop_column("ticket", "assignee_id")
    op.drop_column("ticket", "version")
    op.drop_column("ticket", "priority")
