"""consent rules and resource authors

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "consent_rule",
        sa.Column("pk", PK, primary_key=True, autoincrement=True),
        sa.Column("consent_id", sa.String(64), nullable=False),
        sa.Column("patient_id", sa.String(64), nullable=False),
        sa.Column("decision", sa.String(8), nullable=False),
        sa.Column("custodian", sa.String(80), nullable=True),
        sa.Column("category", sa.String(32), nullable=True),
        sa.Column("actor_org", sa.String(80), nullable=True),
        sa.Column("actor_category", sa.String(32), nullable=True),
        sa.Column("purpose", sa.String(32), nullable=True),
        sa.Column("period_start", sa.DateTime(), nullable=True),
        sa.Column("period_end", sa.DateTime(), nullable=True),
        sa.Column("specificity", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_consent_rule")),
    )
    op.create_index("ix_consent_rule_patient", "consent_rule", ["patient_id", "decision"])
    op.create_index("ix_consent_rule_consent", "consent_rule", ["consent_id"])
    op.create_table(
        "resource_author",
        sa.Column("res_type", sa.String(64), nullable=False),
        sa.Column("res_id", sa.String(64), nullable=False),
        sa.Column("org", sa.String(80), nullable=False),
        sa.PrimaryKeyConstraint("res_type", "res_id", "org", name=op.f("pk_resource_author")),
    )


def downgrade() -> None:
    op.drop_table("resource_author")
    op.drop_index("ix_consent_rule_consent", "consent_rule")
    op.drop_index("ix_consent_rule_patient", "consent_rule")
    op.drop_table("consent_rule")
