"""The database handle: an engine, the schema kept current, and transactions by intent (read or write)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, Engine

from hub.store import schema
from hub.store.engine import WRITE, make_engine
from hub.store.statistics import WRITTEN, PlannerStatistics


class Database:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.statistics = PlannerStatistics(self._analyze, self._known_rows)

    @classmethod
    def connect(cls, url: str, *, migrate: bool = True) -> Database:
        db = cls(make_engine(url))
        if migrate:
            schema.upgrade(db.engine)
        return db

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def transaction(self, write: bool = False) -> Iterator[Connection]:
        """One transaction: committed when the block ends, rolled back if it raises.

        Write transactions on SQLite take the write lock up front (BEGIN IMMEDIATE).
        """
        with self.engine.connect() as conn:
            if write:
                conn = conn.execution_options(**WRITE)
                conn.info[WRITTEN] = 0
            with conn.begin():
                yield conn
            if write and self.dialect == "postgresql":
                self.statistics.wrote(conn.info.pop(WRITTEN, 0))

    def refresh_statistics(self) -> None:
        """Bring the query planner's statistics up to date after a bulk load. Without them PostgreSQL
        plans searches over the index tables from stale row counts (a nested loop over what it thinks
        is an empty table can take minutes); autovacuum would catch up only later.

        SQLite: nothing. Its plans are made for no statistics (tests/test_search_plans.py checks them
        without and with statistics that match the data), and nothing would keep statistics current:
        taken after a small load, they told SQLite the table held a few rows, and once it held
        thousands every look-up of a page's rows by primary key read the whole table."""
        if self.dialect == "postgresql":
            self.statistics.wait()
            self._analyze()
            self.statistics.refreshed()

    def _analyze(self) -> None:
        from hub.store.tables import metadata

        with self.engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql(
                "ANALYZE " + ", ".join(t.name for t in metadata.sorted_tables)
            )

    def _known_rows(self) -> int:
        """The resource rows PostgreSQL's statistics know of (0 where it has none: reltuples is -1 then)."""
        with self.engine.connect() as conn:
            rows = conn.exec_driver_sql("SELECT reltuples FROM pg_class WHERE oid = 'resource'::regclass").scalar()
        return max(int(rows or 0), 0)

    def dispose(self) -> None:
        self.statistics.wait()
        self.engine.dispose()
