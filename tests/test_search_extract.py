"""Search-index rows per parameter type (hub/search/extract.py), the Patient compartment and custom parameters."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
from support import NICTIZ_EXAMPLES, SYNTHEA, nictiz_example_files, synthea_bundle, synthea_files

from hub.fhirmodel.structure import structure
from hub.formats.outcome import FhirError
from hub.search.compartment import patient_ids
from hub.search.extract import (
    COLUMNS,
    MAX_MS,
    MIN_MS,
    NUM_MAX,
    NUM_MIN,
    _branches,
    date_range,
    derived_params,
    derived_references,
    extract,
    normalize_string,
    number_range,
    plan,
    sources,
)
from hub.search.registry import Registry, default_registry


@pytest.fixture()
def registry() -> Registry:
    return Registry.load()  # a private one: custom parameters must not leak into other tests


def rows(resource: dict[str, Any], table: str, param: str, registry: Registry | None = None) -> list[dict[str, Any]]:
    """The rows of one parameter, without res_type/param and without None columns (easier to read)."""
    out = extract(resource, registry).get(table, [])
    return [
        {k: v for k, v in r.items() if v is not None and k not in ("res_type", "param")}
        for r in out
        if r["param"] == param
    ]


def ms(text: str) -> int:
    from datetime import datetime

    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


# --- string ------------------------------------------------------------------------------------------


def test_human_name_gives_one_row_per_part_with_accents_folded() -> None:
    patient = {
        "resourceType": "Patient",
        "name": [
            {"family": "Müller", "given": ["Zoë", "  Anna   Maria "], "prefix": ["Dr."], "text": "Dr. Zoë Müller"}
        ],
    }
    assert rows(patient, "string", "family") == [{"value": "muller", "exact": "Müller"}]
    assert rows(patient, "string", "name") == [
        {"value": "muller", "exact": "Müller"},
        {"value": "dr. zoe muller", "exact": "Dr. Zoë Müller"},
        {"value": "zoe", "exact": "Zoë"},
        {"value": "anna maria", "exact": "  Anna   Maria "},
        {"value": "dr.", "exact": "Dr."},
    ]
    assert normalize_string("Straße  ÉCOLE\tçà") == "strasse ecole ca"


def test_address_parts() -> None:
    patient = {
        "resourceType": "Patient",
        "address": [{"line": ["Dorpsstraat 1", "bis"], "city": "Zoetermeer", "postalCode": "2711 AA", "country": "NL"}],
    }
    values = [r["value"] for r in rows(patient, "string", "address")]
    assert values == ["zoetermeer", "2711 aa", "nl", "dorpsstraat 1", "bis"]
    assert rows(patient, "string", "address-city") == [{"value": "zoetermeer", "exact": "Zoetermeer"}]


# --- token -------------------------------------------------------------------------------------------


def test_codeable_concept_codings_and_text() -> None:
    condition: dict[str, Any] = {
        "resourceType": "Condition",
        "code": {
            "coding": [
                {"system": "http://snomed.info/sct", "code": "44054006", "display": "Diabetes mellitus type 2"},
                {"system": "http://hl7.org/fhir/sid/icd-10", "code": "E11"},
            ],
            "text": "Suikerziekte",
        },
    }
    assert rows(condition, "token", "code") == [
        {"system": "http://snomed.info/sct", "code": "44054006", "text": "diabetes mellitus type 2"},
        {"system": "http://hl7.org/fhir/sid/icd-10", "code": "E11", "text": "suikerziekte"},  # no display: the text
    ]
    condition["code"]["coding"][1]["display"] = "Type 2 diabetes mellitus"
    assert rows(condition, "token", "code")[-1] == {"text": "suikerziekte"}  # a row of its own for :text


def test_identifier_with_type_for_of_type() -> None:
    patient = {
        "resourceType": "Patient",
        "identifier": [
            {
                "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]},
                "system": "urn:oid:2.16.840.1.113883.2.4.6.3",
                "value": "999911120",
            },
            {"system": "http://example.org/mrn"},  # no value: still searchable by system
            {"type": {"text": "nothing"}},  # neither: not indexed
        ],
    }
    assert rows(patient, "token", "identifier") == [
        {
            "system": "urn:oid:2.16.840.1.113883.2.4.6.3",
            "code": "999911120",
            "type_system": "http://terminology.hl7.org/CodeSystem/v2-0203",
            "type_code": "MR",
        },
        {"system": "http://example.org/mrn"},
    ]


def test_booleans_codes_and_contact_points() -> None:
    patient = {
        "resourceType": "Patient",
        "active": False,
        "gender": "female",
        "telecom": [{"system": "phone", "value": "+31 79 123"}, {"system": "email", "value": "Jo@Example.org"}],
    }
    assert rows(patient, "token", "active") == [{"code": "false"}]
    assert rows(patient, "token", "deceased") == [{"code": "false"}]  # deceased.exists() and deceased != false
    assert rows({**patient, "deceasedDateTime": "2020"}, "token", "deceased") == [{"code": "true"}]
    # a `code` bound (required) to a value set of one code system carries that system implicitly
    assert rows(patient, "token", "gender") == [
        {"system": "http://hl7.org/fhir/administrative-gender", "code": "female"}
    ]
    assert rows(patient, "token", "email") == [{"system": "email", "code": "Jo@Example.org"}]  # case kept
    assert [r["code"] for r in rows(patient, "token", "telecom")] == ["+31 79 123", "Jo@Example.org"]


def test_meta_tag_security_profile_and_source() -> None:
    obs = {
        "resourceType": "Observation",
        "meta": {
            "profile": ["http://nictiz.nl/fhir/StructureDefinition/nl-core-BloodPressure"],
            "tag": [{"system": "http://hub/tags", "code": "imported"}],
            "security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "R"}],
            "source": "http://huisarts.example/fhir",
            "lastUpdated": "2024-01-01T00:00:00Z",
        },
        "id": "x",
    }
    assert rows(obs, "uri", "_profile") == [
        {"value": "http://nictiz.nl/fhir/StructureDefinition/nl-core-BloodPressure"}
    ]
    assert rows(obs, "token", "_tag") == [{"system": "http://hub/tags", "code": "imported"}]
    assert rows(obs, "token", "_security")[0]["code"] == "R"
    assert rows(obs, "uri", "_source") == [{"value": "http://huisarts.example/fhir"}]
    indexed = {r["param"] for table in extract(obs).values() for r in table}
    assert not indexed & {"_id", "_lastUpdated"}  # the resource table answers those


# --- reference ---------------------------------------------------------------------------------------


def test_reference_forms() -> None:
    obs = {
        "resourceType": "Observation",
        "subject": {"reference": "Patient/p1/_history/3"},
        "performer": [
            {"reference": "Practitioner/d1"},
            {"reference": "https://other.example/fhir/Organization/o1"},
            {"reference": "urn:uuid:0b6f8f52-0a4b-4c7e-9d7c-6d3e8e6f1a11"},
            {"reference": "#contained-1"},
            {
                "identifier": {"system": "http://fhir.nl/fhir/NamingSystem/uzi-nr-pers", "value": "123"},
                "type": "Practitioner",
            },
            {"display": "only a name"},
        ],
        "basedOn": [{"reference": "Observation/o1"}],  # not a target of based-on: not indexed
    }
    assert rows(obs, "reference", "subject") == [{"target_type": "Patient", "target_id": "p1", "target_version": "3"}]
    assert rows(obs, "reference", "performer") == [
        {"target_type": "Practitioner", "target_id": "d1"},
        {"target_type": "Organization", "target_id": "o1", "url": "https://other.example/fhir/Organization/o1"},
        {"url": "urn:uuid:0b6f8f52-0a4b-4c7e-9d7c-6d3e8e6f1a11"},
        {"target_type": "Practitioner", "id_system": "http://fhir.nl/fhir/NamingSystem/uzi-nr-pers", "id_value": "123"},
    ]
    assert rows(obs, "reference", "patient") == []  # derived: subject's Patient rows answer it (derived_references)
    assert rows(obs, "reference", "based-on") == []


def test_reference_targets_are_respected() -> None:
    encounter = {"resourceType": "Encounter", "subject": {"reference": "Practitioner/x"}}  # subject: Patient | Group
    assert rows(encounter, "reference", "subject") == []
    assert rows({**encounter, "subject": {"reference": "Group/g"}}, "reference", "subject") == [
        {"target_type": "Group", "target_id": "g"}
    ]


def test_canonical_references_keep_their_version_apart() -> None:
    task = {
        "resourceType": "Task",
        "instantiatesCanonical": "http://example.org/ActivityDefinition/acp|1.2",
    }
    qr = {"resourceType": "QuestionnaireResponse", "questionnaire": "http://iknl.nl/fhir/Questionnaire/acp"}
    assert rows(qr, "reference", "questionnaire") == [{"url": "http://iknl.nl/fhir/Questionnaire/acp"}]
    plan = {"resourceType": "CarePlan", "instantiatesCanonical": [task["instantiatesCanonical"]]}
    assert rows(plan, "reference", "instantiates-canonical") == [
        {"url": "http://example.org/ActivityDefinition/acp", "target_version": "1.2"}
    ]


def test_bundle_composition_is_a_reference_to_the_first_entry() -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "document",
        "entry": [{"resource": {"resourceType": "Composition", "id": "c1"}}],
    }
    assert rows(bundle, "reference", "composition") == [{"target_type": "Composition", "target_id": "c1"}]


# --- date --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "low", "high"),
    [
        ("2020", "2020-01-01T00:00:00Z", "2020-12-31T23:59:59.999Z"),
        ("2020-02", "2020-02-01T00:00:00Z", "2020-02-29T23:59:59.999Z"),
        ("2021-12", "2021-12-01T00:00:00Z", "2021-12-31T23:59:59.999Z"),
        ("2020-03-04", "2020-03-04T00:00:00Z", "2020-03-04T23:59:59.999Z"),
        ("2020-03-04T10:00:00+01:00", "2020-03-04T09:00:00Z", "2020-03-04T09:00:00.999Z"),
        ("2020-03-04T10:00:00Z", "2020-03-04T10:00:00Z", "2020-03-04T10:00:00.999Z"),
        ("2020-03-04T10:00:00.5-05:30", "2020-03-04T15:30:00.500Z", "2020-03-04T15:30:00.599Z"),
        ("2020-03-04T10:00:00.123456Z", "2020-03-04T10:00:00.123Z", "2020-03-04T10:00:00.123Z"),
        ("2020-03-04T10:00", "2020-03-04T10:00:00Z", "2020-03-04T10:00:59.999Z"),  # no seconds, no zone: UTC
        ("1850-07-01T00:00:00Z", "1850-07-01T00:00:00Z", "1850-07-01T00:00:00.999Z"),
    ],
)
def test_date_precision_and_time_zones(text: str, low: str, high: str) -> None:
    assert date_range(text) == (ms(low), ms(high))


@pytest.mark.parametrize("text", ["2020-13", "2021-02-29", "2020-01-01T25:00:00Z", "yesterday", ""])
def test_invalid_dates_are_not_indexed(text: str) -> None:
    assert date_range(text) is None


def test_periods_with_open_ends_and_timings() -> None:
    encounter = {"resourceType": "Encounter", "period": {"start": "2024-05-01T08:00:00+02:00"}}
    assert rows(encounter, "date", "date") == [{"low": ms("2024-05-01T06:00:00Z"), "high": MAX_MS}]
    encounter["period"] = {"end": "2024-05-02"}
    assert rows(encounter, "date", "date") == [{"low": MIN_MS, "high": ms("2024-05-02T23:59:59.999Z")}]
    assert (ms("0001-01-01T00:00:00Z"), ms("9999-12-31T23:59:59.999Z")) == (MIN_MS, MAX_MS)
    med = {
        "resourceType": "MedicationAdministration",
        "effectiveDateTime": "2024-05-01",
    }
    assert rows(med, "date", "effective-time") == [
        {"low": ms("2024-05-01T00:00:00Z"), "high": ms("2024-05-01T23:59:59.999Z")}
    ]
    obs = {"resourceType": "Observation", "effectiveTiming": {"event": ["2024-05-03", "2024-05-01T10:00:00Z"]}}
    assert rows(obs, "date", "date") == [{"low": ms("2024-05-01T10:00:00Z"), "high": ms("2024-05-03T23:59:59.999Z")}]


# --- number and quantity -----------------------------------------------------------------------------


def test_number_precision_ranges() -> None:
    assert number_range(100) == (100.0, 99.5, 100.5)
    assert number_range(Decimal("1.50")) == (1.5, 1.495, 1.505)  # XML keeps the stated precision
    assert number_range(1.5) == (1.5, 1.45, 1.55)  # a JSON float cannot
    assert number_range(Decimal("1E+3")) == (1000.0, 500.0, 1500.0)
    assert number_range(True) is None
    risk = {
        "resourceType": "RiskAssessment",
        "prediction": [{"probabilityDecimal": 0.25}, {"probabilityRange": {"low": {"value": 1}}}],
    }
    assert rows(risk, "number", "probability") == [
        {"value": 0.25, "low": 0.245, "high": 0.255},
        {"value": 1.0, "low": 0.5, "high": NUM_MAX},
    ]


def test_quantities() -> None:
    obs = {
        "resourceType": "Observation",
        "valueQuantity": {
            "value": Decimal("5.40"),
            "unit": "mmol/l",
            "system": "http://unitsofmeasure.org",
            "code": "mmol/L",
        },
    }
    assert rows(obs, "quantity", "value-quantity") == [
        {
            "system": "http://unitsofmeasure.org",
            "code": "mmol/L",
            "unit": "mmol/l",
            "value": 5.4,
            "low": 5.395,
            "high": 5.405,
        }
    ]
    obs["valueQuantity"] = {"value": 3, "comparator": "<", "unit": "mg"}
    assert rows(obs, "quantity", "value-quantity") == [{"unit": "mg", "value": 3.0, "low": NUM_MIN, "high": 3.5}]
    claim = {"resourceType": "ChargeItem", "priceOverride": {"value": 12.5, "currency": "EUR"}}
    assert rows(claim, "quantity", "price-override") == [
        {"system": "urn:iso:std:iso:4217", "code": "EUR", "unit": "EUR", "value": 12.5, "low": 12.45, "high": 12.55}
    ]
    condition: dict[str, Any] = {
        "resourceType": "Condition",
        "onsetAge": {"value": 40, "system": "http://unitsofmeasure.org", "code": "a"},
    }
    assert rows(condition, "quantity", "onset-age")[0]["code"] == "a"


# --- composite ---------------------------------------------------------------------------------------


BLOOD_PRESSURE = {
    "resourceType": "Observation",
    "id": "bp",
    "status": "final",
    "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9"}]},
    "subject": {"reference": "Patient/p1"},
    "component": [
        {
            "code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
            "valueQuantity": {"value": 120, "unit": "mmHg", "system": "http://unitsofmeasure.org", "code": "mm[Hg]"},
        },
        {
            "code": {"coding": [{"system": "http://loinc.org", "code": "8462-4"}]},
            "valueQuantity": {"value": 80, "unit": "mmHg", "system": "http://unitsofmeasure.org", "code": "mm[Hg]"},
        },
    ],
}


def test_blood_pressure_components_give_one_composite_row_each() -> None:
    ucum = "http://unitsofmeasure.org"
    assert rows(BLOOD_PRESSURE, "composite", "component-code-value-quantity") == [
        {
            "c1_system": "http://loinc.org",
            "c1_code": "8480-6",
            "c2_system": ucum,
            "c2_code": "mm[Hg]",
            "c2_low": 120,  # the value itself, in both columns
            "c2_high": 120,
        },
        {
            "c1_system": "http://loinc.org",
            "c1_code": "8462-4",
            "c2_system": ucum,
            "c2_code": "mm[Hg]",
            "c2_low": 80,
            "c2_high": 80,
        },
    ]
    # combo-code-value-quantity unites these two: its rows are theirs, not written again
    assert rows(BLOOD_PRESSURE, "composite", "combo-code-value-quantity") == []
    assert rows(BLOOD_PRESSURE, "composite", "code-value-quantity") == []
    assert [r["code"] for r in rows(BLOOD_PRESSURE, "token", "component-code")] == ["8480-6", "8462-4"]


def test_composite_with_date_and_string_values() -> None:
    obs = {
        "resourceType": "Observation",
        "code": {"coding": [{"system": "http://loinc.org", "code": "x"}]},
        "valueDateTime": "2024-01-02",
    }
    assert rows(obs, "composite", "code-value-date") == [
        {
            "c1_system": "http://loinc.org",
            "c1_code": "x",
            "c2_dlow": ms("2024-01-02T00:00:00Z"),
            "c2_dhigh": ms("2024-01-02T23:59:59.999Z"),
        }
    ]
    obs = {**obs, "valueString": "Positief"}
    del obs["valueDateTime"]
    assert rows(obs, "composite", "code-value-string")[0]["c2_text"] == "positief"


def test_composites_with_three_components_and_with_references() -> None:
    chromosome = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/chromosome-human", "code": "1"}]}
    sequence = {
        "resourceType": "MolecularSequence",
        "referenceSeq": {"chromosome": chromosome, "windowStart": 100, "windowEnd": 200},
        "variant": [{"start": 120, "end": 121}, {"start": 150}],  # the second has no end: no row
    }
    c1 = {"c1_system": "http://terminology.hl7.org/CodeSystem/chromosome-human", "c1_code": "1"}
    assert rows(sequence, "composite", "chromosome-variant-coordinate") == [
        {**c1, "c2_low": 120, "c2_high": 120, "c3_low": 121, "c3_high": 121}
    ]
    assert rows(sequence, "composite", "chromosome-window-coordinate") == [
        {**c1, "c2_low": 100, "c2_high": 100, "c3_low": 200, "c3_high": 200}
    ]
    # R4 swaps the component definitions of `relationship`; the values' types decide.
    doc = {
        "resourceType": "DocumentReference",
        "relatesTo": [{"code": "replaces", "target": {"reference": "DocumentReference/d0"}}],
    }
    assert rows(doc, "composite", "relationship") == [{"c1_code": "replaces", "c2_code": "DocumentReference/d0"}]


def test_rows_have_every_column_and_identical_rows_appear_once() -> None:
    obs = {
        "resourceType": "Observation",
        "category": [{"coding": [{"system": "s", "code": "c"}]}, {"coding": [{"system": "s", "code": "c"}]}],
    }
    assert rows(obs, "token", "category") == [{"system": "s", "code": "c"}]
    for table, table_rows in extract(BLOOD_PRESSURE).items():
        for r in table_rows:
            assert set(r) == {*COLUMNS[table], "res_type", "param"}
            assert r["res_type"] == "Observation"


# --- Patient compartment -----------------------------------------------------------------------------


def test_patient_compartment() -> None:
    assert patient_ids(BLOOD_PRESSURE) == ["p1"]
    obs = {**BLOOD_PRESSURE, "subject": {"reference": "Group/g"}, "performer": [{"reference": "Patient/p2"}]}
    assert patient_ids(obs) == ["p2"]
    encounter = {"resourceType": "Encounter", "subject": {"reference": "Patient/p3/_history/1"}}
    assert patient_ids(encounter) == ["p3"]
    patient = {
        "resourceType": "Patient",
        "id": "p4",
        "link": [{"other": {"reference": "Patient/p5"}, "type": "seealso"}],
    }
    assert patient_ids(patient) == ["p4", "p5"]
    assert patient_ids({"resourceType": "Practitioner", "id": "d1"}) == []
    remote = {"resourceType": "Observation", "subject": {"reference": "https://hub.example/fhir/Patient/p6"}}
    assert patient_ids(remote) == []
    assert patient_ids(remote, local_bases=("https://hub.example/fhir",)) == ["p6"]


# --- custom search parameters ------------------------------------------------------------------------


def test_custom_search_parameter(registry: Registry) -> None:
    acp = {
        "resourceType": "SearchParameter",
        "url": "http://iknl.nl/fhir/SearchParameter/Communication-reason-code",
        "name": "reason-code",
        "status": "active",
        "code": "reason-code",
        "base": ["Communication"],
        "type": "token",
        "expression": "Communication.reasonCode",
    }
    param = registry.add(acp)
    assert registry.get("Communication", "reason-code") is param
    comm = {
        "resourceType": "Communication",
        "reasonCode": [{"coding": [{"system": "http://snomed.info/sct", "code": "713603004"}]}],
    }
    assert rows(comm, "token", "reason-code", registry) == [{"system": "http://snomed.info/sct", "code": "713603004"}]
    flag = {
        **acp,
        "url": "http://nictiz.nl/fhir/SearchParameter/Flag-category",
        "code": "category",
        "base": ["Flag"],
        "expression": "Flag.category",
    }
    registry.add(flag)
    assert rows({"resourceType": "Flag", "category": [{"text": "Alert"}]}, "token", "category", registry) == [
        {"text": "alert"}
    ]
    ext = {
        **acp,
        "url": "http://example.org/SearchParameter/Patient-nationality",
        "code": "nationality",
        "base": ["Patient"],
        "expression": "Patient.extension('http://hl7.org/fhir/StructureDefinition/patient-nationality').extension('code').value",
    }
    registry.add(ext)
    patient = {
        "resourceType": "Patient",
        "extension": [
            {
                "url": "http://hl7.org/fhir/StructureDefinition/patient-nationality",
                "extension": [
                    {
                        "url": "code",
                        "valueCodeableConcept": {"coding": [{"system": "urn:iso:std:iso:3166", "code": "NL"}]},
                    }
                ],
            }
        ],
    }
    assert rows(patient, "token", "nationality", registry) == [{"system": "urn:iso:std:iso:3166", "code": "NL"}]


def test_custom_parameter_shadows_a_standard_one_until_removed(registry: Registry) -> None:
    standard = registry.get("Observation", "code")
    custom = registry.add(
        {
            "resourceType": "SearchParameter",
            "url": "http://example.org/SearchParameter/Observation-code",
            "code": "code",
            "base": ["Observation"],
            "type": "token",
            "expression": "Observation.code.coding.where(system = 'http://loinc.org')",
        }
    )
    assert registry.get("Observation", "code") is custom
    assert registry.get("Condition", "code") is standard  # clinical-code still serves the other types
    obs = {"resourceType": "Observation", "code": {"coding": [{"system": "http://snomed.info/sct", "code": "1"}]}}
    assert rows(obs, "token", "code", registry) == []
    registry.remove(custom.url)
    assert registry.get("Observation", "code") is standard
    assert rows(obs, "token", "code", registry) == [{"system": "http://snomed.info/sct", "code": "1"}]


def test_a_parameter_added_later_indexes_resources_of_a_shape_seen_before(registry: Registry) -> None:
    """Extraction remembers which parameters can apply to each (type, top-level keys) shape; a new
    SearchParameter must be seen for shapes met before it, and key order must not matter."""
    comm = {"resourceType": "Communication", "status": "completed", "reasonCode": [{"text": "Wilsverklaring"}]}
    assert rows(comm, "token", "reason-code", registry) == []
    assert rows(comm, "token", "status", registry) == [
        {"code": "completed", "system": "http://hl7.org/fhir/event-status"}
    ]
    registry.add(
        {
            "resourceType": "SearchParameter",
            "url": "http://example.org/SearchParameter/Communication-reason-text",
            "code": "reason-code",
            "base": ["Communication"],
            "type": "token",
            "expression": "Communication.reasonCode",
        }
    )
    assert rows(comm, "token", "reason-code", registry) == [{"text": "wilsverklaring"}]
    reordered = dict(reversed(list(comm.items())))
    assert extract(reordered, registry) == extract(comm, registry)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"type": "fuzzy"}, "not a search parameter type"),
        ({"type": "special"}, "special"),
        ({"base": ["NoSuchResource"]}, "not a resource type"),
        ({"expression": "Communication.noSuchElement"}, "no element"),
        ({"expression": "Communication.reasonCode.where("}, "cannot be used"),
        ({"expression": "Patient.name"}, "no part of the expression applies"),
        ({"type": "date"}, "cannot index CodeableConcept"),
        ({"code": "bad code!"}, "not a usable parameter name"),
        ({"expression": None}, "expression is required"),
        (
            {"type": "composite", "component": [{"definition": "http://x/unknown", "expression": "code"}]},
            "at least two",
        ),
    ],
)
def test_unusable_custom_search_parameters_are_rejected(
    registry: Registry, change: dict[str, Any], message: str
) -> None:
    sp = {
        "resourceType": "SearchParameter",
        "url": "http://example.org/SearchParameter/bad",
        "code": "reason-code",
        "base": ["Communication"],
        "type": "token",
        "expression": "Communication.reasonCode",
        **change,
    }
    with pytest.raises(FhirError) as exc:
        registry.add(sp)
    assert exc.value.status == 400
    assert message in exc.value.diagnostics
    assert registry.get("Communication", "reason-code") is None


# --- real data -----------------------------------------------------------------------------------------


def _non_null_columns_filled(out: dict[str, list[dict[str, Any]]]) -> None:
    required = {"string": ("value", "exact"), "date": ("low", "high"), "number": ("value", "low", "high")}
    required |= {"quantity": ("value", "low", "high"), "uri": ("value",)}
    for table, table_rows in out.items():
        for r in table_rows:
            assert all(r[c] is not None for c in required.get(table, ())), r
            if table == "date":
                assert r["low"] <= r["high"], r


@pytest.mark.skipif(not SYNTHEA.is_dir(), reason="Synthea fixtures not available")
def test_synthea_bundles_index_cleanly(caplog: pytest.LogCaptureFixture) -> None:
    files = [f for f in synthea_files() if f.name.startswith("0-")] + [
        f for f in synthea_files() if not f.name.startswith("0-")
    ][:1]
    n = 0
    for f in files:
        for entry in synthea_bundle(f.name)["entry"]:
            _non_null_columns_filled(extract(entry["resource"]))
            n += 1
    assert n > 500
    assert not [r for r in caplog.records if r.name == "hub.search.extract"]


@pytest.mark.skipif(not NICTIZ_EXAMPLES.is_dir(), reason="Nictiz examples not available")
def test_nictiz_examples_index_cleanly(caplog: pytest.LogCaptureFixture) -> None:
    parse_xml = pytest.importorskip("hub.formats.xml").parse_xml
    for path in nictiz_example_files():
        resource = parse_xml(path.read_bytes())
        _non_null_columns_filled(extract(resource))
        if resource["resourceType"] == "Observation" and "subject" in resource:
            assert patient_ids(resource), path.name
    assert not [r for r in caplog.records if r.name == "hub.search.extract"]


def test_derived_parameters_are_the_unions_of_others() -> None:
    """Observation's combo-* parameters are unions of two others of the same type and conversion:
    no rows of their own; searches read the sources' rows (tests/test_search_api.py searches them)."""
    registry = default_registry()
    assert derived_params("Observation", registry) == {
        "combo-code": ("code", "component-code"),
        "combo-code-value-concept": ("code-value-concept", "component-code-value-concept"),
        "combo-code-value-quantity": ("code-value-quantity", "component-code-value-quantity"),
        "combo-data-absent-reason": ("component-data-absent-reason", "data-absent-reason"),
        "combo-value-concept": ("component-value-concept", "value-concept"),
        "combo-value-quantity": ("component-value-quantity", "value-quantity"),
    }
    assert derived_params("Condition", registry) == {}  # `code` alone is no union
    assert sources("Observation", "status", registry) == ("status",)
    written = {row["param"] for table in extract(BLOOD_PRESSURE).values() for row in table}
    assert "component-code" in written and not any(code.startswith("combo-") for code in written)


