"""Benchmark search-index extraction on Synthea, and the same expressions in fhirpathpy for comparison.

    .venv/bin/python bench/bench_extract.py [number of patient bundles, default 20]

Reports, per resource: time of `extract()` (evaluation + conversion to rows) and the rows it makes;
then, on a subset, evaluation alone with the compiled expressions versus fhirpathpy (compiled once per
expression, same per-type branches) and the ratio. Loading and decompressing the bundles is not timed.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from support import synthea_bundle, synthea_files  # noqa: E402

from hub.search.extract import extract, plan  # noqa: E402
from hub.search.registry import default_registry  # noqa: E402

FHIRPATHPY_RESOURCES = 600  # fhirpathpy is slow: compare on this many resources (all types, round-robin)


def local_refs(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    """The bundle's resources with urn:uuid references rewritten to Type/id, as the hub stores them."""
    local = {e["fullUrl"]: f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in bundle["entry"]}

    def fix(node: Any) -> Any:
        if isinstance(node, dict):
            out = {k: fix(v) for k, v in node.items()}
            if isinstance(out.get("reference"), str) and out["reference"] in local:
                out["reference"] = local[out["reference"]]
            return out
        if isinstance(node, list):
            return [fix(v) for v in node]
        return node

    return [fix(e["resource"]) for e in bundle["entry"]]


def load(n_files: int) -> list[dict[str, Any]]:
    files = [f for f in synthea_files() if not f.name.startswith("0-")][:n_files]
    return [r for f in files for r in local_refs(synthea_bundle(f.name))]


def bench_extract(resources: list[dict[str, Any]]) -> None:
    registry = default_registry()
    for rt in {r["resourceType"] for r in resources}:
        plan(rt, registry)  # compile up front, as a running server has
    per_type: dict[str, list[float]] = defaultdict(list)
    rows_per_type: Counter[str] = Counter()
    total_rows = 0
    runs = []
    for _ in range(3):
        start = time.perf_counter()
        for r in resources:
            extract(r, registry)
        runs.append(time.perf_counter() - start)
    for r in resources:
        t0 = time.perf_counter()
        out = extract(r, registry)
        per_type[r["resourceType"]].append(time.perf_counter() - t0)
        n = sum(len(v) for v in out.values())
        rows_per_type[r["resourceType"]] += n
        total_rows += n
    best = min(runs)
    per_resource = best / len(resources) * 1000
    print(f"extract(): {len(resources)} resources, best of 3: {best:.3f} s = {per_resource:.4f} ms/resource")
    print(f"rows: {total_rows / len(resources):.1f} per resource")
    print(f"{'type':28} {'count':>6} {'median ms':>10} {'mean ms':>9} {'rows':>6}")
    for rt, times in sorted(per_type.items(), key=lambda kv: -len(kv[1])):
        print(
            f"{rt:28} {len(times):6d} {statistics.median(times) * 1000:10.4f} "
            f"{statistics.mean(times) * 1000:9.4f} {rows_per_type[rt] / len(times):6.1f}"
        )


def round_robin(resources: list[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    by_type: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in resources:
        by_type[r["resourceType"]].append(r)
    out: list[dict[str, Any]] = []
    while len(out) < n and any(by_type.values()):
        for lst in by_type.values():
            if lst and len(out) < n:
                out.append(lst.pop())
    return out


def bench_vs_fhirpathpy(resources: list[dict[str, Any]]) -> None:
    import fhirpathpy
    from fhirpathpy.models import models

    from hub.search.fhirpath import parse_reference

    def resolve(inputs: list[Any]) -> list[Any]:  # fhirpathpy has no resolve(); the same meaning as ours
        from fhirpathpy.engine.nodes import ResourceNode

        out = []
        for v in inputs:
            ref = v.get("reference") if isinstance(v, dict) else v
            p = parse_reference(ref) if isinstance(ref, str) else None
            if p:
                out.append(ResourceNode.create_node({"resourceType": p[0], "id": p[1]}, p[0]))
        return out

    options = {"userInvocationTable": {"resolve": {"fn": resolve, "arity": {0: []}}}}
    registry = default_registry()
    compiled: dict[str, Any] = {}
    jobs: list[tuple[dict[str, Any], list[Any], list[Any]]] = []
    for r in resources:
        entries = plan(r["resourceType"], registry)
        ours = [e.evaluator for e in entries]
        theirs = []
        for e in entries:
            text = e.evaluator.text.replace("ofType(DateTime)", "ofType(dateTime)")
            if text not in compiled:
                compiled[text] = fhirpathpy.compile(text, model=models["r4"], options=options)
            theirs.append(compiled[text])
        jobs.append((r, ours, theirs))
    n_expr = sum(len(o) for _, o, _ in jobs)
    start = time.perf_counter()
    for r, ours, _ in jobs:
        for ev in ours:
            ev(r)
    t_ours = time.perf_counter() - start
    start = time.perf_counter()
    for r, _, theirs in jobs:
        for fn in theirs:
            fn(r, {})
    t_theirs = time.perf_counter() - start
    n = len(jobs)
    print(f"\nevaluation only, {n} resources, {n_expr} expression evaluations:")
    print(f"  compiled:   {t_ours / n * 1000:8.4f} ms/resource")
    print(f"  fhirpathpy: {t_theirs / n * 1000:8.4f} ms/resource")
    print(f"  ratio: fhirpathpy / compiled = {t_theirs / t_ours:.0f}x")


def main() -> None:
    n_files = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    t0 = time.perf_counter()
    resources = load(n_files)
    print(f"loaded {len(resources)} resources from {n_files} Synthea bundles in {time.perf_counter() - t0:.1f} s")
    bench_extract(resources)
    bench_vs_fhirpathpy(round_robin(resources, FHIRPATHPY_RESOURCES))


if __name__ == "__main__":
    main()
