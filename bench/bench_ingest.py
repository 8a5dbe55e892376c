"""Benchmark: ingest of the Synthea set, against the storage limit measured in the same run.

    .venv/bin/python bench/bench_ingest.py [--database URL] [--files N] [--profile]

Three figures, each on a fresh database (SQLite files in a temporary directory by default; with
`--database postgresql://...` a private schema per figure, created and dropped by this script):

  (a) end to end: `hub.load.load_paths` over the .json.bz2 files (read, decompress, parse, validate,
      resolve references, index, write), in resources/s;
  (b) the hub's server side alone: the same bundles, read and parsed beforehand, run through
      `services.pipeline.run(Interaction(TRANSACTION/BATCH, ...))` exactly as load_paths does;
      then the same twice more, each on a database of its own, with search indexing switched off
      for the patient data (a SearchIndexer substituted here, not in hub/): once with the index rows
      extracted but not written, once not even extracted. The three times give "index writes add
      X % to ingest time" and how much of it is extraction;
  (c) the storage limit: the rows (b) wrote (resources and index rows, read back with SQLAlchemy Core)
      written again into an empty database by a bare loop, one transaction per original bundle, the
      way hub/store/bulk.py writes: executemany of tuples on SQLite, COPY on PostgreSQL; and the
      resource rows alone, the same way.

(b)/(c) and (a)/(c) are "how close the hub gets to what the database can take". `--files N` loads
the two `0-*` files and the first N patient files (default: all 120). `--profile` runs (b) once more
under cProfile afterwards and prints the top costs.
"""

from __future__ import annotations

import argparse
import bisect
import cProfile
import gc
import os
import platform
import pstats
import resource as rusage
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from sqlalchemy import func, select, text  # noqa: E402
from support import SYNTHEA, synthea_files  # noqa: E402

from hub.app import Services  # noqa: E402
from hub.config import Settings  # noqa: E402
from hub.load import LoadSummary, _bundles, _tally, discover, load_paths  # noqa: E402
from hub.pipeline import BATCH, TRANSACTION, Interaction, Principal  # noqa: E402
from hub.search.indexer import SearchIndexer  # noqa: E402
from hub.store import bulk  # noqa: E402
from hub.store.database import Database  # noqa: E402
from hub.store.engine import make_engine, normalise_url  # noqa: E402
from hub.store.tables import INDEX_TABLES, resource  # noqa: E402

TARGET = 1500  # resources/s with validation and indexing, on the 2-core development machine
INDEX_SHARE_TARGET = 0.40  # index writes add at most this much to ingest time
CHUNK = 10  # bundles an arm of (b) runs in its turn (run_server_side)
BASE_URL = "http://localhost:8080/fhir"  # load_paths' default
PUBLISHED = (
    "Blaze (Clojure/JVM): ~630 resources/s per core; Smile CDR (HAPI FHIR): ~700 resources/s per vCPU "
    "(their published figures, other hardware and data sets; not measured here)"
)

Bundle = tuple[str, dict[str, Any]]


# -- the machine --------------------------------------------------------------------------------


class CpuWatch:
    """CPU the rest of the machine used while the benchmark ran (Linux /proc/stat), so a run on a
    busy machine says so. "Others" includes a local PostgreSQL server's own processes."""

    def __init__(self) -> None:
        self.start, self.busy0, self.own0 = time.monotonic(), _machine_busy(), _own_cpu()

    def others(self) -> float | None:
        """Average cores used by processes other than this one and the children it waited for."""
        busy = _machine_busy()
        if busy is None or self.busy0 is None:
            return None
        elapsed = time.monotonic() - self.start
        return max(0.0, (busy - self.busy0) - (_own_cpu() - self.own0)) / max(elapsed, 1e-9)


