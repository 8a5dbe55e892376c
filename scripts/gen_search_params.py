"""Generate hub/search/data/*.json from the official R4 search parameters and Patient compartment.

The hub never reads ../shared at run time: this script turns the FHIR R4 4.0.1 definitions (CC0)
into compact files the search registry loads:

- `search-parameters.json`: one object per SearchParameter with only what the hub uses
  (url, code, base, type, expression, target, modifier, comparator, multipleOr/And, component).
- `compartment-patient.json`: resource type -> the parameter codes that put it in a Patient compartment.
- `implicit-systems.json`: element path -> the implicit token system of a `code` element.

Run:  python scripts/gen_search_params.py [../shared/fixtures/fhir-r4]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "hub" / "search" / "data"
DEFAULT_SRC = ROOT.parent / "shared" / "fixtures" / "fhir-r4"


def compact(sp: dict[str, Any]) -> dict[str, Any]:
    """The fields of one SearchParameter the hub needs, in a stable order; absent ones are left out."""
    out: dict[str, Any] = {
        "url": sp["url"],
        "code": sp["code"],
        "base": list(sp["base"]),
        "type": sp["type"],
    }
    if sp.get("expression"):
        out["expression"] = sp["expression"]
    for key in ("target", "modifier", "comparator"):
        if sp.get(key):
            out[key] = list(sp[key])
    for key in ("multipleOr", "multipleAnd"):
        if key in sp:
            out[key] = bool(sp[key])
    if sp.get("component"):
        out["component"] = [[c["definition"], c["expression"]] for c in sp["component"]]
    return out


def search_parameters(src: Path) -> list[dict[str, Any]]:
    bundle = json.loads((src / "search-parameters.json").read_text(encoding="utf-8"))
    params = [compact(e["resource"]) for e in bundle["entry"] if e["resource"]["resourceType"] == "SearchParameter"]
    return sorted(params, key=lambda p: p["url"])


def patient_compartment(src: Path) -> dict[str, list[str]]:
    cd = json.loads((src / "compartmentdefinition-patient.json").read_text(encoding="utf-8"))
    return {r["code"]: list(r["param"]) for r in sorted(cd["resource"], key=lambda r: r["code"]) if r.get("param")}


def implicit_systems(src: Path) -> dict[str, str]:
    """Element path -> the code system of a `code` element whose required binding names a value set
    drawn from one code system (Patient.gender -> administrative-gender): the implicit token system
    of its values (R4 search.html#token)."""
    value_sets = {}
    for e in json.loads((src / "valuesets.json").read_text(encoding="utf-8"))["entry"]:
        if e["resource"]["resourceType"] == "ValueSet":
            value_sets[e["resource"]["url"]] = e["resource"]
    out: dict[str, str] = {}
    for e in json.loads((src / "profiles-resources.json").read_text(encoding="utf-8"))["entry"]:
        sd = e["resource"]
        if sd["resourceType"] != "StructureDefinition" or sd.get("kind") != "resource":
            continue
        for el in sd["snapshot"]["element"]:
            binding = el.get("binding") or {}
            if [t["code"] for t in el.get("type", [])] != ["code"] or binding.get("strength") != "required":
                continue
            vs = value_sets.get(str(binding.get("valueSet", "")).split("|", 1)[0])
            includes = ((vs or {}).get("compose") or {}).get("include") or []
            systems = {inc.get("system") for inc in includes}
            if len(systems) == 1 and None not in systems and not any(inc.get("valueSet") for inc in includes):
                out[el["path"]] = systems.pop()
    return dict(sorted(out.items()))


def write(path: Path, data: Any) -> None:
    # One entry per line: small diffs when the source changes, still compact.
    if isinstance(data, list):
        body = "[\n" + ",\n".join(json.dumps(d, ensure_ascii=False, separators=(",", ":")) for d in data) + "\n]\n"
    else:
        lines = [f"{json.dumps(k)}:{json.dumps(v, separators=(',', ':'))}" for k, v in data.items()]
        body = "{\n" + ",\n".join(lines) + "\n}\n"
    path.write_text(body, encoding="utf-8")


def main(src: Path) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    params = search_parameters(src)
    write(OUT / "search-parameters.json", params)
    compartment = patient_compartment(src)
    write(OUT / "compartment-patient.json", compartment)
    systems = implicit_systems(src)
    write(OUT / "implicit-systems.json", systems)
    print(f"wrote {len(params)} search parameters, {len(compartment)} compartment entries and")
    print(f"{len(systems)} implicit code systems to {OUT}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_SRC)
