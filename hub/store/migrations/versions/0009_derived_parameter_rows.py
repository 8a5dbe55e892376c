"""derived search parameters: drop the index rows that repeated other parameters' rows

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-24 00:50:00

Observation's combo-* parameters are unions of two others (combo-code = code | component-code);
writes no longer give them rows of their own and searches read their sources' rows
(hub/search/extract.py derived_params). Their old rows are dropped here, except where a custom
SearchParameter of that code on Observation is stored (then the rows are its own). The list is
fixed here, as the standard definitions were when this was written. Downgrading does not bring the
rows back: an older hub needs them re-indexed.
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

DERIVED = {  # index table -> Observation parameter codes
    "idx_token": ("combo-code", "combo-value-concept", "combo-data-absent-reason"),
    "idx_quantity": ("combo-value-quantity",),
    "idx_composite": ("combo-code-value-quantity", "combo-code-value-concept"),
}


def upgrade() -> None:
    conn = op.get_bind()
    custom = set()
    rows = conn.execute(
        sa.text(
            "SELECT content FROM resource WHERE res_type = 'SearchParameter' AND is_current AND NOT deleted"
            " AND content IS NOT NULL"
        )
    )
    for (content,) in rows:
        sp = json.loads(bytes(content))
        if "Observation" in (sp.get("base") or []) or "Resource" in (sp.get("base") or []):
            custom.add(sp.get("code"))
    for table, codes in DERIVED.items():
        drop = [c for c in codes if c not in custom]
        if drop:
            conn.execute(
                sa.text(f"DELETE FROM {table} WHERE res_type = 'Observation' AND param IN :codes").bindparams(
                    sa.bindparam("codes", expanding=True)
                ),
                {"codes": drop},
            )


def downgrade() -> None:
    pass  # the rows are not restored (see above)
