"""throttle events shared by every gateway process

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-24
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "throttle_event",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("key", sqlmodel.sql.sqltypes.AutoString(length=400), nullable=False),
        sa.Column("at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("throttle_event", schema=None) as batch_op:
        batch_op.create_index("ix_throttle_event_key_at", ["key", "at"], unique=False)
        batch_op.create_index(batch_op.f("ix_throttle_event_at"), ["at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("throttle_event", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_throttle_event_at"))
        batch_op.drop_index("ix_throttle_event_key_at")
    op.drop_table("throttle_event")
