"""Bulk row writing for the write path: COPY on PostgreSQL, executemany of plain tuples on SQLite.

SQLAlchemy's per-row parameter processing costs more than the database itself at ingest volumes
(tens of thousands of index rows per second), so rows go to the driver as tuples.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Connection, not_, select

from hub.store.tables import INDEX_TABLES, resource

RESOURCE_COLUMNS = tuple(c.name for c in resource.columns)
INDEX_COLUMNS = {name: tuple(c.name for c in table.columns) for name, table in INDEX_TABLES.items()}


def allocate_pks(conn: Connection, n: int) -> list[int]:
    """Primary keys for n new resource rows, so index rows can refer to them before insertion."""
    if n == 0:
        return []
    if conn.dialect.name == "postgresql":
        rows = conn.exec_driver_sql(
            "SELECT nextval(pg_get_serial_sequence('resource', 'pk')) FROM generate_series(1, %(n)s)", {"n": n}
        )
        return [r[0] for r in rows]
    # SQLite: the caller holds the database write lock (BEGIN IMMEDIATE), so max(pk) cannot move.
    start = conn.exec_driver_sql("SELECT coalesce(max(pk), 0) FROM resource").scalar_one()
    return list(range(start + 1, start + n + 1))


def insert_rows(conn: Connection, table: str, columns: Sequence[str], rows: list[tuple[Any, ...]]) -> None:
    if not rows:
        return
    cols = ", ".join(columns)
    if conn.dialect.name == "postgresql":
        raw: Any = conn.connection.dbapi_connection  # a psycopg Connection: COPY is not in the DBAPI
        with raw.cursor() as cur, cur.copy(f"COPY {table} ({cols}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        return
    marks = ", ".join("?" * len(columns))
    conn.exec_driver_sql(f"INSERT INTO {table} ({cols}) VALUES ({marks})", rows)


def insert_resources(conn: Connection, rows: list[tuple[Any, ...]]) -> None:
    """Rows in RESOURCE_COLUMNS order (pk first, from allocate_pks)."""
    insert_rows(conn, "resource", RESOURCE_COLUMNS, rows)


def collect_index_rows(
    pk: int, per_table: dict[str, list[tuple[Any, ...]]], out: dict[str, list[tuple[Any, ...]]]
) -> None:
    """Collect one resource's index rows (res_type, param, *columns) under its pk."""
    for name, rows in per_table.items():
        bucket = out.setdefault(name, [])
        bucket.extend((pk, *row) for row in rows)


def flush_index_rows(conn: Connection, collected: dict[str, list[tuple[Any, ...]]]) -> int:
    written = 0
    for name, rows in collected.items():
        insert_rows(conn, INDEX_TABLES[name].name, INDEX_COLUMNS[name], rows)
        written += len(rows)
    return written


IndexRows = dict[str, list[tuple[Any, ...]]]


def index_current(
    conn: Connection, rows_of: Callable[[str, bytes], IndexRows | None], *where: Any, batch: int = 2_000
) -> int:
    """Write rows_of(res_type, JSON bytes) as index rows of the current resources `where` selects (all
    when nothing is given), in batches by pk: re-indexing for a SearchParameter posted at run time,
    and the migrations that index what was stored before. rows_of may skip a resource (None) without
    parsing it."""
    written, last = 0, 0
    while True:
        rows = conn.execute(
            select(resource.c.pk, resource.c.res_type, resource.c.content)
            .where(*where, resource.c.is_current, not_(resource.c.deleted), resource.c.content.is_not(None))
            .where(resource.c.pk > last)
            .order_by(resource.c.pk)
            .limit(batch)
        ).all()
        if not rows:
            return written
        collected: IndexRows = {}
        for pk, res_type, content in rows:
            found = rows_of(res_type, bytes(content))
            if found:
                collect_index_rows(pk, found, collected)
        written += flush_index_rows(conn, collected)
        last = rows[-1][0]
