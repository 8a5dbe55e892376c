"""Benchmark: what the audit trail adds to a read and to a search, and how fast the chain verifies.

    .venv/bin/python bench/bench_audit.py [--database URL] [--files N] [--samples N]

A fresh database (SQLite in a temporary directory, or a private PostgreSQL schema) gets the two
`0-*` Synthea files and N patient files (default 3) through `hub.load`. Then, in this process, one
request at a time, interleaved so both arms see the same machine:

  read    `services.pipeline.run(Interaction(READ, ...))` of random existing resources
  search  `Observation?patient=[id]&_count=20` for random patients
each with the Audit interceptor in the pipeline (audited) and without it (baseline: the same
Services, the interceptor taken out). The principal is the operator (`local`), so the consent and
scope steps, identical in both arms, do not depend on consents in the data. Figures: p50 and mean
in ms, and the difference (the audit write per request). Finally `hub audit verify` over the whole
trail the load and the requests left: records/s.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "bench")]

from bench_ingest import chosen_files, describe, fresh_database, make_services  # noqa: E402
from sqlalchemy import func, select  # noqa: E402

from hub.audit.interceptor import Audit  # noqa: E402
from hub.audit.tables import audit_record  # noqa: E402
from hub.audit.verify import verify  # noqa: E402
from hub.load import load_paths  # noqa: E402
from hub.pipeline import READ, SEARCH_TYPE, Interaction, Principal  # noqa: E402
from hub.store.tables import resource  # noqa: E402

OPERATOR = Principal(kind="local")


def timed(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return (time.perf_counter() - t) * 1000


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--database", help="postgresql://... (default: SQLite in a temporary directory)")
    ap.add_argument("--files", type=int, default=3, help="Synthea patient files to load (default 3)")
    ap.add_argument("--samples", type=int, default=1000, help="requests per arm (default 1000)")
    args = ap.parse_args(argv)
    print(f"database: {describe(args.database)}")
    with tempfile.TemporaryDirectory() as tmp, fresh_database(args.database, "audit", Path(tmp)) as (db, url):
        services = make_services(db, url, Path(tmp))
        load_paths(services, chosen_files(args.files), progress=False)
        with db.transaction() as conn:
            keys = [
                tuple(r)
                for r in conn.execute(select(resource.c.res_type, resource.c.res_id).where(resource.c.is_current))
            ]
        patients = [i for t, i in keys if t == "Patient"]
        audited = services.pipeline
        plain_interceptors = [i for i in audited.interceptors if not isinstance(i, Audit)]
        assert len(plain_interceptors) == len(audited.interceptors) - 1, "no Audit interceptor in the pipeline"
        with_audit = list(audited.interceptors)
        rng = random.Random(7)

        def read() -> None:
            rt, rid = rng.choice(keys)
            services.pipeline.run(
                Interaction(READ, res_type=rt, res_id=rid, principal=OPERATOR, base_url="http://b/fhir")
            )

        def search() -> None:
            params = [("patient", rng.choice(patients)), ("_count", "20")]
            services.pipeline.run(
                Interaction(
                    SEARCH_TYPE, res_type="Observation", params=params, principal=OPERATOR, base_url="http://b/fhir"
                )
            )

        rows = []
        for name, fn in (("read", read), ("search", search)):
            on: list[float] = []
            off: list[float] = []
            for n in range(args.samples + 100):
                audited.interceptors = with_audit
                a = timed(fn)
                audited.interceptors = plain_interceptors
                b = timed(fn)
                if n >= 100:  # warm-up
                    on.append(a)
                    off.append(b)
            audited.interceptors = with_audit
            rows.append(
                (name, statistics.median(off), statistics.median(on), statistics.mean(off), statistics.mean(on))
            )
        with db.transaction() as conn:
            total = conn.execute(select(func.count()).select_from(audit_record)).scalar_one()
        t = time.perf_counter()
        report = verify(db, services.keys)
        verify_s = time.perf_counter() - t
    head = ("request", "p50 off", "p50 on", "mean off", "mean on", "audit ms (p50)", "added")
    print("\n{:8} {:>8} {:>8} {:>9} {:>8} {:>15} {:>6}".format(*head))
    for name, p50_off, p50_on, mean_off, mean_on in rows:
        added = p50_on - p50_off
        print(
            f"{name:8} {p50_off:8.3f} {p50_on:8.3f} {mean_off:9.3f} {mean_on:8.3f} {added:15.3f} {added / p50_off:6.0%}"
        )
    print(f"\nverify: {report.line()}  ({total / verify_s:,.0f} records/s over {total:,} records)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
