"""profiles/: snapshots of the Nictiz nl-core (zib2020) differentials and validation of the 271
nl-core examples against the profiles they declare; broken copies fail with the right message
and path. The nl-core package is read from the fixtures once per session (it is not shipped)."""

from __future__ import annotations

import copy
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from support import FIXTURES, NICTIZ_EXAMPLES

from hub.formats.outcome import Issue
from hub.formats.xml import parse_xml
from profiles.model import compile_profile
from profiles.packages import read_package
from profiles.service import ProfileService
from profiles.snapshot import snapshot, unmatched
from profiles.validator import validate_against

NL = "http://nictiz.nl/fhir/StructureDefinition/"
HUB = "https://hub.zorgregio-haaglanden.nl/fhir/StructureDefinition/"


@pytest.fixture(scope="session")
def nlcore() -> ProfileService:
    svc = ProfileService()
    svc.registry().add_all([r for _, r in read_package(FIXTURES / "nictiz-zib2020" / "profiles")])
    return svc


def example(name: str) -> dict[str, Any]:
    return parse_xml((NICTIZ_EXAMPLES / name).read_bytes())


def errors(issues: list[Issue]) -> list[tuple[str, str]]:
    return [(i.diagnostics, i.expression[0] if i.expression else "") for i in issues if i.severity == "error"]


# -- snapshots -------------------------------------------------------------------------------------


def test_snapshot_walks_the_base_chain_and_slices(nlcore: ProfileService) -> None:
    els = {e["id"]: e for e in snapshot(nlcore.registry(), NL + "nl-core-Patient")}
    # From zib-Patient (the base of nl-core-Patient): the BSN identifier slice and its pattern.
    assert els["Patient.identifier:bsn"]["patternIdentifier"] == {"system": "http://fhir.nl/fhir/NamingSystem/bsn"}
    # From R4 Patient, untouched elements keep their base cardinality.
    assert (els["Patient.link.other"]["min"], els["Patient.link.other"]["max"]) == (1, "1")
    # An extension slice unfolded from its extension definition: the url is fixed there.
    assert els["Patient.communication.extension:comment.url"]["fixedUri"] == NL + "ext-Comment"
    # Choice type slices keep one type each.
    assert [t["code"] for t in els["Patient.deceased[x]:deceasedDateTime"]["type"]] == ["dateTime"]
    # Slices come after their sliced element, in differential order.
    ids = list(els)
    assert ids.index("Patient.telecom") < ids.index("Patient.telecom:telephoneNumbers")


def test_every_differential_element_finds_its_place(nlcore: ProfileService) -> None:
    reg = nlcore.registry()
    urls = [u for u in reg.urls("StructureDefinition") if reg.origin.get(u) != "base"]
    assert len(urls) == 354 + 6  # nl-core and zib, and the hub's own
    assert {u: unmatched(reg, u) for u in urls if unmatched(reg, u)} == {}


def test_content_reference_elements_get_the_children_they_name(nlcore: ProfileService) -> None:
    compiled = compile_profile(nlcore.registry(), "Questionnaire")
    nested = compiled.by_id["Questionnaire.item.item"]
    assert nested.content_ref == "#Questionnaire.item"
    assert "linkId" in nested.children and nested.children["linkId"].min == 1
    q = {
        "resourceType": "Questionnaire",
        "status": "draft",
        "item": [{"linkId": "1", "type": "group", "item": [{"type": "string"}]}],
    }
    # The structural validator finds it too; the profile walk on its own must as well.
    assert errors(validate_against(nlcore.registry(), q, "Questionnaire")) == [
        ("Minimum required = 1, but only found 0", "Questionnaire.item[0].item[0].linkId")
    ]


# -- the examples ----------------------------------------------------------------------------------


