"""indexes for the customer area's ticket lists: an organization's tickets newest first, and
how many there are of a group

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("ticket", schema=None) as batch_op:
        batch_op.create_index("ix_ticket_org_created", ["organization_id", "created_at"],
                              unique=False)
        batch_op.create_index("ix_ticket_org_status", ["organization_id", "status"],
                              unique=False)


def downgrade() -> None:
    with op.batch_alter_table("ticket", schema=None) as batch_op:
        batch_op.drop_index("ix_ticket_org_status")
        batch_op.drop_index("ix_ticket_org_created")
