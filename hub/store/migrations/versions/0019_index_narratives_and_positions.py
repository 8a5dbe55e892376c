"""index `_text` (the narrative) and Location `near` (its position) for the resources already stored

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-07 21:30:00

R4 gives `_text` no expression and `near` the type special; the hub now indexes both (hub/search
/registry.py EXPRESSIONS, NEAR_URL). Resources written before get their rows here, from the
extraction of the hub that runs the upgrade: only resources whose JSON holds a narrative (`"div"`)
or a Location are parsed. Downgrading drops the rows.
"""

from __future__ import annotations

from typing import Any

import orjson
import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None



def upgrade() -> None:
    from hub.search.extract import extract_tuples
    from hub.search.registry import default_registry
    from hub.store import bulk

    registry = default_registry()

    def rows_of(res_type: str, data: bytes) -> dict[str, list[tuple[Any, ...]]] | None:
        codes = ({"near"} if res_type == "Location" else set()) | ({"_text"} if b'"div"' in data else set())
        return extract_tuples(orjson.loads(data), registry, frozenset(codes)) if codes else None

    bulk.index_current(op.get_bind(), rows_of)  # as the write path and hub.search.custom write them


def downgrade() -> None:
    conn = op.get_bind()
    conn.execute(sa.text("DELETE FROM idx_string WHERE param = '_text'"))
    conn.execute(sa.text("DELETE FROM idx_composite WHERE res_type = 'Location' AND param = 'near'"))