def test_all_nlcore_examples_validate_without_errors(nlcore: ProfileService) -> None:
    files = sorted(NICTIZ_EXAMPLES.glob("*.xml"))
    assert len(files) == 271
    found_errors: list[tuple[str, str, str]] = []
    warnings: Counter[str] = Counter()
    checked = 0
    for f in files:
        res = parse_xml(f.read_bytes())
        declared = (res.get("meta") or {}).get("profile") or []
        checked += bool(declared)
        for i in nlcore.validate(res):
            if i.severity == "error":
                found_errors.append((f.name, i.diagnostics, ",".join(i.expression)))
            elif i.severity == "warning":
                warnings[_kind(i.diagnostics)] += 1
    print("\nnl-core examples: warnings by kind")
    for kind, n in sorted(warnings.items()):
        print(f"  {n:3d}  {kind}")
    assert found_errors == []
    assert checked == 271
    # The warnings, by kind (see the printed summary): codes of external code systems (SNOMED CT)
    # outside an enumerated value set, con-3 (a best-practice invariant of Condition), and the
    # one example profile the fixture package does not contain (nl-core-LivingSituation.HouseAdaption).
    assert warnings == {
        "code not in value set (external code system)": 13,
        "invariant con-3": 14,
        "profile not known": 3,
    }


def _kind(text: str) -> str:
    if text.startswith("The code"):
        return "code not in value set (external code system)"
    if text.startswith("Constraint failed: "):
        return "invariant " + text.split(":")[1].strip()
    if "is not known to the hub" in text:
        return "profile not known"
    return text


# -- broken copies ---------------------------------------------------------------------------------


def test_missing_required_element(nlcore: ProfileService) -> None:
    weight = example("nl-core-BodyWeight-01.xml")
    assert errors(nlcore.validate(weight)) == []
    broken = copy.deepcopy(weight)
    del broken["subject"]
    assert errors(nlcore.validate(broken)) == [("Minimum required = 1, but only found 0", "Observation.subject")]


def test_wrong_fixed_code(nlcore: ProfileService) -> None:
    broken = example("nl-core-BodyWeight-01.xml")
    broken["code"]["coding"][0]["code"] = "8302-2"  # body height, not body weight (29463-7)
    found = errors(nlcore.validate(broken))
    assert len(found) == 1
    text, path = found[0]
    assert path == "Observation.code"
    assert "does not match the pattern" in text and "29463-7" in text


def test_wrong_fixed_value_of_own_profile() -> None:
    task = _referral_task(intent="proposal")
    found = errors(ProfileService().validate(task))
    assert found == [("Value is 'proposal' but must be fixed to 'order'", "Task.intent")]


def test_bad_bsn(nlcore: ProfileService) -> None:
    broken = example("nl-core-Patient-01.xml")
    assert broken["identifier"][0]["system"] == "http://fhir.nl/fhir/NamingSystem/bsn"
    broken["identifier"][0]["value"] = "111222334"
    assert errors(nlcore.validate(broken)) == [
        ("'111222334' is not a valid BSN (9 digits passing the 11-proof)", "Patient.identifier[0].value")
    ]


def test_wrong_slice(nlcore: ProfileService) -> None:
    bp = example("nl-core-BloodPressure-01.xml")
    assert errors(nlcore.validate(bp)) == []
    systolic = next(c for c in bp["component"] if c["code"]["coding"][0]["code"] == "8480-6")
    broken = copy.deepcopy(bp)
    next(c for c in broken["component"] if c == systolic)["code"]["coding"][0]["code"] = "8480-0"
    assert ("Slice 'SystolicBP': minimum required = 1, but only found 0", "Observation.component") in errors(
        nlcore.validate(broken)
    )
    doubled = copy.deepcopy(bp)
    doubled["component"].append(copy.deepcopy(systolic))
    assert errors(nlcore.validate(doubled)) == [
        ("Slice 'SystolicBP': maximum allowed = 1, but found 2", "Observation.component")
    ]


def test_wrong_unit_in_sliced_component(nlcore: ProfileService) -> None:
    broken = example("nl-core-BloodPressure-01.xml")
    i, systolic = next((n, c) for n, c in enumerate(broken["component"]) if c["code"]["coding"][0]["code"] == "8480-6")
    systolic["valueQuantity"]["code"] = "kPa"
    found = errors(nlcore.validate(broken))
    assert len(found) == 1 and found[0][1] == f"Observation.component[{i}].value.ofType(Quantity)"


