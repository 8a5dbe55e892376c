"""audit journal offsets: how far each process's read-record journal has reached the chain

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-23 21:10:00

Reads' audit records are appended to a per-process journal file before the response leaves and
moved into the hash chain in batches (hub/audit/journal.py). The offset moves in the same
transaction as the records, so a crash between the two neither loses nor repeats a record.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_journal",
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("drained", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_audit_journal")),
    )


def downgrade() -> None:
    op.drop_table("audit_journal")
