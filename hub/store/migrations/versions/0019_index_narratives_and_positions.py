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

BATCH = 2_000


def upgrade() -> None:
    from hub.search.extract import extract_tuples
    from hub.search.registry import default_registry
    from hub.store import bulk

    conn = op.get_bind()
    registry = default_registry()
    last = 0
    while True:
        rows = conn.execute(
            sa.text(
                "SELECT pk, res_type, content FROM resource WHERE is_current AND NOT deleted"
                " AND content IS NOT NULL AND pk > :last ORDER BY pk LIMIT :n"
            ),
            {"last": last, "n": BATCH},
        ).all()
        if not rows:
            return
        collected: dict[str, list[tuple[Any, ...]]] = {}
        for pk, res_type, content in rows:
            data = bytes(content)
            codes = ({"near"} if res_type == "Location" else set()) | ({"_text"} if b'"div"' in data else set())
            if codes:
                found = extract_tuples(orjson.loads(data), registry, frozenset(codes))
                bulk.collect_index_rows(pk, found, collected)
        bulk.flush_index_rows(conn, collected)  # as the write path and hub.search.custom.reindex write them
        last = rows[-1][0]


def downgrade() -> None:
    conn = op.get_bind()
    conn.execute(sa.text("DELETE FROM idx_string WHERE param = '_text'"))
    conn.execute(sa.text("DELETE FROM idx_composite WHERE res_type = 'Location' AND param = 'near'"))