def test_required_binding_and_extension_definition(nlcore: ProfileService) -> None:
    patient = example("nl-core-Patient-01.xml")
    patient["gender"] = "vrouw"
    assert errors(nlcore.validate(patient)) == [
        (
            "The code vrouw is not in the value set http://hl7.org/fhir/ValueSet/administrative-gender|4.0.1 "
            "(required binding)",
            "Patient.gender",
        )
    ]
    # An extension is checked against its own definition, found by its url: ext-Comment wants a string.
    treatment = example("nl-core-TreatmentDirective2-01.xml")
    treatment["extension"] = [{"url": NL + "ext-Comment", "valueBoolean": True}]
    found = errors(nlcore.validate(treatment))
    assert ("Type Boolean is not allowed for value by the profile", "Consent.extension[0].valueBoolean") in found


def test_explicit_profile_and_unknown_declared_profile(nlcore: ProfileService) -> None:
    weight = example("nl-core-BodyWeight-01.xml")
    # Against another profile given explicitly: its pattern fails.
    found = errors(nlcore.validate(weight, [NL + "nl-core-BodyHeight"]))
    assert any(path == "Observation.code" for _, path in found)
    weight["meta"]["profile"] = ["http://example.org/StructureDefinition/unknown"]
    issues = nlcore.validate(weight)
    assert errors(issues) == []
    assert any(i.severity == "warning" and "is not known to the hub" in i.diagnostics for i in issues)


# -- the hub's own profiles ------------------------------------------------------------------------


def _referral_task(**fields: Any) -> dict[str, Any]:
    task: dict[str, Any] = {
        "resourceType": "Task",
        "meta": {"profile": [HUB + "hub-ReferralTask"]},
        "status": "requested",
        "intent": "order",
        "focus": {"reference": "ServiceRequest/ref-1"},
        "for": {"reference": "Patient/p1"},
        "authoredOn": "2026-11-23T10:00:00+01:00",
        "requester": {"reference": "PractitionerRole/gp-1"},
        "owner": {"reference": "Organization/seh"},
    }
    task.update(fields)
    return task


def test_own_profiles_are_loaded_by_default_and_check_their_shape() -> None:
    svc = ProfileService()
    assert svc.mode_for(HUB + "hub-ReferralTask") == "enforce"
    assert errors(svc.validate(_referral_task())) == []
    missing = _referral_task()
    del missing["focus"]
    assert errors(svc.validate(missing)) == [("Minimum required = 1, but only found 0", "Task.focus")]
    wrong_target = _referral_task(owner={"reference": "Patient/p1"})
    found = errors(svc.validate(wrong_target))
    assert len(found) == 1 and found[0][1] == "Task.owner" and "Patient is not allowed" in found[0][0]


def test_acp_profiles_accept_the_nictiz_examples(nlcore: ProfileService) -> None:
    td = example("nl-core-TreatmentDirective2-01.xml")
    assert errors(nlcore.validate(td, [HUB + "hub-ACP-TreatmentDirective"])) == []
    ad = example("nl-core-AdvanceDirective-01.xml")
    assert errors(nlcore.validate(ad, [HUB + "hub-ACP-AdvanceDirective"])) == []
    # A treatment directive is not an advance directive: scope and category slice differ.
    found = errors(nlcore.validate(td, [HUB + "hub-ACP-AdvanceDirective"]))
    assert {path for _, path in found} == {"Consent.scope", "Consent.category"}
    procedure = {
        "resourceType": "Procedure",
        "status": "completed",
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "713603004"}]},
        "subject": {"reference": "Patient/p1"},
    }
    assert errors(nlcore.validate(procedure, [HUB + "hub-ACP-Procedure"])) == []
    procedure["code"]["coding"][0]["code"] = "392238003"
    assert [p for _, p in errors(nlcore.validate(procedure, [HUB + "hub-ACP-Procedure"]))] == ["Procedure.code"]


