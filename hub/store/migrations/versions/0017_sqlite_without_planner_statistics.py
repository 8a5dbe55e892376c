"""SQLite: drop the planner statistics earlier versions took

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07 17:30:00

Migration 0007 ran ANALYZE on `resource`, and `hub load` ran PRAGMA optimize after each load, but
nothing kept those statistics current. Taken while the tables were small, they told SQLite a table
held a few rows; once it held thousands, SQLite read the whole table for every look-up of a page's
rows by primary key (a scan was cheaper than a few index look-ups in a table of five rows). The hub's
SQLite plans are made for no statistics (tests/test_search_plans.py), so it keeps none.
"""

from __future__ import annotations

from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TABLE IF EXISTS sqlite_stat1")


def downgrade() -> None:
    pass  # statistics are not data: nothing to restore
