"""Generate profiles/data/r4-definitions.json.gz: the R4 base conformance resources the profile
validator starts from (StructureDefinitions with snapshots, ValueSets, CodeSystems).

The hub never reads ../shared at run time. This keeps what validation needs from the FHIR R4 4.0.1
definitions (CC0) and drops the prose (definitions, comments, mappings, xpath), so the gzip is small:
- StructureDefinition: url, name, type, kind, abstract, baseDefinition, derivation and the snapshot
  elements' id, path, sliceName, min, max, type, contentReference, fixed[x], pattern[x], binding
  (strength, valueSet), constraint (key, severity, human, expression), slicing, maxLength;
- CodeSystem: url, content, caseSensitive and the concept tree (codes only);
- ValueSet: url and compose (codes only).

Run:  python scripts/gen_profile_base.py [../shared/fixtures/fhir-r4]
"""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent.parent / "profiles" / "data" / "r4-definitions.json.gz"
SD_KEYS = ("resourceType", "url", "name", "type", "kind", "abstract", "baseDefinition", "derivation", "fhirVersion")
EL_KEYS = ("id", "path", "sliceName", "min", "max", "type", "contentReference", "slicing", "maxLength")
# Medplum's additions to the 4.0.1 definitions (see scripts/gen_structure.py): not R4.
NOT_R4_ELEMENTS = {
    "Meta.project", "Meta.author", "Meta.onBehalfOf", "Meta.account", "Meta.accounts", "Meta.compartment",
    "Meta.deleted", "Binary.url",
}  # fmt: skip
NOT_R4_TYPES = {"SubscriptionStatus"}
TYPE_FIXES = {"Bundle.entry.response.outcome": [{"code": "Resource"}]}


def _element(el: dict[str, Any]) -> dict[str, Any] | None:
    if el["path"] in NOT_R4_ELEMENTS:
        return None
    out = {k: el[k] for k in EL_KEYS if k in el}
    if el["path"] in TYPE_FIXES:
        out["type"] = TYPE_FIXES[el["path"]]
    for k, v in el.items():
        if k.startswith(("fixed", "pattern")):
            out[k] = v
    if "binding" in el and "valueSet" in el["binding"]:
        out["binding"] = {"strength": el["binding"]["strength"], "valueSet": el["binding"]["valueSet"]}
    cons = [
        {k: c[k] for k in ("key", "severity", "human", "expression") if k in c}
        for c in el.get("constraint", [])
        if c.get("expression")
    ]
    if cons:
        out["constraint"] = cons
    return out


def _structure_definition(sd: dict[str, Any]) -> dict[str, Any] | None:
    if sd.get("type") in NOT_R4_TYPES or sd.get("id") in NOT_R4_TYPES:
        return None
    out = {k: sd[k] for k in SD_KEYS if k in sd}
    els = [e for e in (_element(x) for x in sd["snapshot"]["element"]) if e is not None]
    out["snapshot"] = {"element": els}
    return out


def _concepts(concepts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for c in concepts:
        item: dict[str, Any] = {"code": c["code"]}
        if c.get("concept"):
            item["concept"] = _concepts(c["concept"])
        out.append(item)
    return out


def _code_system(cs: dict[str, Any]) -> dict[str, Any]:
    out = {k: cs[k] for k in ("resourceType", "url", "content", "caseSensitive") if k in cs}
    if cs.get("concept"):
        out["concept"] = _concepts(cs["concept"])
    return out


def _value_set(vs: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"resourceType": "ValueSet", "url": vs["url"]}
    if "compose" in vs:
        compose: dict[str, Any] = {}
        for part in ("include", "exclude"):
            rows = []
            for inc in vs["compose"].get(part, []):
                row = {k: inc[k] for k in ("system", "valueSet", "filter") if k in inc}
                if "concept" in inc:
                    row["concept"] = [{"code": c["code"]} for c in inc["concept"]]
                rows.append(row)
            if rows:
                compose[part] = rows
        out["compose"] = compose
    return out


def main(src: Path) -> None:
    sds: list[dict[str, Any]] = []
    for name in ("profiles-types.json", "profiles-resources.json"):
        bundle = json.loads((src / name).read_text())
        for entry in bundle["entry"]:
            res = entry["resource"]
            if res["resourceType"] == "StructureDefinition" and "snapshot" in res:
                sd = _structure_definition(res)
                if sd is not None:
                    sds.append(sd)
    vsets = json.loads((src / "valuesets.json").read_text())
    code_systems, value_sets = [], []
    for entry in vsets["entry"]:
        res = entry["resource"]
        if res["resourceType"] == "CodeSystem":
            code_systems.append(_code_system(res))
        elif res["resourceType"] == "ValueSet":
            value_sets.append(_value_set(res))
    data = {"fhirVersion": "4.0.1", "resources": sds + code_systems + value_sets}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    raw = json.dumps(data, separators=(",", ":"), sort_keys=True).encode()
    OUT.write_bytes(gzip.compress(raw, 9, mtime=0))
    print(f"{OUT}: {len(sds)} StructureDefinitions, {len(code_systems)} CodeSystems, {len(value_sets)} ValueSets")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/fixtures/fhir-r4"))
