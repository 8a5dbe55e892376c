"""How fast is the XML path compared with the JSON path?

Parses all Nictiz nl-core examples (XML) and writes them back, then does the same resources with orjson
(loads of their JSON bytes, dumps of the dicts), and prints ms per resource and the ratio.
Also times one Synthea patient bundle (JSON in) to XML and back, as large-bundle numbers.

Run:  .venv/bin/python bench/bench_xml.py [rounds]
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from support import nictiz_example_files, synthea_bundle, synthea_files  # noqa: E402

from hub.formats import jsonfmt  # noqa: E402
from hub.formats.xml import _tables, parse_xml, to_xml  # noqa: E402


def best_of(rounds: int, fn: Callable[[], Any]) -> float:
    """Seconds for the fastest of `rounds` runs (the least disturbed by the rest of the machine)."""
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def row(label: str, seconds: float, count: int, base: float | None = None) -> None:
    ratio = f"  {seconds / base:5.1f}x JSON" if base else ""
    print(f"  {label:<24} {seconds * 1000 / count:8.3f} ms/resource  {seconds * 1000:8.1f} ms total{ratio}")


def main(rounds: int) -> None:
    start = time.perf_counter()
    _tables()
    print(f"type tables built once in {(time.perf_counter() - start) * 1000:.0f} ms")

    xml_docs = [p.read_bytes() for p in nictiz_example_files()]
    dicts = [parse_xml(x) for x in xml_docs]
    json_docs = [jsonfmt.dumps(d) for d in dicts]
    n = len(xml_docs)
    print(
        f"\nNictiz examples: {n} resources, {sum(map(len, xml_docs)) // 1024} KiB XML, "
        f"{sum(map(len, json_docs)) // 1024} KiB JSON, best of {rounds} rounds"
    )
    json_in = best_of(rounds, lambda: [orjson.loads(j) for j in json_docs])
    json_out = best_of(rounds, lambda: [jsonfmt.dumps(d) for d in dicts])
    xml_in = best_of(rounds, lambda: [parse_xml(x) for x in xml_docs])
    xml_out = best_of(rounds, lambda: [to_xml(d) for d in dicts])
    xml_pretty = best_of(rounds, lambda: [to_xml(d, pretty=True) for d in dicts])
    row("JSON parse (orjson)", json_in, n)
    row("JSON write (orjson)", json_out, n)
    row("XML parse", xml_in, n, json_in)
    row("XML write", xml_out, n, json_out)
    row("XML write pretty", xml_pretty, n, json_out)
    row("XML parse + write", xml_in + xml_out, n, json_in + json_out)

    patients = sorted((f for f in synthea_files() if not f.name.startswith("0-")), key=lambda f: f.stat().st_size)
    bundle = synthea_bundle(patients[len(patients) // 2].name)
    xml = to_xml(bundle)
    data = orjson.dumps(bundle)
    m = len(bundle["entry"]) + 1
    print(f"\nSynthea bundle: {m} resources, {len(xml) // 1024} KiB XML, {len(data) // 1024} KiB JSON")
    b_json_in = best_of(rounds, lambda: orjson.loads(data))
    b_json_out = best_of(rounds, lambda: orjson.dumps(bundle))
    row("JSON parse (orjson)", b_json_in, m)
    row("JSON write (orjson)", b_json_out, m)
    row("XML parse", best_of(rounds, lambda: parse_xml(xml)), m, b_json_in)
    row("XML write", best_of(rounds, lambda: to_xml(bundle)), m, b_json_out)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5)
