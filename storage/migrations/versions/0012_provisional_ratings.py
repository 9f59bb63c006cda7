"""a star link's automatic rating is provisional for a while: another star opened meanwhile
(a link scanner) cancels it

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Added columns only: SQLite alters the table in place, and the triggers of 0010 stay.
    op.add_column("ticket", sa.Column("pending_rating", sa.Integer(), nullable=True))
    op.add_column("ticket", sa.Column("pending_rating_at", sqlmodel.sql.sqltypes.UTCDateTime(),
                                      nullable=True))


def downgrade() -> None:
    # Dropped in place too (SQLite 3.35+), not by copying the table, which would lose them.
    op.execute("ALTER TABLE ticket DROP COLUMN pending_rating_at")
    op.execute("ALTER TABLE ticket DROP COLUMN pending_rating")
