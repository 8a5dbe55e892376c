"""search index statistics: PostgreSQL extended statistics on the index tables

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23 18:00:00

Every index row carries (res_type, param, value); the three are strongly correlated (code 'final'
only occurs with param 'status'), and without extended statistics PostgreSQL multiplies their
selectivities as if independent, underestimating a common search's rows four-fold. That skews
plan choices and `_total=estimate` (hub/search/engine.py). SQLite: nothing to do.
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

STATISTICS = {
    "idx_token": ("res_type", "param", "code"),
    "idx_reference": ("res_type", "param", "target_type"),
    "idx_string": ("res_type", "param"),
    "idx_date": ("res_type", "param"),
    "idx_number": ("res_type", "param"),
    "idx_quantity": ("res_type", "param", "code"),
    "idx_uri": ("res_type", "param"),
    "idx_composite": ("res_type", "param", "c1_code"),
}


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table, columns in STATISTICS.items():
        kinds = "ndistinct, dependencies, mcv" if len(columns) > 2 else "ndistinct, dependencies"
        op.execute(f"CREATE STATISTICS IF NOT EXISTS st_{table} ({kinds}) ON {', '.join(columns)} FROM {table}")
        op.execute(f"ANALYZE {table}")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in STATISTICS:
        op.execute(f"DROP STATISTICS IF EXISTS st_{table}")
