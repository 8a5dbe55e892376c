"""PGO apps' patient-bound access tokens (for revocation before they expire)

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23 17:50:00

Chained after 0004 (consent rules) so the history stays a single line.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "auth_access_token",
        sa.Column("jti", sa.String(length=64), nullable=False),
        sa.Column("family", sa.String(length=64), nullable=False),
        sa.Column("client_id", sa.String(length=100), nullable=False),
        sa.Column("patient_id", sa.String(length=64), nullable=False),
        sa.Column("expires", sa.DateTime(), nullable=False),
        sa.Column("revoked", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("jti", name=op.f("pk_auth_access_token")),
    )
    with op.batch_alter_table("auth_access_token", schema=None) as batch_op:
        batch_op.create_index("ix_auth_access_token_family", ["family"], unique=False)
        batch_op.create_index("ix_auth_access_token_expires", ["expires"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("auth_access_token", schema=None) as batch_op:
        batch_op.drop_index("ix_auth_access_token_expires")
        batch_op.drop_index("ix_auth_access_token_family")
    op.drop_table("auth_access_token")
