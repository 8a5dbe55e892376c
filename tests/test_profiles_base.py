"""Base-R4 validation (structure + the base StructureDefinitions' invariants and bindings) agrees
with the HL7 reference validator on cases built from real resources.

What the HL7 validator (validator_cli, R4) reports for each case, from the specification:
- a missing required element (Observation.status 1..1): error at `Observation.status`;
- a repeated single element (Patient.gender 0..1 given as an array): error at `Patient.gender`;
- an unknown element: error ("Unrecognized property") at that property;
- a primitive of the wrong format (a date that does not exist, a dateTime without its time zone
  when it has a time): error at the element;
- a broken invariant: error "Constraint failed: <key>" at the element carrying it, e.g. obs-6
  (dataAbsentReason only without a value), per-1 (a Period's start <= end), pat-1 (a contact has
  details or an organisation), ref-1 (a local reference names a contained resource);
- a best-practice invariant (dom-6, a resource should have narrative): a warning, not an error;
- a code outside a required binding of the base (Observation.status): error.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from support import synthea_resources

from hub.formats.outcome import Issue
from profiles.service import ProfileService


@pytest.fixture(scope="module")
def base() -> ProfileService:
    return ProfileService()


@pytest.fixture(scope="module")
def synthea() -> dict[str, dict[str, Any]]:
    """One real resource per type from the first Synthea patient."""
    found: dict[str, dict[str, Any]] = {}
    for res in synthea_resources(limit_files=1):
        rt = res["resourceType"]
        if rt == "Observation" and "valueQuantity" not in res:
            continue
        found.setdefault(rt, res)
    return found


def outcome(issues: list[Issue], severity: str = "error") -> list[tuple[str, str]]:
    return [(i.code, i.expression[0] if i.expression else "") for i in issues if i.severity == severity]


def _errors_text(issues: list[Issue]) -> list[str]:
    return [i.diagnostics for i in issues if i.severity == "error"]


def test_real_resources_are_valid(base: ProfileService, synthea: dict[str, dict[str, Any]]) -> None:
    for rt in ("Patient", "Observation", "Encounter", "Condition"):
        assert outcome(base.validate(synthea[rt])) == [], rt


def test_invalid_cardinality(base: ProfileService, synthea: dict[str, dict[str, Any]]) -> None:
    obs = copy.deepcopy(synthea["Observation"])
    del obs["status"]
    assert outcome(base.validate(obs)) == [("required", "Observation.status")]
    pat = copy.deepcopy(synthea["Patient"])
    pat["gender"] = [pat["gender"]]
    assert outcome(base.validate(pat)) == [("structure", "Patient.gender")]


def test_unknown_element(base: ProfileService, synthea: dict[str, dict[str, Any]]) -> None:
    pat = copy.deepcopy(synthea["Patient"])
    pat["favouriteColour"] = "blue"
    assert outcome(base.validate(pat)) == [("structure", "Patient.favouriteColour")]


def test_wrong_primitive_format(base: ProfileService, synthea: dict[str, dict[str, Any]]) -> None:
    pat = copy.deepcopy(synthea["Patient"])
    pat["birthDate"] = "1950-02-30"
    assert outcome(base.validate(pat)) == [("value", "Patient.birthDate")]
    obs = copy.deepcopy(synthea["Observation"])
    obs["effectiveDateTime"] = "2020-01-01T10:00:00"  # a time needs a zone
    assert outcome(base.validate(obs)) == [("value", "Observation.effective.ofType(dateTime)")]


def test_broken_invariants(base: ProfileService, synthea: dict[str, dict[str, Any]]) -> None:
    obs = copy.deepcopy(synthea["Observation"])
    obs["dataAbsentReason"] = {"text": "not measured"}
    issues = base.validate(obs)
    assert outcome(issues) == [("invariant", "Observation")]
    assert _errors_text(issues)[0].startswith("Constraint failed: obs-6")
    enc = copy.deepcopy(synthea["Encounter"])
    enc["period"] = {"start": "2020-01-02T00:00:00Z", "end": "2020-01-01T00:00:00Z"}
    issues = base.validate(enc)
    assert outcome(issues) == [("invariant", "Encounter.period")]
    assert _errors_text(issues)[0].startswith("Constraint failed: per-1")
    pat = copy.deepcopy(synthea["Patient"])
    pat["contact"] = [{"gender": "female"}]
    issues = base.validate(pat)
    assert outcome(issues) == [("invariant", "Patient.contact[0]")]
    assert _errors_text(issues)[0].startswith("Constraint failed: pat-1")
    obs = copy.deepcopy(synthea["Observation"])
    obs["subject"] = {"reference": "#nowhere"}
    assert ("invariant", "Observation.subject") in outcome(base.validate(obs))


def test_best_practice_invariant_is_a_warning(base: ProfileService, synthea: dict[str, dict[str, Any]]) -> None:
    obs = copy.deepcopy(synthea["Observation"])
    obs.pop("text", None)
    issues = base.validate(obs)
    assert outcome(issues) == []
    assert ("invariant", "Observation") in outcome(issues, "warning")
    assert any(i.diagnostics.startswith("Constraint failed: dom-6") for i in issues)


def test_required_binding_of_the_base(base: ProfileService, synthea: dict[str, dict[str, Any]]) -> None:
    obs = copy.deepcopy(synthea["Observation"])
    obs["status"] = "done"
    assert outcome(base.validate(obs)) == [("code-invalid", "Observation.status")]


# -- invariant evaluation -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "value", "trivial"),
    [
        ("value.empty() or system.exists()", {"system": "phone"}, True),  # no value
        ("value.empty() or system.exists()", {"value": "1", "system": "phone"}, True),  # system present
        ("value.empty() or system.exists()", {"value": "1"}, False),  # the engine must decide (false)
        ("dataAbsentReason.empty() or value.empty()", {"valueQuantity": {"value": 1}}, True),
        ("dataAbsentReason.empty() or value.empty()", {"valueQuantity": {}, "dataAbsentReason": {}}, False),
        ("start.hasValue().not() or end.hasValue().not() or (start <= end)", {"start": "2020"}, True),
        ("start.hasValue().not() or end.hasValue().not() or (start <= end)", {"start": "2021", "end": "2020"}, False),
        ("(family.exists() or given.exists()) implies text.hasValue()", {"use": "official"}, True),
        ("(family.exists() or given.exists()) implies text.hasValue()", {"family": "Jansen"}, False),
        ("(family.exists() or given.exists()) implies text.hasValue()", {"family": "J", "text": "J"}, True),
        ("family.extension('http://x/own-prefix').empty().not() implies family.exists()", {"family": "J"}, True),
        (
            "family.extension('http://x/own-prefix').empty().not() implies family.count() = 2",
            {"family": "J", "_family": {"extension": [{"url": "http://x/own-prefix", "valueString": "van"}]}},
            False,
        ),
        ("name.exists() or telecom.exists()", {"gender": "male"}, False),
        ("a = b or c.empty()", {"a": 1}, True),
        ("children().count() > 1 or x.empty()", {"x": 1}, False),
    ],
)
def test_invariant_guards_only_claim_what_is_certain(expression: str, value: dict[str, Any], trivial: bool) -> None:
    from profiles.invariants import trivially_holds

    assert trivially_holds(expression, value) is trivial


def test_compiled_subset_and_fhirpathpy_agree(base: ProfileService, synthea: dict[str, dict[str, Any]]) -> None:
    """The base invariants give the same verdict through the compiled subset and through fhirpathpy."""
    from profiles import invariants
    from profiles.model import compile_profile

    checked = 0
    for rt in ("Observation", "Patient", "Encounter", "Condition"):
        res = copy.deepcopy(synthea[rt])
        root = compile_profile(base.registry(), rt).root
        for key, _, _, expression in root.constraints:
            if key in invariants.NATIVE or key in invariants.STRUCTURAL:
                continue
            for variant in (res, {**res, "dataAbsentReason": {"text": "x"}}):
                ev = invariants._compiled_subset(expression, rt, rt)
                slow = invariants._by_fhirpathpy(expression, variant, variant, None)
                if ev is None or slow is None:
                    continue
                fast = invariants._verdict([v for v, _ in ev.on([(variant, rt)], (variant, rt))])
                assert fast == slow, (key, expression)
                checked += 1
    assert checked >= 4


def test_member_of_uses_local_expansions(base: ProfileService) -> None:
    from profiles import invariants

    expr = "gender.memberOf('http://hl7.org/fhir/ValueSet/administrative-gender')"
    token = invariants.TERMINOLOGY.set(base.registry())
    try:
        for gender, verdict in (("male", True), ("vrouw", False)):
            res = {"resourceType": "Patient", "gender": gender}
            assert invariants.holds("test-1", expr, res, res, "Patient") is verdict
        unknown = "code.memberOf('http://example.org/ValueSet/not-loaded')"
        obs = {"resourceType": "Observation", "code": {"coding": [{"system": "http://loinc.org", "code": "1-8"}]}}
        assert invariants.holds("test-2", unknown, obs, obs, "Observation") is True  # cannot tell: holds
    finally:
        invariants.TERMINOLOGY.reset(token)


def test_extensible_binding_is_a_warning(base: ProfileService, synthea: dict[str, dict[str, Any]]) -> None:
    obs = copy.deepcopy(synthea["Observation"])
    del obs["valueQuantity"]
    dar = "http://terminology.hl7.org/CodeSystem/data-absent-reason"
    obs["dataAbsentReason"] = {"coding": [{"system": dar, "code": "asked-unknown"}]}
    assert ("code-invalid", "Observation.dataAbsentReason") not in outcome(base.validate(obs), "warning")
    obs["dataAbsentReason"] = {"coding": [{"system": dar, "code": "no-such-reason"}]}
    issues = base.validate(obs)
    assert outcome(issues) == []
    assert ("code-invalid", "Observation.dataAbsentReason") in outcome(issues, "warning")
    # A SNOMED CT code (no local CodeSystem) outside a required value set: a warning, not an error.
    cond = copy.deepcopy(synthea["Condition"])
    cond["clinicalStatus"] = {"coding": [{"system": "http://snomed.info/sct", "code": "55561003"}]}
    issues = base.validate(cond)
    assert outcome(issues) == []
    assert ("code-invalid", "Condition.clinicalStatus") in outcome(issues, "warning")
