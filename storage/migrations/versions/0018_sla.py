"""SLA: calendars, plans, each ticket's clocks as last worked out and the warnings given; a
default calendar
(Spain, Europe/Madrid, 9:00-14:00 and 15:30-18:30 on weekdays, 8:00-15:00 from 15 June to
15 September) and plan "standard", the one organizations name by default

Revision ID: 0018
Revises: 0017
Create Date: 2026-11-30
"""

import json
from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri")
HOURS = {day: [["09:00", "14:00"], ["15:30", "18:30"]] for day in WEEKDAYS}
SUMMER = [{"from": "06-15", "to": "09-15",
           "hours": {day: [["08:00", "15:00"]] for day in WEEKDAYS}}]
# Business minutes (a working day is 480): contractual first response and resolution by
# priority, and the two internal targets, stricter, the team works to.
TARGETS = {
    "first_response": {"urgent": 30, "high": 60, "normal": 240, "low": 480},
    "resolution": {"urgent": 480, "high": 960, "normal": 2400, "low": 4800},
    "qualify": {"urgent": 15, "high": 30, "normal": 60, "low": 120},
    "plan": {"urgent": 120, "high": 240, "normal": 480, "low": 960},
}


def upgrade() -> None:
    calendar = op.create_table(
        "sla_calendar",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("timezone", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("country", sqlmodel.sql.sqltypes.AutoString(length=8), nullable=True),
        sa.Column("subdivision", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=True),
        sa.Column("hours", sa.Text(), nullable=False),
        sa.Column("seasons", sa.Text(), nullable=False),
        sa.Column("extra_holidays", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    op.create_table(
        "sla_plan",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("calendar_id", sa.Integer(), nullable=False),
        sa.Column("default_priority", sqlmodel.sql.sqltypes.AutoString(length=8),
                  nullable=False),
        sa.Column("targets", sa.Text(), nullable=False),
        sa.Column("warn_at", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["calendar_id"], ["sla_calendar.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    op.create_table(
        "sla_clock",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("ticket_id", sa.Integer(), nullable=False),
        sa.Column("target", sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
        sa.Column("contractual", sa.Boolean(), nullable=False),
        sa.Column("minutes", sa.Integer(), nullable=False),
        sa.Column("due_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column("met_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column("state", sqlmodel.sql.sqltypes.AutoString(length=12), nullable=False),
        sa.Column("breached", sa.Boolean(), nullable=False),
        sa.Column("over_minutes", sa.Float(), nullable=False),
        sa.Column("used", sa.Float(), nullable=False),
        sa.Column("segments", sa.Text(), nullable=False),
        sa.Column("ticket_version", sa.Integer(), nullable=False),
        sa.Column("computed_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["ticket_id"], ["ticket.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("ticket_id", "target"),
    )
    op.create_index(op.f("ix_sla_clock_ticket_id"), "sla_clock", ["ticket_id"])
    op.create_table(
        "sla_warning",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("ticket_id", sa.Integer(), nullable=False),
        sa.Column("target", sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
        sa.Column("level", sqlmodel.sql.sqltypes.AutoString(length=12), nullable=False),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["ticket_id"], ["ticket.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("ticket_id", "target", "level"),
    )
    op.create_index(op.f("ix_sla_clock_due_at"), "sla_clock", ["due_at"])
    # No ids given: PostgreSQL's sequences then stay in step with the rows.
    op.bulk_insert(calendar, [{"name": "spain", "timezone": "Europe/Madrid", "country": "ES",
                               "subdivision": None, "hours": json.dumps(HOURS),
                               "seasons": json.dumps(SUMMER), "extra_holidays": "[]"}])
    op.get_bind().execute(
        sa.text("INSERT INTO sla_plan (name, calendar_id, default_priority, targets, warn_at) "
                "SELECT 'standard', id, 'normal', :targets, '[0.75, 0.9]' FROM sla_calendar "
                "WHERE name = 'spain'"), {"targets": json.dumps(TARGETS)})


def downgrade() -> None:
    op.drop_table("sla_warning")
    op.drop_index(op.f("ix_sla_clock_due_at"), table_name="sla_clock")
    op.drop_index(op.f("ix_sla_clock_ticket_id"), table_name="sla_clock")
    op.drop_table("sla_clock")
    op.drop_table("sla_plan")
    op.drop_table("sla_calendar")