def test_union_branches() -> None:
    assert _branches("(Observation.code | Observation.component.code)") == {
        "Observation.code",
        "Observation.component.code",
    }
    assert _branches("((A.value.ofType(Quantity) | A.value.ofType(SampledData)) | (A.x))") == {
        "A.value.ofType(Quantity)",
        "A.value.ofType(SampledData)",
        "A.x",
    }
    assert _branches("A.where(b | c).d") == {"A.where(b | c).d"}  # a union inside a call is no branch
    assert _branches("(A.b) | (A.c).d") == {"A.b", "(A.c).d"}
    assert _branches("A.b)") is None


VALUE_TYPES = ("Quantity", "CodeableConcept", "String", "Boolean", "Integer", "Range", "Ratio", "SampledData")
VALUE_TYPES += ("Time", "DateTime", "Period")


@pytest.mark.parametrize(
    ("expression", "keys"),
    [
        ("Observation.code", {"code"}),
        ("code", {"code"}),  # a member of the root, type name left out
        ("Observation.value.ofType(Quantity)", {f"value{t}" for t in VALUE_TYPES}),
        ("(Observation.value as Quantity)", None),  # checked below: every value[x] key, not None
        ("Observation.subject.where(resolve() is Patient)", {"subject"}),
        ("Observation.code | Observation.component.code", {"code", "component"}),
        ("Observation.component[0].code", {"component"}),
        ("Observation.code.exists()", None),  # answers `false` for a resource without a code
        ("Observation.code | Observation.where(status = 'final')", None),  # the root itself
        ("Observation.status = 'final'", None),
        ("%resource.code", None),
        ("Observation.code.union(Observation.category)", None),
    ],
)
def test_the_keys_an_expression_reads_first(expression: str, keys: set[str] | None) -> None:
    """Extraction skips a parameter whose expression reads none of the resource's keys: only sound
    when every value the expression can give starts from those keys (hub/search/fhirpath.root_keys)."""
    from hub.search.fhirpath import parse, root_keys

    found = root_keys(parse(expression), "Observation")
    if expression.startswith("(Observation.value as"):
        assert found is not None and {"valueQuantity", "valueString"} <= found
    else:
        assert found == (None if keys is None else frozenset(keys))


