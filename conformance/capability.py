"""The CapabilityStatement, generated from what the running hub really implements: the resource
types the structure knows, the interactions the router dispatches, the search parameters in the
registry (including custom ones added at run time) and the operations registered."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hub import __version__
from hub.api.operations import REGISTRY as OPERATIONS
from hub.fhirmodel.structure import structure
from hub.search.registry import COMPARTMENTS
from hub.store.repository import format_instant, utcnow

TYPE_INTERACTIONS = [
    "read", "vread", "update", "patch", "delete", "history-instance", "history-type", "create", "search-type",
]  # fmt: skip
SYSTEM_INTERACTIONS = ["transaction", "batch", "search-system", "history-system"]
# Types served by their own module state what they really support (AuditEvent: hub/audit/api.py).
OVERRIDES: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {}


def build(services: Any) -> dict[str, Any]:
    registry = services.search_params
    resources = []
    for rt in sorted(structure().resource_types):
        params = [
            {"name": p.code, "definition": p.url, "type": p.type}
            for p in sorted(registry.for_type(rt), key=lambda p: p.code)
            if (p.type != "special" or p.indexed) and p.url and p.code != "_query"  # no named queries here
        ]
        ops = [
            {"name": op.name, "definition": op.definition or f"urn:hub:operation:{op.name}"}
            for op in OPERATIONS.values()
            if (op.type_level or op.instance) and (not op.resource_types or rt in op.resource_types)
        ]
        entry: dict[str, Any] = {
            "type": rt,
            "interaction": [{"code": c} for c in TYPE_INTERACTIONS],
            "versioning": "versioned-update",
            "readHistory": True,
            "updateCreate": True,
            "conditionalCreate": True,
            "conditionalRead": "full-support",
            "conditionalUpdate": True,
            "conditionalDelete": "single",
            "referencePolicy": ["literal", "logical", "local"],
            "searchInclude": services.search.includes_for(rt),
            "searchRevInclude": services.search.revincludes_for(rt),
            "searchParam": params,
        }
        if ops:
            entry["operation"] = ops
        own_profiles = services.profiles.own_profiles(rt)  # profiles/definitions, enforced on write
        if own_profiles:
            entry["supportedProfile"] = own_profiles
        resources.append(OVERRIDES[rt](entry) if rt in OVERRIDES else entry)
    system_ops = [
        {"name": op.name, "definition": op.definition or f"urn:hub:operation:{op.name}"}
        for op in OPERATIONS.values()
        if op.system
    ]
    rest: dict[str, Any] = {
        "mode": "server",
        "documentation": (
            "Regional FHIR exchange hub for Zoetermeer / Haaglanden. Searches give Bundle.total when"
            " asked (_total=accurate or estimate, _summary=count, _count=0) or when the first page"
            " holds every match; otherwise follow the next links."
        ),
        "resource": resources,
        "interaction": [{"code": c} for c in SYSTEM_INTERACTIONS],
        "searchParam": [
            {"name": "_id", "type": "token", "definition": "http://hl7.org/fhir/SearchParameter/Resource-id"},
            {
                "name": "_lastUpdated",
                "type": "date",
                "definition": "http://hl7.org/fhir/SearchParameter/Resource-lastUpdated",
            },
            {"name": "_type", "type": "token", "definition": "http://hl7.org/fhir/SearchParameter/type"},
            {
                "name": "_filter",
                "type": "special",
                "documentation": "R4 search_filter.html: and / or (left to right) / not, chains, every"
                " operator for the types it applies to; no filters on a path (name[filter].name)",
            },
            {
                "name": "_list",
                "type": "special",
                "documentation": "the resources a List (by id) has as entries; the functional lists"
                " $current-problems, $current-allergies and $current-medications (R4 list.html)",
            },
        ],
    }
    if system_ops:
        rest["operation"] = system_ops
    rest["compartment"] = [f"http://hl7.org/fhir/CompartmentDefinition/{c.lower()}" for c in COMPARTMENTS]
    return {
        "resourceType": "CapabilityStatement",
        "id": "hub",
        "name": "HaaglandenFhirHub",
        "title": "Haaglanden regional FHIR exchange hub",
        "status": "active",
        "date": format_instant(utcnow()),
        "publisher": "Zorgregio Zoetermeer / Haaglanden",
        "kind": "instance",
        "software": {"name": "haaglanden-fhir-hub", "version": __version__},
        "implementation": {"description": "Regional FHIR R4 hub (facade, adapters, workflows, consent, audit)"},
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "application/fhir+xml", "json", "xml"],
        "patchFormat": ["application/json-patch+json", "application/fhir+json", "application/fhir+xml"],
        "rest": [rest],
    }
