"""sender authentication: the client's HELO name and the verdict (SPF, DKIM, alignment) on each
queued mail, who released a quarantined one; per organization, whether an unauthenticated mail
is held always ("strict") or only where its domain's DMARC policy asks ("dmarc")

Revision ID: 0020
Revises: 0019
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0020"
down_revision: str | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Plain ADD COLUMN (SQLite has it): a batch copy of organization would trip over the
    # triggers that name it (0010, 0013).
    op.add_column("inbound_message", sa.Column(
        "helo", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False,
        server_default=""))
    op.add_column("inbound_message", sa.Column("sender_auth", sa.Text(), nullable=True))
    op.add_column("inbound_message", sa.Column("authenticated", sa.Boolean(), nullable=True))
    op.add_column("inbound_message", sa.Column(
        "released_by", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True))
    op.add_column("organization", sa.Column(
        "sender_auth", sqlmodel.sql.sqltypes.AutoString(length=8), nullable=False,
        server_default="strict"))


def downgrade() -> None:
    op.drop_column("organization", "sender_auth")
    for column in ("released_by", "authenticated", "sender_auth", "helo"):
        op.drop_column("inbound_message", column)