def test_skipping_parameters_by_the_keys_they_read_changes_no_row() -> None:
    """Every resource of two Synthea records (all the types it has), extracted with and without the skip."""
    registry = default_registry()
    resources = [e["resource"] for f in synthea_files()[2:4] for e in synthea_bundle(f.name)["entry"]]
    with_skip = [extract(r, registry) for r in resources]
    entries = [e for rt in {r["resourceType"] for r in resources} for e in plan(rt, registry)]
    saved = [e.evaluator.reads for e in entries]
    try:
        for e in entries:
            e.evaluator.reads = None
        assert [extract(r, registry) for r in resources] == with_skip
    finally:
        for e, reads in zip(entries, saved, strict=True):
            e.evaluator.reads = reads
    assert sum(reads is not None for reads in saved) > 100


# --- derived reference parameters ----------------------------------------------------------------


def test_derived_references_are_another_parameter_of_one_target_type() -> None:
    """Observation `patient` is `subject.where(resolve() is Patient)`: no rows of its own, searches
    read subject's rows with target_type Patient (tests/test_search_api.py searches them)."""
    registry = default_registry()
    assert derived_references("Observation", registry) == {"patient": ("subject", "Patient")}
    assert derived_references("Encounter", registry) == {
        "patient": ("subject", "Patient"),
        "practitioner": ("participant", "Practitioner"),
    }
    assert derived_references("Person", registry) == {
        "patient": ("link", "Patient"),
        "practitioner": ("link", "Practitioner"),
        "relatedperson": ("link", "RelatedPerson"),
    }
    assert derived_references("AllergyIntolerance", registry) == {}  # its `patient` is an element of its own
    assert derived_references("Patient", registry) == {}
    assert sum(len(derived_references(t, registry)) for t in structure().resource_types) == 47
    rows = extract({"resourceType": "Observation", "subject": {"reference": "Patient/p"}})["reference"]
    indexed = {r["param"] for r in rows}
    assert indexed == {"subject"}