def test_referral_profiles_accept_the_elz_examples() -> None:
    svc = ProfileService()
    elz = FIXTURES / "nictiz-elz" / "examples"
    task = parse_xml((elz / "hg-ReferralTask-01.xml").read_bytes())
    assert errors(svc.validate(task, [HUB + "hub-ReferralTask"])) == []
    for name in ("hg-ReferralServiceRequest-01.xml", "hg-ReferralServiceRequest-02.xml"):
        sr = parse_xml((elz / name).read_bytes())
        assert errors(svc.validate(sr, [HUB + "hub-ReferralServiceRequest"])) == []


def test_hub_consent_profile_accepts_the_mitz_consents() -> None:
    bundle = parse_xml((FIXTURES / "mitz" / "example-example_notification_bundle.xml").read_bytes())
    consents = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Consent"]
    svc = ProfileService()
    for consent in consents:
        # ppc-1 (policy or policyRule) is an R4 base invariant the Mitz notifications do not meet.
        assert [p for t, p in errors(svc.validate(consent, [HUB + "hub-Consent"])) if "ppc-1" not in t] == []
    wrong = copy.deepcopy(consents[0])
    wrong["scope"]["coding"][0]["code"] = "treatment"
    assert "Consent.scope" in [p for _, p in errors(svc.validate(wrong, [HUB + "hub-Consent"]))]


def test_package_folder_reader_reads_json_and_xml(tmp_path: Path) -> None:
    (tmp_path / "sd.json").write_text('{"resourceType": "ValueSet", "url": "http://example.org/vs", "status": "draft"}')
    (tmp_path / "package.json").write_text('{"name": "x"}')
    got = [r["resourceType"] for _, r in read_package(tmp_path)]
    assert got == ["ValueSet"]
    got = {r["resourceType"] for _, r in read_package(FIXTURES / "nictiz-elz" / "resources")}
    assert got == {"StructureDefinition"}


def test_reference_targets_resolved_in_a_bundle(nlcore: ProfileService) -> None:
    """hg-ReferralTask.focus may only point at an hg-ReferralServiceRequest: resolvable in the
    bundle, the target itself is checked against that profile; unresolvable, only its type."""
    elz = FIXTURES / "nictiz-elz"
    svc = ProfileService()
    svc.registry().add_all([r for _, r in read_package(FIXTURES / "nictiz-zib2020" / "profiles")])
    svc.registry().add_all([r for _, r in read_package(elz / "resources")])
    base = "http://example.org/fhir/"
    docs = {
        n: parse_xml((elz / "examples" / f"{n}.xml").read_bytes())
        for n in ("hg-ReferralTask-01", "hg-ReferralServiceRequest-01")
    }
    task, sr = docs["hg-ReferralTask-01"], docs["hg-ReferralServiceRequest-01"]
    assert errors(svc.validate(task)) == []  # the ServiceRequest is not at hand: the type is right

    def bundle(service_request: dict[str, Any]) -> dict[str, Any]:
        return {
            "resourceType": "Bundle",
            "type": "collection",
            "entry": [
                {"fullUrl": base + "Task/" + task["id"], "resource": task},
                {"fullUrl": base + "ServiceRequest/" + sr["id"], "resource": service_request},
            ],
        }

    assert errors(svc.validate(bundle(sr))) == []
    broken = copy.deepcopy(sr)
    del broken["authoredOn"]  # required by hg-ReferralServiceRequest
    found = errors(svc.validate(bundle(broken)))
    assert (
        "Minimum required = 1, but only found 0",
        "Bundle.entry[1].resource.ofType(ServiceRequest).authoredOn",
    ) in found
    assert any(
        "does not conform to any of the profiles" in text and path == "Bundle.entry[0].resource.ofType(Task).focus"
        for text, path in found
    )
    wrong_type = copy.deepcopy(task)
    wrong_type["focus"] = {"reference": "Observation/x"}
    assert any("Observation is not allowed" in t for t, _ in errors(svc.validate(wrong_type)))