def _machine_busy() -> float | None:
    try:
        with open("/proc/stat") as fh:
            f = [int(x) for x in fh.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    # user nice system idle iowait irq softirq steal ...: busy = all but idle and iowait
    return (sum(f[:8]) - f[3] - f[4]) / os.sysconf("SC_CLK_TCK")


def _own_cpu() -> float:
    total = 0.0
    for who in (rusage.RUSAGE_SELF, rusage.RUSAGE_CHILDREN):
        ru = rusage.getrusage(who)
        total += ru.ru_utime + ru.ru_stime
    return total


def machine_note(watch: CpuWatch, postgres: bool) -> str:
    others = watch.others()
    if others is None:
        return "machine: other processes' CPU use unknown (no /proc/stat)"
    text = f"machine: other processes used {others:.2f} cores on average during the run"
    if postgres:
        return text + " (the PostgreSQL server included)"
    if others > 0.25:
        text += "\nWARNING: the machine was not quiet; the absolute figures are low (ratios suffer less): rerun"
    return text


def quiet_check(seconds: float = 1.0) -> None:
    """Warn when other processes keep the machine busy before we start."""
    watch = CpuWatch()
    time.sleep(seconds)
    others = watch.others()
    if others is not None and others > 0.2:
        print(f"WARNING: other processes use {others:.1f} cores right now: the figures will be low; rerun when quiet")


# -- databases ----------------------------------------------------------------------------------


def db_kind(url: str | None) -> str:
    if not url or url == "sqlite" or url.startswith("sqlite:"):
        return "sqlite"
    if normalise_url(url).startswith("postgresql"):
        return "postgresql"
    raise SystemExit(f"unsupported database URL {url!r}: give 'sqlite' (default) or postgresql://...")


@contextmanager
def fresh_database(url: str | None, label: str, tmp: Path, keep: bool = False) -> Iterator[tuple[Database, str]]:
    """A new, migrated, empty hub database and its URL; removed afterwards (on PostgreSQL, unless `keep`).

    SQLite: a file in `tmp` (any sqlite URL given only selects SQLite). PostgreSQL: a private schema
    in the given database, reached through `options=-csearch_path%3D<schema>` as the tests do."""
    if db_kind(url) == "sqlite":
        full = f"sqlite:///{tmp / f'{label}.db'}"
        db = Database.connect(full)
        try:
            yield db, full
        finally:
            _settle(db)
            db.dispose()
        return
    assert url is not None
    base = normalise_url(url)
    schema_name = f"bench_{label}_{uuid.uuid4().hex[:8]}"
    sep = "&" if "?" in base else "?"
    full = f"{base}{sep}options=-csearch_path%3D{schema_name}"
    admin = make_engine(base, pool_size=1, max_overflow=0)
    try:
        with admin.begin() as conn:
            conn.execute(text(f"CREATE SCHEMA {schema_name}"))
        db = Database.connect(full)
        try:
            yield db, full
        finally:
            _settle(db)
            db.dispose()
    finally:
        if keep:
            print(f"kept schema {schema_name}: {full} (drop it with: DROP SCHEMA {schema_name} CASCADE)")
        else:
            with admin.begin() as conn:
                conn.execute(text(f"DROP SCHEMA IF EXISTS {schema_name} CASCADE"))
        admin.dispose()


_MADE: list[Services] = []


def make_services(db: Database, url: str, tmp: Path) -> Services:
    services = Services(Settings(data_dir=tmp, database_url=url), db)
    _MADE.append(services)
    return services


def _settle(db: Database) -> None:
    """Chain the read records the services on `db` journalled, while its schema still exists (their
    drainer threads would otherwise write into a dropped schema)."""
    for services in [s for s in _MADE if s.db is db]:
        services.audit.journal.settle()
        _MADE.remove(services)


def describe(url: str | None) -> str:
    if db_kind(url) == "sqlite":
        return "SQLite (files in a temporary directory)"
    from sqlalchemy.engine import make_url

    return f"PostgreSQL {make_url(normalise_url(url or '')).render_as_string(hide_password=True)} (fresh schemas)"


# -- inputs ---------------------------------------------------------------------------------------


def chosen_files(n: int | None) -> list[Path]:
    files = synthea_files()
    if not files:
        raise SystemExit(f"no Synthea fixtures found in {SYNTHEA}")
    first = [f for f in files if f.name.startswith("0-")]
    patients = [f for f in files if not f.name.startswith("0-")]
    return first + (patients if n is None else patients[:n])


def read_bundles(files: list[Path]) -> list[Bundle]:
    """What load_paths executes, read and parsed up front (POST with an id rewritten to PUT).

    The collector is off meanwhile: parsed JSON has no cycles, and its full scans of a heap that keeps
    growing would be counted as parsing time (load_paths holds one bundle at a time)."""
    gc.disable()
    try:
        return [wb for f in discover(files) for wb in _bundles(f)]
    finally:
        gc.enable()


def warm_up(services: Services, bundles: list[Bundle]) -> None:
    """Compile what a running server has compiled already (index plans, validator tables), one resource
    per type, so the first timed phase does not pay for it alone. Nothing is written."""
    seen: set[str] = set()
    for _, bundle in bundles:
        for entry in bundle.get("entry", []):
            res = entry.get("resource")
            if isinstance(res, dict) and res.get("resourceType") not in seen:
                seen.add(res["resourceType"])
                services.validate(res)
                services.indexer.rows(res)
                services.indexer.patient_id(res)


def max_pk(db: Database) -> int:
    with db.engine.connect() as conn:
        return int(conn.execute(select(func.coalesce(func.max(resource.c.pk), 0))).scalar_one())


def count_rows(db: Database) -> tuple[int, Counter[str]]:
    with db.engine.connect() as conn:
        n = int(conn.execute(select(func.count()).select_from(resource)).scalar_one())
        idx: Counter[str] = Counter()
        for name, table in INDEX_TABLES.items():
            idx[name] = int(conn.execute(select(func.count()).select_from(table)).scalar_one())
    return n, idx


# -- the three measurements ------------------------------------------------------------------------


def run_end_to_end(services: Services, files: list[Path]) -> tuple[float, LoadSummary]:
    gc.collect()
    start = time.perf_counter()
    summary = load_paths(services, files, base_url=BASE_URL, progress=False)
    return time.perf_counter() - start, summary


class PatientDataUnindexed(SearchIndexer):
    """Search indexing switched off for this benchmark's comparison (hub/ is unchanged): no index rows
    for patient data. The shared reference data keep theirs, since the patient bundles' conditional
    references (`Practitioner?identifier=...`) are resolved by searching them. With `extract` the
    rows are still extracted and then dropped, which separates extraction from writing."""

    REFERENCE_DATA = frozenset({"Organization", "Location", "Practitioner", "PractitionerRole"})

    def __init__(self, base: SearchIndexer, extract: bool) -> None:
        super().__init__(base.registry, base.local_bases)
        self.extract = extract

    def rows(self, resource: dict[str, Any]) -> dict[str, list[tuple[Any, ...]]]:
        if resource.get("resourceType") in self.REFERENCE_DATA:
            return super().rows(resource)
        if self.extract:
            super().rows(resource)
        return {}


def run_server_side(
    arms: list[Services], bundles: list[Bundle], chunk: int = CHUNK
) -> tuple[list[float], list[float], list[LoadSummary], list[int]]:
    """All bundles through each arm's pipeline, in turns of `chunk` bundles: every arm runs the next
    chunk, in an order that rotates from chunk to chunk. This VM's speed drifts by 20 % and more over
    minutes, and arms run one whole load after the other gave shares from 50 % to 85 % for the same
    code; in turns, a drift falls on every arm alike. (Turns of one bundle were tried too: they moved
    the arms' times towards each other by ~10 % each way on SQLite, caches shared between the arms.)
    Per arm the seconds spent in pipeline.run (and load_paths' tally), the CPU seconds the process
    used meanwhile (all its threads; no waiting for the disk), and the summary; and the last resource
    pk of the first arm after each bundle (read outside the timed part) so (c) can replay the same
    transactions."""
    principal = Principal(kind="local", client_id="hub load")
    summaries = [LoadSummary(files=len(bundles)) for _ in arms]
    spent = [0.0 for _ in arms]
    cpu = [0.0 for _ in arms]
    boundaries: list[int] = []
    for turn, first in enumerate(range(0, len(bundles), chunk)):
        for j in range(len(arms)):
            k = (turn + j) % len(arms)
            services = arms[k]
            for where, bundle in bundles[first : first + chunk]:
                kind = TRANSACTION if bundle.get("type") == "transaction" else BATCH
                start, start_cpu = time.perf_counter(), time.process_time()
                result = services.pipeline.run(
                    Interaction(kind, body=bundle, principal=principal, base_url=BASE_URL, prefer_return="minimal")
                )
                _tally(summaries[k], where, result.resource or {})
                spent[k] += time.perf_counter() - start
                cpu[k] += time.process_time() - start_cpu
                if k == 0:
                    boundaries.append(max_pk(services.db))
    return spent, cpu, summaries, boundaries


Rows = list[tuple[Any, ...]]


def read_back(db: Database) -> tuple[Rows, dict[str, Rows]]:
    """Every row the hub wrote, as SQLAlchemy Core returns them (Python values, as the hub passes them)."""
    with db.engine.connect() as conn:
        res_rows = [tuple(r) for r in conn.execute(select(*resource.columns).order_by(resource.c.pk))]
        idx_rows = {
            name: [tuple(r) for r in conn.execute(select(*table.columns).order_by(table.c.resource_pk))]
            for name, table in INDEX_TABLES.items()
        }
    return res_rows, idx_rows


def split(rows: Rows, boundaries: list[int]) -> list[Rows]:
    """Rows (sorted by their first column, the resource pk) cut into one slice per original bundle."""
    keys = [r[0] for r in rows]
    out, lo = [], 0
    for b in boundaries:
        hi = bisect.bisect_right(keys, b, lo)
        out.append(rows[lo:hi])
        lo = hi
    return out


def run_storage_limit(db: Database, res_rows: Rows, idx_rows: dict[str, Rows], boundaries: list[int]) -> float:
    """The bare loop: per original bundle one write transaction with the resource rows, then the index
    rows table by table, written as hub/store/bulk.py writes them (executemany of tuples / COPY)."""
    res_parts = split(res_rows, boundaries)
    idx_parts = {name: split(rows, boundaries) for name, rows in idx_rows.items()}
    resource_cols = bulk.RESOURCE_COLUMNS
    gc.collect()
    start = time.perf_counter()
    for k in range(len(boundaries)):
        with db.transaction(write=True) as conn:
            bulk.insert_rows(conn, "resource", resource_cols, res_parts[k])
            for name, parts in idx_parts.items():
                bulk.insert_rows(conn, INDEX_TABLES[name].name, bulk.INDEX_COLUMNS[name], parts[k])
    return time.perf_counter() - start


def run_core_inserts(db: Database, res_rows: Rows, idx_rows: dict[str, Rows], boundaries: list[int]) -> float:
    """For reference: the same loop with SQLAlchemy Core `table.insert()` and one dict per row."""
    res_parts = split(res_rows, boundaries)
    idx_parts = {name: split(rows, boundaries) for name, rows in idx_rows.items()}
    res_cols = [c.name for c in resource.columns]
    idx_cols = {name: [c.name for c in t.columns] for name, t in INDEX_TABLES.items()}
    gc.collect()
    start = time.perf_counter()
    for k in range(len(boundaries)):
        with db.transaction(write=True) as conn:
            if res_parts[k]:
                conn.execute(resource.insert(), [dict(zip(res_cols, r, strict=True)) for r in res_parts[k]])
            for name, parts in idx_parts.items():
                if parts[k]:
                    cols = idx_cols[name]
                    conn.execute(INDEX_TABLES[name].insert(), [dict(zip(cols, r, strict=True)) for r in parts[k]])
    return time.perf_counter() - start


def profile_server_side(url: str | None, files: list[Path], tmp: Path, top: int = 30) -> None:
    bundles = read_bundles(files)
    with fresh_database(url, "profile", tmp) as (db, full):
        services = make_services(db, full, tmp)
        warm_up(services, bundles)
        gc.collect()
        gc.freeze()
        prof = cProfile.Profile()
        principal = Principal(kind="local", client_id="hub load")
        prof.enable()
        for _, bundle in bundles:
            kind = TRANSACTION if bundle.get("type") == "transaction" else BATCH
            services.pipeline.run(
                Interaction(kind, body=bundle, principal=principal, base_url=BASE_URL, prefer_return="minimal")
            )
        prof.disable()
        gc.unfreeze()
    print(f"\n== cProfile of (b), {len(bundles)} bundles: top {top} by own time (tottime)")
    pstats.Stats(prof).strip_dirs().sort_stats("tottime").print_stats(top)
    print(f"== top {top} by cumulative time")
    pstats.Stats(prof).strip_dirs().sort_stats("cumulative").print_stats(top)


# -- report -------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--database", default="sqlite", help="'sqlite' (default: temporary files) or postgresql://...")
    ap.add_argument("--files", type=int, default=None, help="patient files to load besides the two 0-* files")
    ap.add_argument("--profile", action="store_true", help="afterwards, run (b) under cProfile and print top costs")
    args = ap.parse_args(argv)
    db_kind(args.database)  # fail early on an unsupported URL

    files = chosen_files(args.files)
    print(f"ingest benchmark on {describe(args.database)}")
    print(f"{len(files)} files ({len(files) - 2} patient bundles + the two 0-* files) from {SYNTHEA}")
    print(f"Python {platform.python_version()}, {os.cpu_count()} cores; single process, single thread")
    quiet_check()
    watch = CpuWatch()

    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="hub-bench-ingest-")))

        t0 = time.perf_counter()
        bundles = read_bundles(files)
        t_read = time.perf_counter() - t0
        n_entries = sum(len(b.get("entry", [])) for _, b in bundles)
        print(f"read + decompressed + parsed {len(bundles)} bundles, {n_entries:,} entries in {t_read:.1f} s")

        # (a) end to end
        db_a, url_a = stack.enter_context(fresh_database(args.database, "a", tmp))
        services_a = make_services(db_a, url_a, tmp)
        warm_up(services_a, bundles)
        print("(a) load_paths ...", flush=True)
        t_a, sum_a = run_end_to_end(services_a, files)
        rows_a, idx_a = count_rows(db_a)
        db_a.dispose()

        # (b) server side, then the same without index rows (extracted and dropped; none)
        arms = []
        for label, extract in (("b", None), ("bx", True), ("bn", False)):
            db_arm, url_arm = stack.enter_context(fresh_database(args.database, label, tmp))
            arm = make_services(db_arm, url_arm, tmp)
            warm_up(arm, bundles)
            if extract is not None:
                arm.indexer = PatientDataUnindexed(arm.indexer, extract)
            arms.append(arm)
        gc.collect()
        gc.freeze()  # the parsed bundles stay alive throughout: keep them out of the collector's scans
        print("(b) pipeline.run on pre-parsed bundles, with index rows, then without ...", flush=True)
        (t_b, t_bx, t_bn), (c_b, c_bx, c_bn), (sum_b, sum_bx, sum_bn), boundaries = run_server_side(arms, bundles)
        gc.unfreeze()
        del bundles
        res_rows, idx_rows = read_back(arms[0].db)
        _, idx_bn = count_rows(arms[2].db)
        for arm in arms:
            arm.db.dispose()
        n_idx = sum(len(v) for v in idx_rows.values())
        n_rows = len(res_rows) + n_idx

        # (c) storage limit
        gc.collect()
        gc.freeze()
        db_c, _ = stack.enter_context(fresh_database(args.database, "c", tmp))
        method = "COPY" if db_c.dialect == "postgresql" else "executemany of tuples"
        print(f"(c) bare {method} of the same rows ...", flush=True)
        t_c = run_storage_limit(db_c, res_rows, idx_rows, boundaries)
        check_c, _ = count_rows(db_c)
        db_c.dispose()
        db_c0, _ = stack.enter_context(fresh_database(args.database, "c0", tmp))
        print("(c) the resource rows alone ...", flush=True)
        t_c0 = run_storage_limit(db_c0, res_rows, {}, boundaries)
        db_c0.dispose()
        t_core = None
        if db_c.dialect == "sqlite":
            db_d, _ = stack.enter_context(fresh_database(args.database, "d", tmp))
            print("(c') Core insert() executemany with dicts, for reference ...", flush=True)
            t_core = run_core_inserts(db_d, res_rows, idx_rows, boundaries)
            db_d.dispose()
        gc.unfreeze()
        if check_c != len(res_rows):
            print(f"WARNING: (c) wrote {check_c} resource rows, expected {len(res_rows)}")

        profile_args = (args.database, files, tmp)
        if args.profile:
            profile_server_side(*profile_args)

    # the table
    n_a, n_b = sum_a.resources, sum_b.resources
    rate_a, rate_b, rate_c = n_a / t_a, n_b / t_b, len(res_rows) / t_c
    idx_per = n_idx / max(len(res_rows), 1)
    print()
    print(f"{'':48} {'resources':>10} {'seconds':>8} {'resources/s':>12} {'rows/s':>10} {'of limit':>9}")
    lines = [
        ("(a) end to end: hub.load.load_paths", n_a, t_a, rate_a, (rows_a + sum(idx_a.values())) / t_a),
        ("(b) server side: pipeline.run, pre-parsed", n_b, t_b, rate_b, n_rows / t_b),
        ("    same, index rows extracted, not written", sum_bx.resources, t_bx, sum_bx.resources / t_bx, None),
        ("    same, no index rows for patient data", sum_bn.resources, t_bn, sum_bn.resources / t_bn, None),
        (f"(c) storage limit: bare {method}", len(res_rows), t_c, rate_c, n_rows / t_c),
        ("    same, resource rows only", len(res_rows), t_c0, len(res_rows) / t_c0, len(res_rows) / t_c0),
    ]
    if t_core is not None:
        lines.append(
            (
                "    (info) Core insert(), one dict per row",
                len(res_rows),
                t_core,
                len(res_rows) / t_core,
                n_rows / t_core,
            )
        )
    for label, n, t, rate, rows_s in lines:
        shown = "" if rows_s is None else f"{rows_s:,.0f}"
        print(f"{label:48} {n:10,d} {t:8.1f} {rate:12,.0f} {shown:>10} {rate / rate_c:9.1%}")
    print()
    print(
        f"rows written: {len(res_rows):,} resource rows + {n_idx:,} index rows = {idx_per:.1f} index rows per resource"
    )
    print("  " + ", ".join(f"{name} {len(rows):,}" for name, rows in idx_rows.items()))
    print(f"the hub reaches {rate_b / rate_c:.1%} of the storage limit server side, {rate_a / rate_c:.1%} end to end")
    share = t_b / t_bn - 1
    print(
        f"index writes add {share:.1%} to ingest time server side ({rate_b:,.0f} resources/s with them, "
        f"{sum_bn.resources / t_bn:,.0f}/s without; target <= {INDEX_SHARE_TARGET:.0%}: "
        f"{'met' if share <= INDEX_SHARE_TARGET else 'NOT met'}): extraction {t_bx / t_bn - 1:.1%} "
        f"+ writing the rows {(t_b - t_bx) / t_bn:.1%}"
    )
    print(
        f"  in CPU time of the process (no waiting for the disk; {c_b:.1f} / {c_bx:.1f} / {c_bn:.1f} s): "
        f"index writes add {c_b / c_bn - 1:.1%}: extraction {c_bx / c_bn - 1:.1%} "
        f"+ writing the rows {(c_b - c_bx) / c_bn:.1%}"
    )
    print(f"  without index rows the patient data got none: {sum(idx_bn.values()):,} index rows (reference data)")
    print(f"bare storage: the index rows add {t_c / t_c0 - 1:.1%} to the time of writing the resource rows")
    print(f"read + decompress + parse alone: {n_entries / t_read:,.0f} entries/s (part of (a), not of (b))")
    verdict = "met" if rate_b >= TARGET else "NOT met"
    print(
        f"target: >= {TARGET:,} resources/s with validation and indexing on 2 cores: {verdict} server side "
        f"({rate_b:,.0f}/s), {'met' if rate_a >= TARGET else 'NOT met'} end to end ({rate_a:,.0f}/s)"
    )
    print(f"for comparison: {PUBLISHED}")
    print(machine_note(watch, db_kind(args.database) == "postgresql"))
    for name, s in (("(a)", sum_a), ("(b)", sum_b), ("(b) extracted", sum_bx), ("(b) no index", sum_bn)):
        if s.failures:
            print(f"WARNING {name}: {len(s.failures)} entries failed, first: {s.failures[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
