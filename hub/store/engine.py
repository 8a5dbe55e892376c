"""Database engines for SQLite (embedded default) and PostgreSQL (production, psycopg 3).

SQLite: WAL so readers never block the writer, and write transactions start with BEGIN IMMEDIATE
so two writers queue on the database lock instead of failing on a lock upgrade halfway through.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url

WRITE = {"hub_write": True}  # execution option: this connection will write


def normalise_url(url: str) -> str:
    """Accept postgres:// and postgresql:// and use psycopg 3 for both."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    return url


def make_engine(url: str, **kwargs: Any) -> Engine:
    url = normalise_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(url, **kwargs)
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 20)
    kwargs.setdefault("pool_pre_ping", False)
    engine = create_engine(url, **kwargs)

    @event.listens_for(engine, "connect", insert=True)
    def _no_jit(dbapi_conn: Any, _record: Any) -> None:
        # PostgreSQL compiles plans above jit_above_cost to machine code: 100-300 ms per statement,
        # more than the search itself (a common code's first page at 1,200 patients took 116 ms
        # p50 with JIT, 59 ms without; bench/bench_search.py). Short OLTP statements never gain.
        autocommit = dbapi_conn.autocommit
        dbapi_conn.autocommit = True
        with dbapi_conn.cursor() as cur:
            cur.execute("SET jit = off")
        dbapi_conn.autocommit = autocommit

    return engine


def _sqlite_engine(url: str, **kwargs: Any) -> Engine:
    parsed = make_url(url)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    kwargs.setdefault("connect_args", {}).update({"check_same_thread": False, "timeout": 60})
    # Enough pooled connections for every thread of a process that uses the database (the request
    # threads, HUB_REQUEST_THREADS, anyio's default 40 where that is not set, and the audit drainer):
    # one opened past the pool and closed after its request costs its PRAGMAs and a cold page cache
    # (server CPU per read over HTTP ~1.9 -> ~1.5 ms under 32 concurrent clients with 5 + 10).
    kwargs.setdefault("pool_size", 40)
    kwargs.setdefault("max_overflow", 10)
    engine = create_engine(url, **kwargs)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy's `begin` event emit BEGIN itself (pysqlite's implicit BEGIN is deferred).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=60000")
        cur.execute("PRAGMA cache_size=-65536")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        immediate = conn.get_execution_options().get("hub_write")
        # Straight to the driver: SQLAlchemy's execution path cost a third of a short read here.
        conn.connection.dbapi_connection.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"