def test_a_custom_source_ends_the_derivation() -> None:
    """A custom `subject` on Observation may mean anything: `patient` needs rows of its own again."""
    registry = Registry.load()
    registry.add(
        {
            "resourceType": "SearchParameter",
            "url": "http://example.org/SearchParameter/Observation-subject-focus",
            "status": "active",
            "code": "subject",
            "base": ["Observation"],
            "type": "reference",
            "expression": "Observation.focus",
        }
    )
    assert derived_references("Observation", registry) == {}
    obs = {"resourceType": "Observation", "subject": {"reference": "Patient/p"}, "focus": [{"reference": "Group/g"}]}
    rows = {(r["param"], r["target_type"]) for r in extract(obs, registry)["reference"]}
    assert rows == {("subject", "Group"), ("focus", "Group"), ("patient", "Patient")}


def _local_references(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    """The bundle's resources with its urn:uuid references rewritten to Type/id, as a load stores them."""
    local = {e["fullUrl"]: f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in bundle["entry"]}
    text = json.dumps([e["resource"] for e in bundle["entry"]])
    for urn, ref in local.items():
        text = text.replace(f'"{urn}"', f'"{ref}"')
    return json.loads(text)  # type: ignore[no-any-return]


def test_derived_references_find_the_rows_their_own_expression_gave() -> None:
    """Every resource of three Synthea records (references made local, and as they come, by urn:uuid),
    the Nictiz examples and a few hand-made references, extracted as before (each parameter its own
    rows) and as now: the source's rows of the type hold exactly the derived parameter's old rows,
    plus a reference typed only by Reference.type (a logical reference by identifier), by design."""
    registry = default_registry()
    own = Registry.load()  # indexes every parameter itself: no derived references
    own.derived_refs.update({t: {} for t in structure().resource_types})
    resources = [r for f in synthea_files()[2:5] for r in _local_references(synthea_bundle(f.name))]
    resources += [e["resource"] for e in synthea_bundle(synthea_files()[2].name)["entry"]]
    if NICTIZ_EXAMPLES.is_dir():
        parse_xml = pytest.importorskip("hub.formats.xml").parse_xml
        resources += [parse_xml(path.read_bytes()) for path in nictiz_example_files()]
    typed_only = {"identifier": {"system": "http://fhir.nl/fhir/NamingSystem/bsn", "value": "999911120"}}
    resources += [
        {"resourceType": "Observation", "subject": {**typed_only, "type": "Patient"}},
        {"resourceType": "Observation", "subject": typed_only},
        {"resourceType": "Observation", "subject": {"reference": "https://elders.example/fhir/Patient/p9"}},
        {"resourceType": "Observation", "subject": {"reference": "Group/g1"}},
        {"resourceType": "Encounter", "participant": [{"individual": {"reference": "Practitioner/d1"}},
                                                      {"individual": {"reference": "RelatedPerson/r1"}}]},
        {"resourceType": "Appointment", "participant": [{"actor": {"reference": "Location/l1"}},
                                                        {"actor": {"reference": "Patient/p1"}}]},
    ]  # fmt: skip
    compared = extra = 0
    for res in resources:
        rt = res["resourceType"]
        before, now = extract(res, own).get("reference", []), extract(res, registry).get("reference", [])
        derived = derived_references(rt, registry)
        assert [r for r in before if r["param"] not in derived] == now  # everything else as it was
        for code, (source, kind) in derived.items():
            old = [{**r, "param": source} for r in before if r["param"] == code]
            new = [r for r in now if r["param"] == source and r.get("target_type") == kind]
            assert all(r in new for r in old), (rt, code, res.get("id"))
            for r in new:
                if r not in old:  # typed by Reference.type alone: no literal reference to resolve()
                    assert r.get("target_id") is None and r.get("id_value"), (rt, code, r)
                    extra += 1
            compared += len(old)
    assert compared > 2000 and extra == 1
