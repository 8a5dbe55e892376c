"""The searches an ACP (Advance Care Planning, IKNL "PZP") provider must answer
(../shared/fixtures/acp-pzp/SEARCHES.md), on data written after the IG's examples.

The resources are the IG's FSH example instances for patient Hendrik Hartman (fsh/*.fsh), written
out as JSON here (ids as in the IG; meta.profile left out: the hub does not hold the ACP profiles),
plus an AdvanceDirective Consent shaped like nl-core-AdvanceDirective-01 (the IG has no example of
one), the IG's two QuestionnaireResponses (given a subject: the published ones have none), and
look-alikes that must not match: another patient with the same kinds of data, a Goal and a device
outside the searched ValueSets, another Communication reason. Like a deployment, the test POSTs the
custom SearchParameter of fsh/SearchParameter.fsh, one for Goal.description (search 4 needs it and
R4 has none), and the two ValueSets of fsh/ValueSet.fsh that searches 4 and 6 use; the ICD value
set (`is-a 72506001`) expands over a SNOMED CT fragment CodeSystem holding the concepts used here.
"""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from support import FIXTURES

ACP = FIXTURES / "acp-pzp"
JSON = {"Content-Type": "application/fhir+json"}
SNOMED = "http://snomed.info/sct"
BSN = "http://fhir.nl/fhir/NamingSystem/bsn"
RI = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "RI"}]}
BUSINESS_ID = "https://acme.com/fhir/NamingSystem/resource-business-identifier"
IKNL = "https://fhir.iknl.nl/fhir"
POLICY_GOAL_VS = f"{IKNL}/ValueSet/ACP-MedicalPolicyGoal"
ICD_VS = f"{IKNL}/ValueSet/ACP-MedicalDeviceProductType-ICD"
QUESTIONNAIRE = f"{IKNL}/Questionnaire/ACP-zib2020"
ENC_EXT = f"{IKNL}/StructureDefinition/ext-EncounterReference"

HENDRIK = "F1-ACP-Patient-HendrikHartman"
ENCOUNTER = "F1-ACP-Encounter-01-10-2020"
ROLE = "F1-ACP-HealthProfessional-PractitionerRole-DrVanHuissen"
MICHIEL = "F1-ACP-ContactPerson-MichielHartman"
PROCEDURE = "F1-ACP-Procedure-01-10-2020"


def ref(kind: str, rid: str, display: str | None = None, typed: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {"reference": f"{kind}/{rid}"}
    if typed:
        out["type"] = kind
    if display:
        out["display"] = display
    return out


def sct(code: str, display: str | None = None) -> dict[str, Any]:
    return {"coding": [{"system": SNOMED, "code": code, **({"display": display} if display else {})}]}


def business_id(value: str) -> list[dict[str, Any]]:
    return [{"type": RI, "system": BUSINESS_ID, "value": value}]


def encounter_ext() -> list[dict[str, Any]]:
    return [{"url": ENC_EXT, "valueReference": ref("Encounter", ENCOUNTER, "Encounter, 2020-10-01")}]


def patient(pid: str, bsn: str, family: str, given: str) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "id": pid,
        "extension": [
            {
                "url": f"{IKNL}/StructureDefinition/ext-LegallyCapable-MedicalTreatmentDecisions",
                "extension": [{"url": "legallyCapable", "valueBoolean": True}],
            }
        ],
        "identifier": [{"system": BSN, "value": bsn}],
        "name": [{"use": "official", "text": f"{given} {family}", "family": family, "given": [given]}],
        "birthDate": "1961-01-01",
    }


