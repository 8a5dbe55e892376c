"""Generate hub/search/data/compartments.json: the Practitioner, Encounter, RelatedPerson and Device
compartments (resource type -> the parameter codes that put it in the compartment).

The Patient compartment comes from the official CompartmentDefinition (scripts/gen_search_params.py).
For the other four, an official `compartmentdefinition-<name>.json` in the source folder is used when
there is one; otherwise the definition is derived from the R4 search parameters (CC0):

- a reference parameter of type T puts T in compartment C when C is one of its `target` types, unless
  it targets every resource type (Reference(Any): `focus`, `subject` of a QuestionnaireResponse ...),
  which would make everything a member of everything;
- the compartment's own type is a member by identity only (`{def}` in the spec's tables: an Encounter
  is in its own compartment, not in that of its `part-of` parent).

Checked against the official Patient definition, the derivation finds every resource type that
definition lists but 3 (all through Reference(Any)), and adds parameters the spec leaves out
(`requester`, `recorder` ...): membership is somewhat wider than the spec's tables.

Run:  python scripts/gen_compartments.py [../shared/fixtures/fhir-r4]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "hub" / "search" / "data" / "compartments.json"
DEFAULT_SRC = ROOT.parent / "shared" / "fixtures" / "fhir-r4"
COMPARTMENTS = ("Device", "Encounter", "Practitioner", "RelatedPerson")


def official(src: Path, name: str) -> dict[str, list[str]] | None:
    path = src / f"compartmentdefinition-{name.lower()}.json"
    if not path.exists():
        return None
    cd = json.loads(path.read_text(encoding="utf-8"))
    return {r["code"]: sorted(r["param"]) for r in cd["resource"] if r.get("param") and r["code"] != name}


def derived(params: list[dict[str, Any]], name: str, every_type: int) -> dict[str, list[str]]:
    out: dict[str, set[str]] = {}
    for p in params:
        targets = p.get("target") or []
        if p["type"] != "reference" or name not in targets or len(targets) >= every_type:
            continue
        for base in p["base"]:
            if base != name:
                out.setdefault(base, set()).add(p["code"])
    return {rt: sorted(codes) for rt, codes in sorted(out.items())}


def main(src: Path) -> None:
    bundle = json.loads((src / "search-parameters.json").read_text(encoding="utf-8"))
    params = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "SearchParameter"]
    every_type = max(len(p.get("target") or []) for p in params)  # Reference(Any) lists them all
    data: dict[str, dict[str, list[str]]] = {}
    for name in COMPARTMENTS:
        found = official(src, name)
        data[name] = found if found is not None else derived(params, name, every_type)
        print(f"{name}: {len(data[name])} resource types ({'official' if found is not None else 'derived'})")
    lines = [f"{json.dumps(k)}:{json.dumps(v, separators=(',', ':'))}" for k, v in data.items()]
    OUT.write_text("{\n" + ",\n".join(lines) + "\n}\n", encoding="utf-8")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_SRC)
