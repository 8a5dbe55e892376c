"""audit trail: hash-chained audit records and signed checkpoints (hub/audit/tables.py)

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 17:50:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "audit_record",
        sa.Column("seq", SEQ, autoincrement=False, nullable=False),
        sa.Column("recorded", sa.DateTime(), nullable=False),
        sa.Column("type", sa.String(length=64), nullable=False),
        sa.Column("subtype", sa.String(length=64), nullable=True),
        sa.Column("action", sa.String(length=1), nullable=False),
        sa.Column("outcome", sa.String(length=2), nullable=False),
        sa.Column("patient_id", sa.String(length=64), nullable=True),
        sa.Column("bsn", sa.String(length=16), nullable=True),
        sa.Column("user_id", sa.String(length=128), nullable=True),
        sa.Column("client_id", sa.String(length=100), nullable=True),
        sa.Column("organisation", sa.String(length=16), nullable=True),
        sa.Column("entity", sa.String(length=200), nullable=True),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("prev_hash", sa.String(length=64), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_audit_record")),
    )
    with op.batch_alter_table("audit_record", schema=None) as batch_op:
        batch_op.create_index("ix_audit_record_recorded", ["recorded"], unique=False)
        batch_op.create_index("ix_audit_record_patient", ["patient_id", "recorded"], unique=False)
        batch_op.create_index("ix_audit_record_user", ["user_id"], unique=False)
        batch_op.create_index("ix_audit_record_organisation", ["organisation", "recorded"], unique=False)
    op.create_table(
        "audit_checkpoint",
        sa.Column("seq", SEQ, autoincrement=False, nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.Column("created", sa.DateTime(), nullable=False),
        sa.Column("kid", sa.String(length=100), nullable=False),
        sa.Column("signature", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_audit_checkpoint")),
    )


def downgrade() -> None:
    op.drop_table("audit_checkpoint")
    with op.batch_alter_table("audit_record", schema=None) as batch_op:
        for name in (
            "ix_audit_record_organisation",
            "ix_audit_record_user",
            "ix_audit_record_patient",
            "ix_audit_record_recorded",
        ):
            batch_op.drop_index(name)
    op.drop_table("audit_record")
