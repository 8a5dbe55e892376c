"""SQLite: the partial indexes over current rows state `is_current = 1`, as SQLAlchemy's queries do

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06 04:20:00

SQLite has no boolean type, so SQLAlchemy writes the filter `resource.c.is_current` as
`resource.is_current = 1`. SQLite uses a partial index only where the query's WHERE contains the
index's own condition term for term, and `is_current = 1` is not `is_current`: the partial indexes
`uq_resource_current` and `ix_resource_patient` were never used. A patient's compartment was found by
reading every current row of the type and sorting them. The indexes are made again with the
condition the queries state. PostgreSQL renders the filter as `resource.is_current`, so it needs no
change there.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

INDEXES = {
    "uq_resource_current": (["res_type", "res_id"], True),
    "ix_resource_patient": (["patient_id", "res_type"], False),
}


def _remake(where: str) -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    for name, (columns, unique) in INDEXES.items():
        op.drop_index(name, "resource")
        op.create_index(name, "resource", columns, unique=unique, sqlite_where=sa.text(where))


def upgrade() -> None:
    _remake("is_current = 1")


def downgrade() -> None:
    _remake("is_current")
