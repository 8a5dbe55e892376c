"""resource.holder, and (SQLite) a covering index over the columns searches test per row

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-23 21:00:00

Every search filters `resource.pk IN (<index subquery>)` plus the row's type, current and deleted
flags and, for consent, its patient, id and author. Two changes make that test cheap:
- `holder`: one organisation that wrote the resource, on the row. "The organisation that wrote the
  data always sees it" was an EXISTS look-up in resource_author per row (1.2 us a row on SQLite: 2
  of the 3.7 ms of a 1,631-match token page); resource_author stays the full set. Existing rows
  take one of their recorded authors.
- SQLite keeps the JSON content inline in the table's B-tree, so each test read a whole (often
  multi-kilobyte) row: counting the 20,466 Observations of male patients in the Synthea set took
  50 ms, 17-28 ms through a covering index (no table access). PostgreSQL moves large content out of
  line (TOAST) and joins by hash, so it gets no extra index to maintain on every write.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

COVER = ["pk", "res_type", "is_current", "deleted", "patient_id", "res_id", "holder"]


def upgrade() -> None:
    with op.batch_alter_table("resource") as batch:
        batch.add_column(sa.Column("holder", sa.String(length=80), nullable=True))
    op.execute(
        "UPDATE resource SET holder = (SELECT min(a.org) FROM resource_author a"
        " WHERE a.res_type = resource.res_type AND a.res_id = resource.res_id)"
    )
    if op.get_bind().dialect.name == "sqlite":
        op.create_index("ix_resource_cover", "resource", COVER)
        op.execute("ANALYZE resource")


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.drop_index("ix_resource_cover", "resource")
    with op.batch_alter_table("resource") as batch:
        batch.drop_column("holder")