def hendrik_and_his_care_network() -> list[dict[str, Any]]:
    hendrik = patient(HENDRIK, "999911120", "Hartman", "Hendrik")
    hendrik["contact"] = [
        {
            "extension": [
                {
                    "url": "http://hl7.org/fhir/StructureDefinition/patient-relatedPerson",
                    "valueReference": ref("RelatedPerson", MICHIEL),
                }
            ],
            "relationship": [
                {"coding": [{"system": "urn:oid:2.16.840.1.113883.2.4.3.11.22.472", "code": "01"}]},
                {"coding": [{"system": "urn:oid:2.16.840.1.113883.2.4.3.11.22.472", "code": "24"}]},
                {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-RoleCode", "code": "BRO"}]},
            ],
            "name": {"use": "official", "text": "Michiel Hartman", "family": "Hartman", "given": ["Michiel"]},
            "telecom": [{"system": "email", "value": "michiel.hartman@iknl.nl", "use": "work"}],
        }
    ]
    return [
        hendrik,
        {
            "resourceType": "Practitioner",
            "id": "F1-ACP-HealthProfessional-Practitioner-DrVanHuissen",
            "identifier": [{"system": "http://fhir.nl/fhir/NamingSystem/agb-z", "value": "01999999"}],
            "name": [{"use": "official", "text": "van Huissen", "family": "van Huissen"}],
        },
        {
            "resourceType": "PractitionerRole",
            "id": ROLE,
            "identifier": business_id("ff6d8146-1014-4ef4-9645-e8207364c942"),
            "practitioner": ref("Practitioner", "F1-ACP-HealthProfessional-Practitioner-DrVanHuissen", typed=True),
            "specialty": [{"coding": [{"system": "urn:oid:2.16.840.1.113883.2.4.6.7", "code": "0100"}]}],
        },
        {
            "resourceType": "RelatedPerson",
            "id": MICHIEL,
            "identifier": business_id("ebe579d0-fda9-4440-ac6c-6afb0b338006"),
            "patient": ref("Patient", HENDRIK, typed=True),
            "relationship": [
                {"coding": [{"system": "urn:oid:2.16.840.1.113883.2.4.3.11.22.472", "code": "01"}]},
                {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-RoleCode", "code": "BRO"}]},
            ],
            "name": [{"use": "official", "text": "Michiel Hartman", "family": "Hartman", "given": ["Michiel"]}],
            "telecom": [{"system": "email", "value": "michiel.hartman@iknl.nl", "use": "work"}],
        },
    ]


def acp_conversation(pid: str, suffix: str = "") -> list[dict[str, Any]]:
    """The ACP conversation of 2020-10-01: Encounter, Procedure, Communication (after the IG's F1 examples)."""
    enc, proc = ENCOUNTER + suffix, PROCEDURE + suffix
    return [
        {
            "resourceType": "Encounter",
            "id": enc,
            "identifier": business_id("64627bfa-a127-4d3a-8187-39426d7937dc" + suffix),
            "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
            "subject": ref("Patient", pid),
            "participant": [
                {"individual": ref("PractitionerRole", ROLE, typed=True)},
                *([{"individual": ref("RelatedPerson", MICHIEL, typed=True)}] if not suffix else []),
            ],
            "period": {"start": "2020-10-01", "end": "2020-10-01"},
            "reasonReference": [ref("Procedure", proc, "Procedure, ACP")],
        },
        {
            "resourceType": "Procedure",
            "id": proc,
            "identifier": business_id("64627bfa-f127-4d3a-2387-39426d7937dc" + suffix),
            "status": "completed",
            "code": sct("713603004", "Advance care planning (procedure)"),
            "subject": ref("Patient", pid),
            "encounter": ref("Encounter", enc),
            "performer": [
                {"actor": ref("PractitionerRole", ROLE, typed=True)},
                {"actor": ref("Patient", pid, typed=True)},
            ],
            "performedPeriod": {"start": "2020-10-01", "end": "2020-10-01"},
        },
        {
            "resourceType": "Communication",
            "id": "F1-ACP-Communication-01-10-2020" + suffix,
            "identifier": business_id("dd6d7146-1014-4ef4-9145-e8207364c942" + suffix),
            "status": "completed",
            "topic": {**sct("223449006", "Recommendation to inform someone (procedure)"), "text": "Informeren"},
            "sent": "2020-10-01",
            "subject": ref("Patient", pid),
            "recipient": [ref("Patient", pid)],
            "sender": ref("PractitionerRole", ROLE),
            "reasonCode": [sct("713603004", "Advance care planning (procedure)")],
        },
    ]


TREATMENT_CODES = ["305351004", "89666000", "40617009", "116762002", "281789004", "32485007"]


def treatment_directive(tid: str, code: dict[str, Any], date: str, with_michiel: bool = False) -> dict[str, Any]:
    actors = [ref("Patient", HENDRIK, typed=True), ref("PractitionerRole", ROLE, typed=True)]
    if with_michiel:
        actors.append(ref("RelatedPerson", MICHIEL, typed=True))
    return {
        "resourceType": "Consent",
        "id": tid,
        "extension": encounter_ext(),
        "identifier": business_id(tid),
        "status": "active",
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "treatment"}]},
        "category": [sct("129125009", "Procedure with explicit context")],
        "patient": ref("Patient", HENDRIK),
        "dateTime": date,
        "policy": [{"uri": "https://wetten.overheid.nl/"}],
        "provision": {
            "type": "permit",
            "actor": [
                {
                    "role": {
                        "coding": [
                            {"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "PPRF"}
                        ]
                    },
                    "reference": a,
                }
                for a in actors
            ],
            "code": [code],
        },
    }


