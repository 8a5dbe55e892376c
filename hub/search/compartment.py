"""The Patient compartment: which patients a resource belongs to (http://hl7.org/fhir/R4/compartmentdefinition-patient.html).

The compartment definition names, per resource type, the search parameters that link it to a
patient (Observation: subject, performer). A Patient is in its own compartment (and in that of the
patients it links to). The store keeps the first id as the row's `patient_id`.
"""

from __future__ import annotations

from typing import Any

from hub.search.extract import row_scope
from hub.search.fhirpath import parse_reference
from hub.search.registry import Registry, default_registry


def index_params(registry: Registry, owner_type: str, resource_type: str) -> tuple[str, ...]:
    """The parameters whose idx_reference rows put a `resource_type` in an `owner_type`'s compartment,
    for a query that also asks for target_type = owner_type (every compartment query does). A derived
    reference parameter (Observation `patient` = `subject` where Patient) reads its source's rows;
    that query's own condition restricts them as the derivation does."""
    out: list[str] = []
    for code in registry.compartment_params(owner_type, resource_type):
        codes, kind = row_scope(resource_type, code, registry)
        if kind in (None, owner_type):  # (a parameter derived for another type never points at the owner)
            out.extend(c for c in codes if c not in out)
    return tuple(out)


def patient_ids(
    resource: dict[str, Any], registry: Registry | None = None, local_bases: tuple[str, ...] = ()
) -> list[str]:
    """Ids of the Patients whose compartment `resource` is in, in definition order, without repeats.

    Only references to `Patient/[id]` count (relative, optionally versioned); an absolute reference
    counts when it starts with one of `local_bases` (e.g. "https://hub.example.org/fhir/").
    """
    reg = registry or default_registry()
    rt = resource.get("resourceType", "")
    out: list[str] = []
    if rt == "Patient" and isinstance(resource.get("id"), str):
        out.append(resource["id"])
    for code in reg.compartment_params("Patient", rt):
        param = reg.get(rt, code)
        evaluator = param.extractor(rt if rt in param.base else param.base[0]) if param else None
        if evaluator is None:
            continue
        for value, typ in evaluator(resource):
            pid = _patient_id(value, typ, local_bases)
            if pid is not None and pid not in out:
                out.append(pid)
    return out


def _patient_id(value: Any, typ: str, local_bases: tuple[str, ...]) -> str | None:
    ref = value.get("reference") if typ == "Reference" and type(value) is dict else None
    if not isinstance(ref, str):
        return None
    if "://" in ref:
        base = next((b for b in local_bases if ref.startswith(b)), None)
        if base is None:
            return None
        ref = ref[len(base) :].lstrip("/")
    parsed = parse_reference(ref)
    if parsed is None or parsed[0] != "Patient" or ref.split("/", 1)[0] != "Patient":
        return None
    return parsed[1]
