"""profiles/: slicing discriminators (value, pattern, type, exists, profile), closed slicing, type
restrictions and extensions, on a small differential profile written for the test."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from hub.formats.outcome import Issue
from profiles.registry import Registry
from profiles.validator import validate_against

URL = "http://example.org/fhir/StructureDefinition/test-observation"
EXT = "http://example.org/fhir/StructureDefinition/test-device-note"
CAT = "http://terminology.hl7.org/CodeSystem/observation-category"


def _el(elem_id: str, **kw: Any) -> dict[str, Any]:
    path = ".".join(p.split(":")[0] for p in elem_id.split("."))
    out: dict[str, Any] = {"id": elem_id, "path": path}
    last = elem_id.split(".")[-1]
    if ":" in last:
        out["sliceName"] = last.split(":")[1]
    out.update(kw)
    return out


PROFILE = {
    "resourceType": "StructureDefinition",
    "url": URL,
    "name": "TestObservation",
    "status": "draft",
    "kind": "resource",
    "abstract": False,
    "type": "Observation",
    "baseDefinition": "http://hl7.org/fhir/StructureDefinition/Observation",
    "derivation": "constraint",
    "differential": {
        "element": [
            _el("Observation"),
            _el("Observation.extension:deviceNote", type=[{"code": "Extension", "profile": [EXT]}], max="1"),
            _el(
                "Observation.identifier",
                slicing={"discriminator": [{"type": "exists", "path": "system"}], "rules": "open"},
            ),
            _el("Observation.identifier:withSystem", max="1"),
            _el("Observation.identifier:withSystem.system", min=1),
            _el("Observation.identifier:local"),
            _el("Observation.identifier:local.system", max="0"),
            _el(
                "Observation.category",
                slicing={"discriminator": [{"type": "pattern", "path": "$this"}], "rules": "closed"},
            ),
            _el(
                "Observation.category:vital",
                min=1,
                patternCodeableConcept={"coding": [{"system": CAT, "code": "vital-signs"}]},
            ),
            _el("Observation.value[x]", type=[{"code": "Quantity"}, {"code": "string"}]),
            _el("Observation.value[x]:valueQuantity", type=[{"code": "Quantity"}]),
            _el("Observation.value[x]:valueQuantity.system", fixedUri="http://unitsofmeasure.org"),
            _el(
                "Observation.performer",
                slicing={"discriminator": [{"type": "type", "path": "resolve()"}], "rules": "open"},
            ),
            _el(
                "Observation.performer:organisation",
                max="1",
                type=[{"code": "Reference", "targetProfile": ["http://hl7.org/fhir/StructureDefinition/Organization"]}],
            ),
        ]
    },
}

EXTENSION = {
    "resourceType": "StructureDefinition",
    "url": EXT,
    "name": "TestDeviceNote",
    "status": "draft",
    "kind": "complex-type",
    "abstract": False,
    "type": "Extension",
    "baseDefinition": "http://hl7.org/fhir/StructureDefinition/Extension",
    "derivation": "constraint",
    "differential": {
        "element": [
            _el("Extension"),
            _el("Extension.url", fixedUri=EXT),
            _el("Extension.value[x]", min=1, type=[{"code": "string"}]),
        ]
    },
}


@pytest.fixture(scope="module")
def registry() -> Registry:
    reg = Registry()
    reg.add_all([PROFILE, EXTENSION])
    return reg


def good() -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "extension": [{"url": EXT, "valueString": "cuff replaced"}],
        "identifier": [{"system": "urn:ietf:rfc:3986", "value": "urn:uuid:1"}, {"value": "local-7"}],
        "category": [{"coding": [{"system": CAT, "code": "vital-signs"}]}],
        "code": {"text": "pulse"},
        "valueQuantity": {"value": 60, "unit": "/min", "system": "http://unitsofmeasure.org", "code": "/min"},
        "performer": [{"reference": "Organization/o1"}, {"reference": "Practitioner/p1"}],
    }


def errors(issues: list[Issue]) -> list[tuple[str, str]]:
    return [(i.diagnostics, i.expression[0] if i.expression else "") for i in issues if i.severity == "error"]


def test_the_good_one_is_valid(registry: Registry) -> None:
    assert errors(validate_against(registry, good(), URL)) == []


def test_exists_discriminator(registry: Registry) -> None:
    res = good()
    res["identifier"].append({"system": "urn:ietf:rfc:3986", "value": "urn:uuid:2"})
    assert errors(validate_against(registry, res, URL)) == [
        ("Slice 'withSystem': maximum allowed = 1, but found 2", "Observation.identifier")
    ]


def test_closed_pattern_slicing(registry: Registry) -> None:
    res = good()
    res["category"].append({"coding": [{"system": CAT, "code": "laboratory"}]})
    found = errors(validate_against(registry, res, URL))
    assert len(found) == 1 and found[0][1] == "Observation.category[1]"
    assert "does not match any known slice" in found[0][0]
    res["category"] = res["category"][1:]
    assert ("Slice 'vital': minimum required = 1, but only found 0", "Observation.category") in errors(
        validate_against(registry, res, URL)
    )


def test_type_restriction_and_type_slice(registry: Registry) -> None:
    res = good()
    del res["valueQuantity"]
    res["valueBoolean"] = True
    assert errors(validate_against(registry, res, URL)) == [
        ("Type Boolean is not allowed for value by the profile", "Observation.valueBoolean")
    ]
    res = good()
    res["valueQuantity"]["system"] = "http://example.org/units"
    assert errors(validate_against(registry, res, URL)) == [
        (
            "Value is 'http://example.org/units' but must be fixed to 'http://unitsofmeasure.org'",
            "Observation.value.ofType(Quantity).system",
        )
    ]
    res = good()
    del res["valueQuantity"]
    res["valueString"] = "regular"
    assert errors(validate_against(registry, res, URL)) == []


def test_type_discriminator_through_resolve(registry: Registry) -> None:
    res = good()
    res["performer"].append({"reference": "Organization/o2"})
    assert errors(validate_against(registry, res, URL)) == [
        ("Slice 'organisation': maximum allowed = 1, but found 2", "Observation.performer")
    ]


def test_extension_checked_against_its_definition(registry: Registry) -> None:
    res = good()
    res["extension"] = [{"url": EXT, "valueBoolean": True}]
    assert errors(validate_against(registry, res, URL)) == [
        ("Type Boolean is not allowed for value by the profile", "Observation.extension[0].valueBoolean"),
        ("Minimum required = 1, but only found 0", "Observation.extension[0].value"),
    ]
    twice = good()
    twice["extension"].append(copy.deepcopy(twice["extension"][0]))
    assert errors(validate_against(registry, twice, URL)) == [
        ("Slice 'deviceNote': maximum allowed = 1, but found 2", "Observation.extension")
    ]
    # An extension in no slice is still checked against its own definition when the hub knows it.
    on_code = good()
    on_code["code"]["extension"] = [{"url": EXT}]
    assert errors(validate_against(registry, on_code, URL)) == [
        ("Minimum required = 1, but only found 0", "Observation.code.extension[0].value")
    ]