def directives() -> list[dict[str, Any]]:
    out = [treatment_directive(f"F1-ACP-TreatmentDirective-{c}", sct(c), "2020-10-01") for c in TREATMENT_CODES]
    other = {
        "coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-NullFlavor", "code": "OTH"}],
        "text": "Uitzetten van cardioverter-defibrillator in laatste levensfase (verrichting)",
    }
    icd_off = treatment_directive("F1-ACP-TreatmentDirective-400231000146108", other, "2020-10-01")
    del icd_off["provision"]["type"]
    icd_off["modifierExtension"] = [
        {
            "url": "http://nictiz.nl/fhir/StructureDefinition/ext-TreatmentDirective2.SpecificationOther",
            "valueString": "Niet besproken",
        }
    ]
    out.append(icd_off)
    out.append(treatment_directive("F2-ACP-TreatmentDirective-305351004", sct("305351004"), "2022-11-08", True))
    out.append(  # shaped like nl-core-AdvanceDirective-01: a euthanasia request
        {
            "resourceType": "Consent",
            "id": "ACP-AdvanceDirective-Euthanasie",
            "extension": encounter_ext(),
            "status": "active",
            "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "adr"}]},
            "category": [
                {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentcategorycodes", "code": "acd"}]}
            ],
            "patient": ref("Patient", HENDRIK),
            "dateTime": "2020-10-01",
            "policy": [{"uri": "https://wetten.overheid.nl/"}],
            "provision": {
                "actor": [
                    {
                        "role": {
                            "coding": [
                                {"system": "http://terminology.hl7.org/CodeSystem/v3-RoleCode", "code": "RESPRSN"}
                            ]
                        },
                        "reference": ref("RelatedPerson", MICHIEL, typed=True),
                    }
                ],
                "code": [{"coding": [{"system": "urn:oid:2.16.840.1.113883.2.4.3.11.60.40.4.14.1", "code": "EU"}]}],
            },
        }
    )
    return out


def observation(oid: str, code: str, **value: Any) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": oid,
        "status": "final",
        "code": sct(code),
        "subject": ref("Patient", HENDRIK),
        "encounter": ref("Encounter", ENCOUNTER),
        "performer": [ref("PractitionerRole", ROLE)],
        "effectiveDateTime": "2020-10-01",
        **value,
    }


