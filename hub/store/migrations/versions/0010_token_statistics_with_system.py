"""search index statistics: the token and quantity statistics take the system in too

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-05 08:10:00

Migration 0006's statistics on idx_token covered (res_type, param, code); a search `system|code`
also tests the system, which PostgreSQL then took as independent of the code, underestimating a
common LOINC code five-fold at 1,200 patients (3,196 rows for 16,310). With that estimate it
fetched and sorted every match instead of walking the first page in index order: 53 ms p50 for
the first page instead of 10 ms (bench/bench_search.py --scale 10). The same holds for quantities'
UCUM system. SQLite: nothing to do.
"""

from __future__ import annotations

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

COLUMNS = {
    "idx_token": (("res_type", "param", "code"), ("res_type", "param", "code", "system")),
    "idx_quantity": (("res_type", "param", "code"), ("res_type", "param", "code", "system")),
}


def _replace(index: int) -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table, variants in COLUMNS.items():
        op.execute(f"DROP STATISTICS IF EXISTS st_{table}")
        columns = ", ".join(variants[index])
        op.execute(f"CREATE STATISTICS st_{table} (ndistinct, dependencies, mcv) ON {columns} FROM {table}")
        op.execute(f"ANALYZE {table}")


def upgrade() -> None:
    _replace(1)


def downgrade() -> None:
    _replace(0)
