"""SQLite: the token search index ends in resource_pk, so a first page stops after the page

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07 16:00:00

SQLite keeps no statistics and ran `Observation?code=system|code` as `pk IN (<every match>)`: the
list was built and then walked in pk order for the first 50. A common code's first page grew with its
matches (5.5 -> 21.3 ms p50 from 120 to 1,200 patients). With resource_pk last in the index, the
rows of one system|code are already in the order resources were written, and the page query joins
them in that order (hub.search.planner token_driver). The old index is a prefix of the new one, so
it goes. PostgreSQL keeps its index: it plans by cost and pages by walking the pk index.
"""

from __future__ import annotations

from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

KEY = ["res_type", "param", "code", "system"]


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    op.create_index("ix_idx_token_key_resource", "idx_token", [*KEY, "resource_pk"])
    op.drop_index("ix_idx_token_res_type_param_code_system", "idx_token")
    op.create_index("ix_idx_token_resource_key", "idx_token", ["resource_pk", *KEY])
    op.drop_index("ix_idx_token_resource", "idx_token")


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    op.create_index("ix_idx_token_res_type_param_code_system", "idx_token", KEY)
    op.drop_index("ix_idx_token_key_resource", "idx_token")
    op.create_index("ix_idx_token_resource", "idx_token", ["resource_pk"])
    op.drop_index("ix_idx_token_resource_key", "idx_token")
