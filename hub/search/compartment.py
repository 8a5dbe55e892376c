"""The Patient compartment: which patients a resource belongs to (http://hl7.org/fhir/R4/compartmentdefinition-patient.html).

The compartment definition names, per resource type, the search parameters that link it to a
patient (Observation: subject, performer). A Patient is in its own compartment (and in that of the
patients it links to). The store keeps the first id as the row's `patient_id`.
"""

from __future__ import annotations

from typing import Any

from hub.search.fhirpath import parse_reference
from hub.search.registry import Registry, default_registry


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
