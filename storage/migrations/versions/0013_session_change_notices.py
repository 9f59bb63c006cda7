"""PostgreSQL tells the web processes when a session, a contact or an organization changes, so
that they can keep who is signed in between changes (web.known_sessions)

A notification on the ``helpdesk_web`` channel (storage.sessions.CHANGES_CHANNEL) at commit, for
each row updated or deleted: ``s:<session key>``, ``c:<contact id>``, ``o:<organization id>``
(an organization changes whenever one of its tickets does: its ticket version, 0010).
PostgreSQL sends a payload once per transaction however many rows repeat it. SQLite has no
notifications: nothing to do there.

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-30
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CHANNEL = "helpdesk_web"
TABLES = {"web_session": "s", "contact": "c", "organization": "o"}

FUNCTION = f"""
CREATE FUNCTION notify_web_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('{CHANNEL}', TG_ARGV[0] || ':' || OLD.id);
    RETURN NULL;
END
$$
"""


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(FUNCTION)
    for table, kind in TABLES.items():
        op.execute(f"CREATE TRIGGER {table}_changed AFTER UPDATE OR DELETE ON {table} "
                   f"FOR EACH ROW EXECUTE FUNCTION notify_web_change('{kind}')")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in TABLES:
        op.execute(f"DROP TRIGGER IF EXISTS {table}_changed ON {table}")
    op.execute("DROP FUNCTION IF EXISTS notify_web_change()")
