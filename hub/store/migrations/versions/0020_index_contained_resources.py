"""index the contained resources that stored resources' references name, for chained search

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-08 00:30:00

Chained parameters look inside contained resources (R4 search.html#contained): a container keeps the
index rows of each contained resource one of its reference parameters names, under the parameter
code `reference:Type.code` (hub/search/extract.py `_add_contained`). Resources written before get
those rows here, from the extraction of the hub that runs the upgrade: only current resources whose
JSON holds `"contained"` are parsed, and only the rows of their contained resources (and of the
`#id` references to them) are added. Downgrading drops every such row (no search parameter's code
has a `:`; only a contained reference's url starts with `#`).
"""

from __future__ import annotations

from typing import Any

import orjson
import sqlalchemy as sa
from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None

BATCH = 2_000
TABLES = ("idx_string", "idx_token", "idx_reference", "idx_date", "idx_number", "idx_quantity", "idx_uri", "idx_composite")


def upgrade() -> None:
    from hub.search.extract import contained_tuples
    from hub.search.registry import default_registry
    from hub.store import bulk

    conn = op.get_bind()
    registry = default_registry()
    last = 0
    while True:
        rows = conn.execute(
            sa.text(
                "SELECT pk, content FROM resource WHERE is_current AND NOT deleted"
                " AND content IS NOT NULL AND pk > :last ORDER BY pk LIMIT :n"
            ),
            {"last": last, "n": BATCH},
        ).all()
        if not rows:
            return
        collected: dict[str, list[tuple[Any, ...]]] = {}
        for pk, content in rows:
            data = bytes(content)
            if b'"contained"' in data:
                bulk.collect_index_rows(pk, contained_tuples(orjson.loads(data), registry), collected)
        bulk.flush_index_rows(conn, collected)  # as the write path writes them
        last = rows[-1][0]


def downgrade() -> None:
    conn = op.get_bind()
    for table in TABLES:
        conn.execute(sa.text(f"DELETE FROM {table} WHERE param LIKE '%:%'"))
    conn.execute(sa.text("DELETE FROM idx_reference WHERE url LIKE '#%'"))  # the references themselves
