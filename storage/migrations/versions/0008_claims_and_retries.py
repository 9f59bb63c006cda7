"""duplicate claims enforced by the database; temporary failures retried by themselves

- ``inbound_claim``: one row per raw-bytes hash and per Message-ID of the first mail seen with
  them; a copy's insert conflicts, even when both are applied at the same moment. Filled from
  the mails already processed. The indexes the old duplicate query needed are dropped.
- ``inbound_message.next_attempt_at`` / ``failing_since``: a mail that met a temporary error
  waits in the queue and is tried again.
- ``notification.claimed_by`` (which sender holds it), ``failing_since`` and ``failure`` (why a
  failed notification failed: refused, unwritable or expired).

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30
"""

import hashlib
from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "inbound_claim",
        sa.Column("key", sqlmodel.sql.sqltypes.AutoString(length=80), nullable=False),
        sa.Column("inbound_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["inbound_id"], ["inbound_message.id"]),
        sa.PrimaryKeyConstraint("key"),
    )
    with op.batch_alter_table("inbound_message", schema=None) as batch_op:
        batch_op.add_column(sa.Column("next_attempt_at", sqlmodel.sql.sqltypes.UTCDateTime(),
                                      nullable=True))
        batch_op.add_column(sa.Column("failing_since", sqlmodel.sql.sqltypes.UTCDateTime(),
                                      nullable=True))
        batch_op.drop_index("ix_inbound_message_sha_state")
        batch_op.drop_index("ix_inbound_message_msgid_state")
    with op.batch_alter_table("notification", schema=None) as batch_op:
        batch_op.add_column(sa.Column("claimed_by", sqlmodel.sql.sqltypes.AutoString(length=128),
                                      nullable=True))
        batch_op.add_column(sa.Column("failing_since", sqlmodel.sql.sqltypes.UTCDateTime(),
                                      nullable=True))
        batch_op.add_column(sa.Column("failure", sqlmodel.sql.sqltypes.AutoString(length=16),
                                      nullable=True))
    _claim_processed_mails()


def _claim_processed_mails() -> None:
    """The claims of the mails processed so far: the first of each bytes hash and Message-ID,
    as the old duplicate query found them (duplicates themselves claim nothing)."""
    bind = op.get_bind()
    rows = bind.execute(sa.text(
        "SELECT id, raw_sha256, header_message_id FROM inbound_message "
        "WHERE state = 'done' AND (outcome IS NULL OR outcome <> 'duplicate') ORDER BY id"))
    taken: dict[str, int] = {}
    for inbound_id, raw_sha256, message_id in rows:
        keys = [f"raw:{raw_sha256}"]
        if message_id:
            keys.append("mid:" + hashlib.sha256(message_id.encode("utf-8", "surrogateescape"))
                        .hexdigest())
        for key in keys:
            taken.setdefault(key, inbound_id)
    if taken:
        claims = sa.table("inbound_claim", sa.column("key"), sa.column("inbound_id"))
        op.bulk_insert(claims, [{"key": k, "inbound_id": v} for k, v in taken.items()])


def downgrade() -> None:
    op.drop_table("inbound_claim")
    with op.batch_alter_table("notification", schema=None) as batch_op:
        batch_op.drop_column("failure")
        batch_op.drop_column("failing_since")
        batch_op.drop_column("claimed_by")
    with op.batch_alter_table("inbound_message", schema=None) as batch_op:
        batch_op.create_index("ix_inbound_message_msgid_state", ["header_message_id", "state"],
                              unique=False)
        batch_op.create_index("ix_inbound_message_sha_state", ["raw_sha256", "state"],
                              unique=False)
        batch_op.drop_column("failing_since")
        batch_op.drop_column("next_attempt_at")
