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

TABLES = ("idx_string", "idx_token", "idx_reference", "idx_date", "idx_number", "idx_quantity", "idx_uri", "idx_composite")


def upgrade() -> None:
    from hub.search.extract import contained_tuples
    from hub.search.registry import default_registry
    from hub.store import bulk

    registry = default_registry()

    def rows_of(res_type: str, data: bytes) -> dict[str, list[tuple[Any, ...]]] | None:
        return contained_tuples(orjson.loads(data), registry) if b'"contained"' in data else None

    bulk.index_current(op.get_bind(), rows_of)  # as the write path writes them


def downgrade() -> None:
    conn = op.get_bind()
    for table in TABLES:
        conn.execute(sa.text(f"DELETE FROM {table} WHERE param LIKE '%:%'"))
    conn.execute(sa.text("DELETE FROM idx_reference WHERE url LIKE '#%'"))  # the references themselves
