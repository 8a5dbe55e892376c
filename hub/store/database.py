"""The database handle: an engine, the schema kept current, and transactions by intent (read or write)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, Engine

from hub.store import schema
from hub.store.engine import WRITE, make_engine


class Database:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

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
            with conn.begin():
                yield conn

    def dispose(self) -> None:
        self.engine.dispose()
