"""composite indexes for the duplicate check of the inbound queue

With one index per column, SQLite answered "a done mail with these bytes" through the index on
state, where nearly every row matches: a scan of the queue for every mail ingested.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-24
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("inbound_message", schema=None) as batch_op:
        batch_op.drop_index("ix_inbound_message_raw_sha256")
        batch_op.drop_index("ix_inbound_message_header_message_id")
        batch_op.create_index("ix_inbound_message_sha_state", ["raw_sha256", "state"],
                              unique=False)
        batch_op.create_index("ix_inbound_message_msgid_state", ["header_message_id", "state"],
                              unique=False)


def downgrade() -> None:
    with op.batch_alter_table("inbound_message", schema=None) as batch_op:
        batch_op.drop_index("ix_inbound_message_msgid_state")
        batch_op.drop_index("ix_inbound_message_sha_state")
        batch_op.create_index("ix_inbound_message_header_message_id", ["header_message_id"],
                              unique=False)
        batch_op.create_index("ix_inbound_message_raw_sha256", ["raw_sha256"], unique=False)
