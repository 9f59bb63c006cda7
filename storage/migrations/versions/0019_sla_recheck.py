"""sla_clock.recheck_at: the next moment a running clock has something to say (a warning share
reached, its due time), so that serve looks at it then and not on a timer; every running clock
is looked at once after the upgrade

Revision ID: 0019
Revises: 0018
Create Date: 2026-11-30
"""

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("sla_clock") as batch:
        batch.add_column(sa.Column("recheck_at", sqlmodel.sql.sqltypes.UTCDateTime(),
                                   nullable=True))
        batch.create_index(batch.f("ix_sla_clock_recheck_at"), ["recheck_at"])
    clock = sa.table("sla_clock", sa.column("state", sa.String()),
                     sa.column("recheck_at", sqlmodel.sql.sqltypes.UTCDateTime()))
    op.execute(clock.update().where(clock.c.state.in_(["running", "breached"]))
               .values(recheck_at=datetime.now(UTC)))


def downgrade() -> None:
    with op.batch_alter_table("sla_clock") as batch:
        batch.drop_index(batch.f("ix_sla_clock_recheck_at"))
        batch.drop_column("recheck_at")
