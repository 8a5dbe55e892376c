"""hub.demo: the fictitious Zoetermeer / Haaglanden demo region as one transaction Bundle.

Checks the bundle's shape (PUT entries, resolvable references), the Dutch identifiers (BSN 11-proof,
URA / AGB / UZI), that the codes come from the nl-core (zib2020) code lists in the fixtures, and that
every resource is valid R4: fhir.resources models, the hub's own structural validator, and the R4
FHIRPath invariants.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterator
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import fhirpathpy
import orjson
import pytest
from fhir.resources.R4B import get_fhir_model_class
from fhirpathpy.models import models
from support import FIXTURES

from hub.demo import DEMO_TAG, bsn_is_valid, demo_bundle
from hub.demo.region import dt
from hub.fhirmodel.structure import structure

if TYPE_CHECKING:
    from fastapi.testclient import TestClient

NICTIZ = FIXTURES / "nictiz-zib2020"
ZIB_TERMINOLOGY = NICTIZ / "profiles" / "zib" / "terminology"
FHIR_NS = {"f": "http://hl7.org/fhir"}

BSN = "http://fhir.nl/fhir/NamingSystem/bsn"
URA = "http://fhir.nl/fhir/NamingSystem/ura"
AGB = "http://fhir.nl/fhir/NamingSystem/agb-z"
UZI = "http://fhir.nl/fhir/NamingSystem/uzi-nr-pers"
SNOMED = "http://snomed.info/sct"

BUNDLE = demo_bundle()
RESOURCES: list[dict[str, Any]] = [e["resource"] for e in BUNDLE["entry"]]
BY_KEY = {f"{r['resourceType']}/{r['id']}": r for r in RESOURCES}


def of_type(rtype: str) -> list[dict[str, Any]]:
    return [r for r in RESOURCES if r["resourceType"] == rtype]


def idents(resource: dict[str, Any], system: str) -> list[str]:
    return [i["value"] for i in resource.get("identifier", []) if i.get("system") == system]


def codings(node: Any) -> Iterator[dict[str, Any]]:
    """Every Coding-shaped object (system + code) anywhere in `node`."""
    if isinstance(node, dict):
        if isinstance(node.get("system"), str) and isinstance(node.get("code"), str):
            yield node
        for value in node.values():
            yield from codings(value)
    elif isinstance(node, list):
        for value in node:
            yield from codings(value)


def references(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        if isinstance(node.get("reference"), str):
            yield node
        for value in node.values():
            yield from references(value)
    elif isinstance(node, list):
        for value in node:
            yield from references(value)


def refers_to(resource: dict[str, Any], element: str) -> str:
    return str(resource[element]["reference"])


# --- the bundle ---------------------------------------------------------------------------------


def test_bundle_is_a_transaction_of_puts_with_stable_ids() -> None:
    assert BUNDLE["resourceType"] == "Bundle"
    assert BUNDLE["type"] == "transaction"
    keys = []
    for entry in BUNDLE["entry"]:
        resource = entry["resource"]
        assert entry["request"]["method"] == "PUT"
        assert entry["request"]["url"] == f"{resource['resourceType']}/{resource['id']}"
        assert re.fullmatch(r"demo-[a-z0-9\-]{1,59}", resource["id"]), resource["id"]
        keys.append(entry["request"]["url"])
    assert len(keys) == len(set(keys)), [k for k, n in Counter(keys).items() if n > 1]


def test_demo_bundle_is_deterministic_and_fresh() -> None:
    again = demo_bundle()
    assert again == BUNDLE
    again["entry"][0]["resource"]["name"] = "changed"
    assert demo_bundle() == BUNDLE


def test_every_resource_is_tagged_as_test_data() -> None:
    for resource in RESOURCES:
        assert DEMO_TAG in resource["meta"]["tag"], resource["id"]


def test_every_reference_resolves_inside_the_bundle() -> None:
    seen = 0
    for resource in RESOURCES:
        for ref in references(resource):
            target = ref["reference"]
            assert re.fullmatch(r"[A-Z][A-Za-z]+/demo-[a-z0-9\-]+", target), f"{resource['id']}: {target}"
            assert target in BY_KEY, f"{resource['id']} refers to {target}, which is not in the bundle"
            assert ref.get("type", target.split("/")[0]) == target.split("/")[0]
            seen += 1
    assert seen > 200


def test_every_resource_type_of_the_region_is_present() -> None:
    counts = Counter(r["resourceType"] for r in RESOURCES)
    for rtype in (
        "Organization", "Endpoint", "Location", "Practitioner", "PractitionerRole", "Patient", "RelatedPerson",
        "Condition", "AllergyIntolerance", "Medication", "MedicationRequest", "MedicationStatement",
        "Observation", "Encounter", "Consent",
    ):  # fmt: skip
        assert counts[rtype] >= 1, rtype
    assert 6 <= counts["Patient"] <= 10


# --- Dutch identifiers ------------------------------------------------------------------------------


@pytest.mark.parametrize("bsn", ["999911120", "999909587", "111222333", "999951750", "999937959"])
def test_bsn_11_proof_accepts_test_numbers(bsn: str) -> None:
    assert bsn_is_valid(bsn)


@pytest.mark.parametrize("bsn", ["999911121", "99991112", "9999111200", "abcdefghi", "", "000000000", "123456789"])
def test_bsn_11_proof_rejects_others(bsn: str) -> None:
    assert not bsn_is_valid(bsn)


def _eleven_proof(bsn: str) -> bool:
    """An independent statement of the 11-proof, to check the implementation against."""
    weights = [9, 8, 7, 6, 5, 4, 3, 2, -1]
    return len(bsn) == 9 and bsn.isdigit() and sum(int(d) * w for d, w in zip(bsn, weights, strict=True)) % 11 == 0


def test_every_patient_has_one_valid_test_bsn() -> None:
    bsns = []
    for patient in of_type("Patient"):
        values = idents(patient, BSN)
        assert len(values) == 1, patient["id"]
        bsn = values[0]
        assert bsn.startswith("9999"), bsn  # the test range
        assert bsn_is_valid(bsn) and _eleven_proof(bsn), bsn
        bsns.append(bsn)
    assert len(bsns) == len(set(bsns))


def test_organisations_have_ura_and_agb() -> None:
    seen: list[str] = []
    for org in of_type("Organization"):
        ura, agb = idents(org, URA), idents(org, AGB)
        assert len(ura) == 1 and len(agb) == 1, org["id"]
        for value in ura + agb:
            assert re.fullmatch(r"999\d{5}", value), f"{org['id']}: {value} is not an obvious 8-digit test number"
        seen += ura + agb
    assert len(seen) == len(set(seen))


def test_practitioners_have_uzi_and_agb() -> None:
    seen: list[str] = []
    for practitioner in of_type("Practitioner"):
        uzi, agb = idents(practitioner, UZI), idents(practitioner, AGB)
        assert len(uzi) == 1 and len(agb) == 1, practitioner["id"]
        assert re.fullmatch(r"999\d{6}", uzi[0]), uzi
        assert re.fullmatch(r"999\d{5}", agb[0]), agb
        seen += uzi + agb
    assert len(seen) == len(set(seen))


# --- the region's shape -------------------------------------------------------------------------------


def _org_types(org: dict[str, Any]) -> set[str]:
    return {c["code"] for t in org.get("type", []) for c in t.get("coding", [])}


def test_the_care_providers_of_the_region() -> None:
    kinds = Counter(code for org in of_type("Organization") for code in _org_types(org))
    assert kinds["V6"] == 1  # hospital
    assert kinds["N6"] == 1  # huisartsenpost
    assert kinds["Z3"] == 2  # huisartspraktijken
    assert kinds["X3"] == 1  # VVT
    assert kinds["J8"] == 1  # openbare apotheek
    for org in of_type("Organization"):
        assert org["name"].endswith("(demo)")
        assert org["address"][0]["city"] in {"Zoetermeer", "Den Haag"}


def test_endpoints_belong_to_their_organisations() -> None:
    systems: Counter[tuple[str, ...]] = Counter()
    for endpoint in of_type("Endpoint"):
        owner = BY_KEY[refers_to(endpoint, "managingOrganization")]
        assert f"Endpoint/{endpoint['id']}" in {e["reference"] for e in owner.get("endpoint", [])}
        system = endpoint["name"].split(" ")[0]
        systems[(system, endpoint["connectionType"]["code"], *sorted(_org_types(owner)))] += 1
    assert systems[("HIX", "hl7-fhir-rest", "V6")] == 1
    assert systems[("HIX", "hl7v2-mllp", "V6")] == 1
    assert systems[("Hapicom", "hl7-fhir-rest", "N6")] == 1
    assert systems[("HIS", "hl7-fhir-rest", "0100", "Z3")] == 2
    for org in of_type("Organization"):
        for ref in org.get("endpoint", []):
            assert refers_to(BY_KEY[ref["reference"]], "managingOrganization") == f"Organization/{org['id']}"


def test_seh_is_a_location_of_the_hospital() -> None:
    seh = [loc for loc in of_type("Location") if any(c["code"] == "ER" for c in codings(loc.get("type")))]
    assert len(seh) == 1
    assert "V6" in _org_types(BY_KEY[refers_to(seh[0], "managingOrganization")])


def test_practitioner_roles() -> None:
    specialties: Counter[tuple[str, tuple[str, ...]]] = Counter()
    for role in of_type("PractitionerRole"):
        assert refers_to(role, "practitioner") in BY_KEY and refers_to(role, "organization") in BY_KEY
        (specialty,) = role["specialty"]
        (coding,) = specialty["coding"]
        assert coding["system"] == "http://fhir.nl/fhir/NamingSystem/uzi-rolcode"
        specialties[(coding["code"], tuple(sorted(_org_types(BY_KEY[refers_to(role, "organization")]))))] += 1
    assert specialties[("01.071", ("V6",))] == 1  # SEH-arts
    assert specialties[("01.015", ("0100", "Z3"))] == 2  # two huisartsen in their practices
    assert specialties[("30.000", ("N6",))] == 1  # HAP triagist
    assert specialties[("30.000", ("X3",))] == 1  # wijkverpleegkundige


def test_patients_are_dutch_nl_core_patients_with_a_gp() -> None:
    for patient in of_type("Patient"):
        official = next(n for n in patient["name"] if n["use"] == "official")
        parts = {e["url"].rsplit("-", 1)[-1]: e["valueString"] for e in official["_family"]["extension"]}
        assert parts["name"] in official["family"]
        assert len(official["_given"]) == len(official["given"])
        assert patient["_gender"]["extension"][0]["url"].endswith("ext-CodeSpecification")
        address = patient["address"][0]
        assert address["city"] in {"Zoetermeer", "Den Haag"}
        assert re.fullmatch(r"\d{4} [A-Z]{2}", address["postalCode"])
        assert len(address["_line"][0]["extension"]) == 2  # street name and house number
        gp_orgs = [BY_KEY[g["reference"]] for g in patient["generalPractitioner"] if g["type"] == "Organization"]
        assert len(gp_orgs) == 1 and "Z3" in _org_types(gp_orgs[0]), patient["id"]


def _subject(resource: dict[str, Any]) -> str | None:
    for element in ("subject", "patient"):
        if element in resource:
            return refers_to(resource, element)
    return None


def test_every_patient_has_a_clinical_summary() -> None:
    content: dict[str, Counter[str]] = {f"Patient/{p['id']}": Counter() for p in of_type("Patient")}
    for resource in RESOURCES:
        subject = _subject(resource)
        if subject in content and resource["resourceType"] != "RelatedPerson":
            content[subject][resource["resourceType"]] += 1
    for patient, found in content.items():
        assert found["Condition"] >= 1, patient
        assert sum(found.values()) >= 3, patient
    totals = sum(content.values(), Counter())
    assert totals["AllergyIntolerance"] >= 3 and totals["Observation"] >= 8
    assert totals["MedicationRequest"] >= 3 and totals["MedicationStatement"] >= 2


def test_encounters_at_the_hap_and_the_seh() -> None:
    providers: Counter[tuple[str, ...]] = Counter()
    for encounter in of_type("Encounter"):
        provider = BY_KEY[refers_to(encounter, "serviceProvider")]
        providers[(encounter["class"]["code"], *sorted(_org_types(provider)))] += 1
        start, end = encounter["period"]["start"], encounter["period"]["end"]
        assert start < end
    assert providers[("AMB", "N6")] >= 1
    assert providers[("EMER", "V6")] >= 1


def test_observations_are_vital_signs_with_ucum_units() -> None:
    codes: Counter[str] = Counter()
    for obs in of_type("Observation"):
        codes[obs["code"]["coding"][0]["code"]] += 1
        quantities = (
            [obs["valueQuantity"]] if "valueQuantity" in obs else [c["valueQuantity"] for c in obs["component"]]
        )
        assert all(q["system"] == "http://unitsofmeasure.org" for q in quantities)
    bp = next(o for o in of_type("Observation") if o["code"]["coding"][0]["code"] == "85354-9")
    assert {c["code"]["coding"][0]["code"] for c in bp["component"]} == {"8480-6", "8462-4"}
    assert codes["85354-9"] >= 3 and codes["29463-7"] >= 3


def test_acp_for_elderly_patients() -> None:
    directives = [c for c in of_type("Consent") if c["meta"]["profile"][0].endswith("nl-core-TreatmentDirective2")]
    advance = [c for c in of_type("Consent") if c["meta"]["profile"][0].endswith("nl-core-AdvanceDirective")]
    assert advance and directives
    for consent in directives:
        assert consent["scope"]["coding"][0]["code"] == "treatment"
        assert consent["category"][0]["coding"][0] == {
            "system": SNOMED, "code": "129125009", "display": "Verrichting met expliciete context"
        }  # fmt: skip
        assert consent["provision"]["type"] in {"permit", "deny"}
        assert {a["role"]["coding"][0]["code"] for a in consent["provision"]["actor"]} == {"CONSENTER"}
    for consent in advance:
        assert consent["scope"]["coding"][0]["code"] == "adr"
        assert consent["category"][0]["coding"][0]["code"] == "acd"
    no_cpr = [
        d
        for d in directives
        if d["provision"]["type"] == "deny" and d["provision"]["code"][0]["coding"][0]["code"] == "89666000"
    ]
    assert no_cpr, "someone should have a 'niet reanimeren' treatment directive"
    for directive in no_cpr:
        patient = BY_KEY[refers_to(directive, "patient")]
        assert patient["birthDate"] < "1945", "ACP belongs to the elderly patients"
        source = BY_KEY[refers_to(directive, "sourceReference")]
        assert source in advance and source["patient"] == directive["patient"]
    patients_with_acp = {refers_to(c, "patient") for c in directives}
    assert 1 <= len(patients_with_acp) <= 2


def test_medication_statements_and_requests_use_the_mp9_categories() -> None:
    for request in of_type("MedicationRequest"):
        assert request["category"][0]["coding"][0]["code"] == "16076005"
        assert refers_to(request, "medicationReference") in BY_KEY
    for statement in of_type("MedicationStatement"):
        assert statement["category"]["coding"][0]["code"] == "422979000"


# --- codes: from the nl-core / zib code lists in the fixtures ------------------------------------------------


@lru_cache
def _code_system(filename_part: str) -> dict[str, str]:
    """code -> display of a zib CodeSystem in the fixtures (by part of its file name)."""
    (path,) = ZIB_TERMINOLOGY.glob(f"CodeSystem-*{filename_part}*.xml")
    root = ET.parse(path).getroot()
    out: dict[str, str] = {}
    for concept in root.iter("{http://hl7.org/fhir}concept"):
        code, display = concept.find("f:code", FHIR_NS), concept.find("f:display", FHIR_NS)
        if code is not None and display is not None:
            out[code.get("value", "")] = display.get("value", "")
    return out


@lru_cache
def _value_set(oid: str) -> frozenset[tuple[str, str]]:
    """(system, code) pairs enumerated in a zib ValueSet of the fixtures (by its OID)."""
    (path,) = ZIB_TERMINOLOGY.glob(f"ValueSet-*-{oid}--*.xml")
    root = ET.parse(path).getroot()
    out = set()
    for include in root.iterfind("f:compose/f:include", FHIR_NS):
        system = include.find("f:system", FHIR_NS)
        for concept in include.iterfind("f:concept", FHIR_NS):
            code = concept.find("f:code", FHIR_NS)
            if system is not None and code is not None:
                out.add((system.get("value", ""), code.get("value", "")))
    return frozenset(out)


needs_fixtures = pytest.mark.skipif(not ZIB_TERMINOLOGY.is_dir(), reason="nl-core fixtures not available")

ZIB = "2.16.840.1.113883.2.4.3.11.60.40.2"


def _in(value_set_oid: str, concept: dict[str, Any]) -> bool:
    return any((c["system"], c["code"]) in _value_set(value_set_oid) for c in concept["coding"])


@needs_fixtures
def test_organisation_types_and_uzi_roles_come_from_rolecode_nl() -> None:
    org_types = _code_system("organization-type")
    uzi_roles = _code_system("uzi-rolcode")
    checked = 0
    for coding in codings(RESOURCES):
        if coding["system"] == "http://nictiz.nl/fhir/NamingSystem/organization-type":
            assert org_types.get(coding["code"]) == coding["display"], coding
            assert ("http://nictiz.nl/fhir/NamingSystem/organization-type", coding["code"]) in _value_set(
                f"{ZIB}.17.2.3"
            ), coding  # OrganisatieTypeCodelijst
            checked += 1
        elif coding["system"] == "http://fhir.nl/fhir/NamingSystem/uzi-rolcode":
            assert uzi_roles.get(coding["code"]) == coding["display"], coding
            checked += 1
    assert checked >= 13


@needs_fixtures
def test_zib_code_lists() -> None:
    for condition in of_type("Condition"):
        assert _in(f"{ZIB}.5.1.1", condition["category"][0]), condition["id"]  # ProbleemTypeCodelijst
        zib_status = [c for c in condition["verificationStatus"]["coding"] if c["system"] == SNOMED]
        assert _in(f"{ZIB}.5.1.4", {"coding": zib_status}), condition["id"]  # VerificatieStatusCodelijst
    for allergy in of_type("AllergyIntolerance"):
        category = allergy["_category"][0]["extension"][0]["valueCodeableConcept"]
        assert _in(f"{ZIB}.8.2.2", category)  # AllergieCategorieCodelijst
        criticality = allergy["_criticality"]["extension"][0]["valueCodeableConcept"]
        assert _in(f"{ZIB}.8.2.4", criticality)  # MateVanKritiekZijnCodelijst
    for encounter in of_type("Encounter"):
        assert _in(f"{ZIB}.15.1.1", {"coding": [encounter["class"]]})  # ContactTypeCodelijst
    for consent in of_type("Consent"):
        code = consent["provision"]["code"][0]
        if consent["scope"]["coding"][0]["code"] == "treatment":
            assert _in(f"{ZIB}.2.2.1", code), consent["id"]  # BehandelingCodelijst
        else:
            assert _in(f"{ZIB}.7.15.1", code), consent["id"]  # WilsverklaringTypeCodelijst
    for holder in of_type("Patient") + of_type("RelatedPerson"):
        relationships = [r for c in holder.get("contact", [holder]) for r in c.get("relationship", [])]
        for relationship in relationships:
            assert _in(f"{ZIB}.3.1.2", relationship) or _in(f"{ZIB}.3.1.1", relationship)  # Rol / Relatie
    for phone in (t for r in RESOURCES for t in r.get("telecom", []) if t["system"] == "phone"):
        kind = phone["_system"]["extension"][0]["valueCodeableConcept"]
        assert _in(f"{ZIB}.20.6.1", kind)  # TelecomTypeCodelijst


@needs_fixtures
def test_declared_profiles_exist_in_nl_core() -> None:
    available = {p.stem for p in (NICTIZ / "profiles" / "nl-core").glob("nl-core-*.xml")}
    for resource in RESOURCES:
        for profile in resource.get("meta", {}).get("profile", []):
            name = profile.removeprefix("http://nictiz.nl/fhir/StructureDefinition/")
            assert name in available, f"{resource['id']}: {profile}"
    untyped = {r["resourceType"] for r in RESOURCES if not r["meta"].get("profile")}
    assert untyped == {"Endpoint", "MedicationRequest", "MedicationStatement"}  # no nl-core profile for these


@needs_fixtures
def test_medicinal_product_codes_appear_in_the_fixtures() -> None:
    """G-Standaard codes are licensed data; only use codes that the published examples use."""
    texts = "".join(
        p.read_text(encoding="utf-8", errors="ignore")
        for folder in (NICTIZ / "examples", FIXTURES / "nictiz-bgz-stu3", FIXTURES / "professionele-samenvatting")
        for p in folder.rglob("*.xml")
    )
    for medication in of_type("Medication"):
        for coding in medication["code"]["coding"]:
            assert f'value="{coding["code"]}"' in texts or f'code="{coding["code"]}"' in texts, coding


# --- valid R4 -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("resource", RESOURCES, ids=lambda r: f"{r['resourceType']}/{r['id']}")
def test_resource_validates_against_the_fhir_resources_model(resource: dict[str, Any]) -> None:
    get_fhir_model_class(resource["resourceType"]).model_validate(resource)


def test_bundle_validates_with_the_hub_validator() -> None:
    validate = pytest.importorskip("hub.fhirmodel.validate")
    issues = validate.validate_resource(BUNDLE)
    assert issues == [], "\n".join(f"{i.severity} {i.expression}: {i.diagnostics}" for i in issues)
    for resource in RESOURCES:
        assert validate.validate_resource(resource) == [], resource["id"]


def _invariant_failures(node: dict[str, Any], type_name: str, resource: dict[str, Any], path: str) -> Iterator[str]:
    """Evaluate the R4 FHIRPath invariants (type and element level) over one resource."""
    info = structure().get(type_name)
    if info is None or info.is_primitive:
        return
    yield from _evaluate(node, type_name, info.invariants, resource, path)
    for name, value in node.items():
        primitive_companion = name.startswith("_")
        element = info.elements.get(name[1:] if primitive_companion else name)
        if element is None:
            continue
        for i, item in enumerate(value if isinstance(value, list) else [value]):
            if not isinstance(item, dict):
                continue
            item_type = "Element" if primitive_companion else element.type
            if not primitive_companion:
                yield from _evaluate(item, item_type, element.invariants, resource, f"{path}.{name}[{i}]")
            yield from _invariant_failures(item, item_type, resource, f"{path}.{name}[{i}]")


# per-1 uses hasValue(), which fhirpathpy does not implement; test_periods_run_forward checks it.
NOT_EVALUATED = {"per-1"}


def _evaluate(node: Any, base: str, invariants: Any, resource: dict[str, Any], path: str) -> Iterator[str]:
    env = {"resource": resource, "rootResource": resource}
    for key, severity, expression, human in invariants:
        if severity != "error" or key in NOT_EVALUATED:
            continue
        result = fhirpathpy.evaluate(node, {"base": base, "expression": expression}, env, model=models["r4"])
        if result != [True]:
            yield f"{path}: {key} {human} -> {result}"


@pytest.mark.filterwarnings("ignore")
def test_fhirpath_invariants_hold() -> None:
    failures = [
        f for r in RESOURCES for f in _invariant_failures(r, r["resourceType"], r, f"{r['resourceType']}/{r['id']}")
    ]
    assert failures == []


def _periods(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key.endswith(("period", "Period")) and isinstance(value, dict):
                yield value
            yield from _periods(value)
    elif isinstance(node, list):
        for value in node:
            yield from _periods(value)


def test_periods_run_forward_and_date_times_carry_a_zone() -> None:
    for period in _periods(RESOURCES):
        if "start" in period and "end" in period:
            assert period["start"] <= period["end"], period
    text = orjson.dumps(BUNDLE).decode()
    for stamp in re.findall(r'"(\d{4}-\d\d-\d\dT[^"]*)"', text):
        assert re.search(r"(Z|[+-]\d\d:\d\d)$", stamp), stamp


def test_no_empty_values() -> None:
    def walk(node: Any, path: str) -> Iterator[str]:
        if isinstance(node, dict):
            if not node:
                yield path
            for key, value in node.items():
                yield from walk(value, f"{path}.{key}")
        elif isinstance(node, list):
            if not node:
                yield path
            for i, value in enumerate(node):
                yield from walk(value, f"{path}[{i}]")
        elif isinstance(node, str) and not node.strip():
            yield path

    assert list(walk(BUNDLE, "Bundle")) == []


@pytest.mark.parametrize(
    ("local", "expected"),
    [
        ("2025-01-18T21:40", "2025-01-18T21:40:00+01:00"),
        ("2024-09-14T16:20", "2024-09-14T16:20:00+02:00"),
        ("2025-03-30T01:59", "2025-03-30T01:59:00+01:00"),  # the last Sunday of March, before 02:00
        ("2025-03-30T03:00", "2025-03-30T03:00:00+02:00"),
        ("2024-10-27T02:30", "2024-10-27T02:30:00+02:00"),  # the last Sunday of October, first 02:30
        ("2024-10-27T03:00", "2024-10-27T03:00:00+01:00"),
    ],
)
def test_dutch_local_time_gets_the_amsterdam_offset(local: str, expected: str) -> None:
    assert dt(local) == expected


# --- loading into the hub ---------------------------------------------------------------------------------


def _strip_server_meta(resource: dict[str, Any]) -> dict[str, Any]:
    meta = {k: v for k, v in resource.get("meta", {}).items() if k not in ("versionId", "lastUpdated", "source")}
    return {**resource, "meta": meta}


def test_loading_the_bundle_twice_is_idempotent(client: TestClient) -> None:
    body = orjson.dumps(BUNDLE)
    headers = {"Content-Type": "application/fhir+json"}
    first = client.post("/fhir", content=body, headers=headers)
    assert first.status_code == 200, first.text[:2000]
    assert all(e["response"]["status"].startswith("20") for e in first.json()["entry"])
    stored = {key: _strip_server_meta(client.get(f"/fhir/{key}").json()) for key in BY_KEY}

    second = client.post("/fhir", content=body, headers=headers)
    assert second.status_code == 200, second.text[:2000]
    assert all(e["response"]["status"].startswith("200") for e in second.json()["entry"])
    for key in BY_KEY:
        assert _strip_server_meta(client.get(f"/fhir/{key}").json()) == stored[key], key
    for rtype, count in Counter(r["resourceType"] for r in RESOURCES).items():
        total = client.get(f"/fhir/{rtype}", params={"_summary": "count"}).json()["total"]
        assert total == count, rtype


def test_resources_share_no_objects() -> None:
    """Consumers may change one resource in place without touching another."""
    seen: dict[int, str] = {}

    def walk(node: Any, owner: str) -> None:
        if isinstance(node, dict | list):
            assert seen.setdefault(id(node), owner) == owner, f"{owner} shares an object with {seen[id(node)]}"
            for value in node.values() if isinstance(node, dict) else node:
                walk(value, owner)

    for resource in RESOURCES:
        walk(resource, resource["id"])