def wishes_goal_and_devices() -> list[dict[str, Any]]:
    return [
        observation(
            "F1-ACP-SpecificCareWishes",
            "153851000146100",
            valueString="Hendrik wil er alles aan doen om zo lang mogelijk in goede gezondheid te kunnen leven.",
            method=sct("370819000"),
        ),
        observation(
            "F1-ACP-PreferredPlaceOfDeath-Unknown",
            "395091006",
            dataAbsentReason={
                "coding": [
                    {"system": "http://terminology.hl7.org/CodeSystem/data-absent-reason", "code": "asked-unknown"}
                ]
            },
            note=[{"text": "Nog niet besproken"}],
        ),
        observation(
            "F1-ACP-PositionRegardingEuthanasia-Unknown",
            "340171000146104",
            valueCodeableConcept={
                "coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-NullFlavor", "code": "UNK"}]
            },
        ),
        observation(
            "F1-ACP-OrganDonationChoiceRegistration-Yes", "570801000146104", valueCodeableConcept=sct("373066001")
        ),
        observation(
            "F1-ACP-OtherImportantInformation",
            "247751003",
            valueString="Michiel gaat nadenken over wat hij belangrijk vindt. Over een tijdje vervolggesprek",
        ),
        {
            "resourceType": "Goal",
            "id": "F1-ACP-Medical-Policy-Goal",
            "extension": encounter_ext(),
            "identifier": business_id("a1e0d113-bf6d-4e5c-9bf4-044eda75b709"),
            "lifecycleStatus": "active",
            "description": sct("1351964001", "levensverlengende behandeling"),
            "subject": ref("Patient", HENDRIK),
            "statusDate": "2020-10-01",
        },
        {  # a goal of Hendrik's that is not a medical-policy goal
            "resourceType": "Goal",
            "id": "goal-hardlopen",
            "lifecycleStatus": "active",
            "description": {**sct("229065009", "Exercise therapy"), "text": "Blijven hardlopen"},
            "subject": ref("Patient", HENDRIK),
        },
        {
            "resourceType": "Device",
            "id": "F1-ACP-MedicalDevice.Product-ICD",
            "identifier": business_id("00e66024-84a5-44f8-84e9-f8ac339bfd5a"),
            "type": sct("465460004", "univentriculaire implanteerbare hartdefibrillator"),
        },
        {
            "resourceType": "DeviceUseStatement",
            "id": "F1-ACP-MedicalDevice-ICD",
            "extension": encounter_ext(),
            "identifier": business_id("99a671c0-f756-4c29-bba2-ad8d6f05a5fe"),
            "status": "active",
            "subject": ref("Patient", HENDRIK),
            "timingPeriod": {"start": "2018"},
            "device": ref("Device", "F1-ACP-MedicalDevice.Product-ICD"),
            "note": [{"text": "Geïmplanteerd in 2018"}],
        },
        {  # a Communication of Hendrik's for another reason
            "resourceType": "Communication",
            "id": "communication-medicatie",
            "status": "completed",
            "subject": ref("Patient", HENDRIK),
            "reasonCode": [sct("182836005", "Review of medication")],
        },
        {"resourceType": "Device", "id": "pacemaker", "type": sct("14106009", "Cardiac pacemaker")},
        {
            "resourceType": "DeviceUseStatement",
            "id": "dus-pacemaker",
            "status": "active",
            "subject": ref("Patient", HENDRIK),
            "device": ref("Device", "pacemaker"),
        },
    ]


def questionnaire_responses() -> list[dict[str, Any]]:
    out = [json.loads((ACP / "resources" / "Questionnaire-ACP-zib2020.json").read_text())]
    for name in (
        "QuestionnaireResponse-HendrikHartman-20201001.json",
        "QuestionnaireResponse-HendrikHartman-20221108.json",
    ):
        qr = json.loads((ACP / "resources" / name).read_text())
        qr["subject"] = ref("Patient", HENDRIK)
        out.append(qr)
    jansen = json.loads((ACP / "resources" / "QuestionnaireResponse-HendrikHartman-20201001.json").read_text())
    out.append({**jansen, "id": "qr-jansen", "subject": ref("Patient", "jansen")})
    return out


def someone_else() -> list[dict[str, Any]]:
    """Another patient with an ACP conversation and a goal from the same value set."""
    return [
        patient("jansen", "999909587", "Jansen", "Piet"),
        *acp_conversation("jansen", "-jansen"),
        {
            "resourceType": "Goal",
            "id": "goal-jansen",
            "lifecycleStatus": "active",
            "description": sct("713148004", "voorkomen en behandelen van symptomen"),
            "subject": ref("Patient", "jansen"),
        },
    ]


