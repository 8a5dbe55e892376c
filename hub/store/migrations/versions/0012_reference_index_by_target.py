"""idx_reference: one search index by target, partial indexes for URLs and identifiers

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-05 15:00:00

Reference rows are about 40 % of all index rows, and each carried three index entries: by row
(resource_pk), by (res_type, param, target_id, target_type) and by (target_id, target_type, param).
Every search by target states the id (a value, a chain's or _has's set, a _revinclude's targets), so
one index led by the id serves them all; res_type joins it as its last column so a search on one type
reads only that type's entries. What the (res_type, param, ...) index still did for searches without
a target, by absolute URL or by :identifier, two partial indexes do over just those rows. An index
entry is most of an index row's write cost (bench/README.md, "Index rows: is it the layout?").
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_idx_reference_res_type_param_target_id_target_type", "idx_reference")
    op.drop_index("ix_idx_reference_target_id_target_type_param", "idx_reference")
    op.create_index(
        "ix_idx_reference_target_id_target_type_param_res_type",
        "idx_reference",
        ["target_id", "target_type", "param", "res_type"],
    )
    for column in ("url", "id_value"):
        where = sa.text(f"{column} IS NOT NULL")
        op.create_index(
            f"ix_idx_reference_{column}",
            "idx_reference",
            ["res_type", "param", column],
            sqlite_where=where,
            postgresql_where=where,
        )


def downgrade() -> None:
    for column in ("url", "id_value"):
        op.drop_index(f"ix_idx_reference_{column}", "idx_reference")
    op.drop_index("ix_idx_reference_target_id_target_type_param_res_type", "idx_reference")
    op.create_index("ix_idx_reference_target_id_target_type_param", "idx_reference", ["target_id", "target_type", "param"])
    op.create_index(
        "ix_idx_reference_res_type_param_target_id_target_type",
        "idx_reference",
        ["res_type", "param", "target_id", "target_type"],
    )
