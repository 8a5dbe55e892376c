"""Benchmark: what writing search-index rows costs SQLite under other table layouts.

    .venv/bin/python bench/bench_index_layout.py [number of patient bundles, default 40] [--repeat N]

The hub's own index rows of N Synthea bundles (references made local, as a load makes them) are
written by a bare loop, one transaction per bundle, `executemany` of tuples, the hub's PRAGMAs, into
fresh database files of each layout; the resource rows alone are the baseline of the same run. The
question it answers: is the index rows' share of ingest (bench_ingest.py) a matter of layout?

Layouts (same rows each time):
  current      the hub's tables: rowid, resource_pk index, the search indexes (hub/store/tables.py)
  no_pk_index  without the per-table resource_pk index (what deletes of a resource's rows use)
  int_param    (res_type, param) as one integer id in the rows and the search indexes
  no_indexes   no secondary index at all: the floor of binding and appending the rows
Figures: median seconds of N repeats, microseconds per index row beyond the baseline, and that
cost against `current`.
"""

from __future__ import annotations

import argparse
import bz2
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from support import synthea_files  # noqa: E402

from hub.search.extract import COLUMNS, extract_tuples  # noqa: E402
from hub.search.registry import default_registry  # noqa: E402
from hub.store.tables import INDEX_TABLES  # noqa: E402

LAYOUTS = ("current", "no_pk_index", "int_param", "no_indexes")
Bundle = tuple[list[tuple[Any, ...]], dict[str, list[tuple[Any, ...]]]]


def search_indexes() -> dict[str, list[tuple[str, ...]]]:
    """The search indexes of each index table as the hub declares them (not the resource_pk one)."""
    out: dict[str, list[tuple[str, ...]]] = {}
    for name, table in INDEX_TABLES.items():
        out[name] = [
            tuple(c.name for c in ix.columns) for ix in sorted(table.indexes, key=lambda i: str(i.name))
            if [c.name for c in ix.columns] != ["resource_pk"]
        ]  # fmt: skip
    return out


def ddl(layout: str) -> list[str]:
    out = ["CREATE TABLE resource (pk INTEGER PRIMARY KEY, res_type TEXT, res_id TEXT, content BLOB)"]
    for name, indexes in search_indexes().items():
        key = ["pid INTEGER"] if layout == "int_param" else ["res_type TEXT", "param TEXT"]
        out.append(f"CREATE TABLE idx_{name} (resource_pk INTEGER, {', '.join(key + list(COLUMNS[name]))})")
        if layout in ("current", "int_param"):
            out.append(f"CREATE INDEX ix_{name}_r ON idx_{name}(resource_pk)")
        if layout == "no_indexes":
            continue
        for n, cols in enumerate(indexes):
            if layout == "int_param":
                cols = ("pid", *(c for c in cols if c not in ("res_type", "param")))
            out.append(f"CREATE INDEX ix_{name}_{n} ON idx_{name}({', '.join(cols)})")
    return out


def load(n: int) -> list[Bundle]:
    registry = default_registry()
    bundles: list[Bundle] = []
    pk = 0
    for path in synthea_files()[:n]:
        text = bz2.decompress(path.read_bytes()).decode()
        for e in orjson.loads(text)["entry"]:  # urn:uuid references -> Type/id, as a load stores them
            r = e["resource"]
            text = text.replace(f'"{e["fullUrl"]}"', f'"{r["resourceType"]}/{r["id"]}"')
        resources: list[tuple[Any, ...]] = []
        rows: dict[str, list[tuple[Any, ...]]] = {}
        for e in orjson.loads(text)["entry"]:
            pk += 1
            r = e["resource"]
            resources.append((pk, r["resourceType"], r["id"], orjson.dumps(r)))
            for name, found in extract_tuples(r, registry).items():
                rows.setdefault(name, []).extend((pk, *row) for row in found)
        bundles.append((resources, rows))
    return bundles


def write(path: Path, layout: str, bundles: list[Bundle], with_index: bool) -> float:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    conn = sqlite3.connect(path, isolation_level=None)
    for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "cache_size=-65536"):  # as hub/store/engine.py
        conn.execute(f"PRAGMA {pragma}")
    for statement in ddl(layout):
        conn.execute(statement)
    ids: dict[tuple[str, str], int] = {}
    start = time.perf_counter()
    for resources, rows in bundles:
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany("INSERT INTO resource VALUES (?, ?, ?, ?)", resources)
        for name, batch in rows.items() if with_index else ():
            if layout == "int_param":
                batch = [(r[0], ids.setdefault((r[1], r[2]), len(ids)), *r[3:]) for r in batch]
            marks = ", ".join("?" * len(batch[0]))
            conn.executemany(f"INSERT INTO idx_{name} VALUES ({marks})", batch)
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - start
    conn.close()
    return elapsed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundles", type=int, nargs="?", default=40)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    bundles = load(args.bundles)
    n_res = sum(len(r) for r, _ in bundles)
    n_idx = sum(len(v) for _, rows in bundles for v in rows.values())
    print(f"{len(bundles)} bundles: {n_res:,} resources, {n_idx:,} index rows ({n_idx / n_res:.1f} per resource)")
    times: dict[str, list[float]] = {"resource rows only": [], **{layout: [] for layout in LAYOUTS}}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeat):  # interleaved, so every layout sees the same machine
            times["resource rows only"].append(write(Path(tmp, "base.db"), "current", bundles, False))
            for layout in LAYOUTS:
                times[layout].append(write(Path(tmp, f"{layout}.db"), layout, bundles, True))
    base = statistics.median(times["resource rows only"])
    current = statistics.median(times["current"]) - base
    print(f"{'layout':20s} {'seconds':>8s} {'us/index row':>13s} {'vs current':>11s} {'adds to resource rows':>22s}")
    for layout, ts in times.items():
        m = statistics.median(ts)
        if layout == "resource rows only":
            print(f"{layout:20s} {m:8.2f}")
            continue
        cost = m - base
        print(f"{layout:20s} {m:8.2f} {cost / n_idx * 1e6:13.2f} {cost / current:11.2f} {cost / base * 100:21.0f}%")
    print(f"machine: {os.cpu_count()} cores; medians of {args.repeat} interleaved repeats")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