def terminology() -> list[dict[str, Any]]:
    meta = {"status": "draft", "version": "0.1.0", "publisher": "IKNL"}
    return [
        {
            "resourceType": "ValueSet",
            "id": "ACP-MedicalPolicyGoal",
            "url": POLICY_GOAL_VS,
            "name": "MedicalPolicyGoalVS",
            **meta,
            "compose": {
                "include": [
                    {
                        "system": SNOMED,
                        "concept": [
                            {"code": "385987000", "display": "zorg bij ziekte en/of letsel"},
                            {"code": "1351964001", "display": "levensverlengende behandeling"},
                            {"code": "713148004", "display": "voorkomen en behandelen van symptomen"},
                        ],
                    }
                ]
            },
        },
        {
            "resourceType": "ValueSet",
            "id": "ACP-MedicalDeviceProductType-ICD",
            "url": ICD_VS,
            "name": "ACPMedicalDeviceProductTypeICDVS",
            **meta,
            "compose": {
                "include": [{"system": SNOMED, "filter": [{"property": "concept", "op": "is-a", "value": "72506001"}]}]
            },
        },
        {  # the part of SNOMED CT's device hierarchy this test uses (intermediate concepts left out)
            "resourceType": "CodeSystem",
            "id": "snomed-devices-fragment",
            "url": SNOMED,
            "status": "active",
            "content": "fragment",
            "concept": [
                {
                    "code": "72506001",
                    "display": "Implantable defibrillator",
                    "concept": [
                        {"code": "465460004", "display": "Univentricular implantable cardioverter defibrillator"}
                    ],
                },
                {"code": "14106009", "display": "Cardiac pacemaker"},
            ],
        },
    ]


def search_parameters() -> list[dict[str, Any]]:
    """fsh/SearchParameter.fsh (Communication reason-code), and a Goal `description`: search 4 needs
    one and R4 defines none (Goal has no description parameter in the base spec)."""
    goal_description = {
        "resourceType": "SearchParameter",
        "url": "http://hub.example.nl/fhir/SearchParameter/Goal-description",
        "name": "GoalDescription",
        "status": "active",
        "description": "Goal.description, for ACP search 4 (description:in)",
        "code": "description",
        "base": ["Goal"],
        "type": "token",
        "expression": "Goal.description",
    }
    return [_reason_code(), goal_description]


def _reason_code() -> dict[str, Any]:
    return {
        "resourceType": "SearchParameter",
        "url": f"{IKNL}/SearchParameter/Communication-reason-code",
        "version": "4.0.1",
        "name": "ReasonCode",
        "status": "draft",
        "experimental": False,
        "date": "2025-07-24T15:21:02+11:00",
        "publisher": "IKNL",
        "description": "ReasonCode for the Communication",
        "code": "reason-code",
        "base": ["Communication"],
        "type": "token",
        "expression": "Communication.reasonCode",
    }


@pytest.fixture
def acp(client: TestClient) -> TestClient:
    resources = [
        *hendrik_and_his_care_network(),
        *acp_conversation(HENDRIK),
        *directives(),
        *wishes_goal_and_devices(),
        *questionnaire_responses(),
        *someone_else(),
    ]
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": r, "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}} for r in resources
        ],
    }
    r = client.post("/fhir", content=orjson.dumps(bundle), headers=JSON)
    assert r.status_code == 200, r.text
    # after the data, as a deployment adds them: the hub indexes existing Communications for it
    for sp in search_parameters():
        r = client.post("/fhir/SearchParameter", content=orjson.dumps(sp), headers=JSON)
        assert r.status_code == 201, r.text
    for res in terminology():
        r = client.put(f"/fhir/{res['resourceType']}/{res['id']}", content=orjson.dumps(res), headers=JSON)
        assert r.status_code in (200, 201), r.text
    return client


def patient_id(client: TestClient, bsn: str) -> str:
    r = client.get("/fhir/Patient", params={"identifier": f"{BSN}|{bsn}"})
    assert r.status_code == 200, r.text
    (entry,) = r.json()["entry"]
    return str(entry["resource"]["id"])


