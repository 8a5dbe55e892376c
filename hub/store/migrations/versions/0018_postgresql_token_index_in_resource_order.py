"""PostgreSQL: the token search index ends in resource_pk, as SQLite's does (0015)

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-07 19:00:00

PostgreSQL paged `Observation?code=system|code` by walking the resource table's pk index and
testing each row against the hashed list of every match, so a common code's first page grew with
its matches (5.6 -> 17.1 ms p50, 8.6 -> 55.1 ms p95 from 120 to 1,200 patients). With resource_pk
last in the index, the rows of one system|code come in the order resources were written and the
page joins them in that order and stops after the page (hub.search.planner token_driver). The old
index is a prefix of the new one, so it goes.
"""

from __future__ import annotations

from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None

KEY = ["res_type", "param", "code", "system"]


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.create_index("ix_idx_token_key_resource", "idx_token", [*KEY, "resource_pk"])
    op.drop_index("ix_idx_token_res_type_param_code_system", "idx_token")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.create_index("ix_idx_token_res_type_param_code_system", "idx_token", KEY)
    op.drop_index("ix_idx_token_key_resource", "idx_token")
