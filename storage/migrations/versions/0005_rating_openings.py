"""rating openings, and the rating reminder of a ticket

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "rating_opening",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("ticket_id", sa.Integer(), nullable=False),
        sa.Column("stars", sa.Integer(), nullable=False),
        sa.Column("opened_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["ticket_id"], ["ticket.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("rating_opening", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_rating_opening_opened_at"), ["opened_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_rating_opening_ticket_id"), ["ticket_id"], unique=False)

    # Nullable: existing tickets simply have had no reminder.
    with op.batch_alter_table("ticket", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("rating_reminded_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("ticket", schema=None) as batch_op:
        batch_op.drop_column("rating_reminded_at")

    with op.batch_alter_table("rating_opening", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_rating_opening_ticket_id"))
        batch_op.drop_index(batch_op.f("ix_rating_opening_opened_at"))

    op.drop_table("rating_opening")