SEARCHES = {
    "1a": (
        "Procedure?patient={id}&code=http://snomed.info/sct|713603004&_include=Procedure:encounter",
        {f"Procedure/{PROCEDURE}"},
        {f"Encounter/{ENCOUNTER}"},
    ),
    "1b": (
        "Encounter?patient={id}&reason-reference:Procedure.code=http://snomed.info/sct|713603004"
        "&_include=Encounter:reason-reference",
        {f"Encounter/{ENCOUNTER}"},
        {f"Procedure/{PROCEDURE}"},
    ),
    "2": (
        "Consent?patient={id}&scope=http://terminology.hl7.org/CodeSystem/consentscope|treatment"
        "&category=http://snomed.info/sct|129125009&_include=Consent:actor",
        {f"Consent/F1-ACP-TreatmentDirective-{c}" for c in [*TREATMENT_CODES, "400231000146108"]}
        | {"Consent/F2-ACP-TreatmentDirective-305351004"},
        {f"Patient/{HENDRIK}", f"PractitionerRole/{ROLE}", f"RelatedPerson/{MICHIEL}"},
    ),
    "3": (
        "Consent?patient={id}&scope=http://terminology.hl7.org/CodeSystem/consentscope|adr"
        "&category=http://terminology.hl7.org/CodeSystem/consentcategorycodes|acd&_include=Consent:actor",
        {"Consent/ACP-AdvanceDirective-Euthanasie"},
        {f"RelatedPerson/{MICHIEL}"},
    ),
    "4": (
        f"Goal?patient={{id}}&description:in={POLICY_GOAL_VS}",
        {"Goal/F1-ACP-Medical-Policy-Goal"},
        set(),
    ),
    "5": (
        "Observation?patient={id}&code=http://snomed.info/sct|153851000146100,http://snomed.info/sct|395091006,"
        "http://snomed.info/sct|340171000146104,http://snomed.info/sct|247751003",
        {
            "Observation/F1-ACP-SpecificCareWishes",
            "Observation/F1-ACP-PreferredPlaceOfDeath-Unknown",
            "Observation/F1-ACP-PositionRegardingEuthanasia-Unknown",
            "Observation/F1-ACP-OtherImportantInformation",
        },
        set(),
    ),
    "6": (
        f"DeviceUseStatement?patient={{id}}&device.type:in={ICD_VS}&_include=DeviceUseStatement:device",
        {"DeviceUseStatement/F1-ACP-MedicalDevice-ICD"},
        {"Device/F1-ACP-MedicalDevice.Product-ICD"},
    ),
    "7": (
        "Communication?patient={id}&reason-code=http://snomed.info/sct|713603004",
        {"Communication/F1-ACP-Communication-01-10-2020"},
        set(),
    ),
    "Q": (
        f"QuestionnaireResponse?subject=Patient/{{id}}&questionnaire={QUESTIONNAIRE}",
        {"QuestionnaireResponse/HendrikHartman-20201001", "QuestionnaireResponse/HendrikHartman-20221108"},
        set(),
    ),
}


@pytest.mark.parametrize("number", list(SEARCHES))
def test_acp_search(acp: TestClient, number: str) -> None:
    template, expected_matches, expected_includes = SEARCHES[number]
    url = "/fhir/" + template.format(id=patient_id(acp, "999911120"))
    r = acp.get(url.replace("|", "%7C"), headers={"Prefer": "handling=strict"})
    assert r.status_code == 200, r.text
    entries = r.json().get("entry", [])
    found = {
        mode: {f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in entries if e["search"]["mode"] == mode}
        for mode in ("match", "include")
    }
    assert found["match"] == expected_matches
    assert found["include"] == expected_includes
    assert r.json()["total"] == len(expected_matches)


def test_the_other_patient_has_the_conversation_but_not_the_directives(acp: TestClient) -> None:
    """The searches select by patient: Jansen's ACP procedure and goal are his, he has no directives."""
    jansen = patient_id(acp, "999909587")
    r = acp.get(f"/fhir/Procedure?patient={jansen}&code=http://snomed.info/sct%7C713603004")
    assert [e["resource"]["id"] for e in r.json()["entry"]] == [f"{PROCEDURE}-jansen"]
    r = acp.get("/fhir/Goal", params={"patient": jansen, "description:in": POLICY_GOAL_VS})
    assert [e["resource"]["id"] for e in r.json()["entry"]] == ["goal-jansen"]
    r = acp.get("/fhir/Consent", params={"patient": jansen})
    assert r.json()["total"] == 0
