"""The patient's AVG rights: access (one export), erasure (refused under retention, otherwise
complete), restriction (a deny-all consent). Rectification is an ordinary audited update."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from conftest import ORIGIN, system_client, token_for
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from hub.app import Services, create_app
from hub.store.tables import care_relation, idx_token, resource, resource_author

JSON = {"Content-Type": "application/fhir+json"}
BSN = "http://fhir.nl/fhir/NamingSystem/bsn"
GGC = "http://fhir.nl/otv/CodeSystem/gegevenscategorie"
RPZAC = "http://fhir.nl/otv/CodeSystem/raadplegende-zorgaanbiedercategorie"


def org_client(services: Services, name: str, kind: str, ura: str) -> TestClient:
    c = system_client(name, "system/*.cruds", organisation_type=kind, ura=ura)
    return TestClient(
        create_app(services=services), base_url=ORIGIN, headers={"Authorization": f"Bearer {token_for(services, c)}"}
    )


def pgo_client(services: Services, patient_id: str) -> TestClient:
    app = system_client("pgo-app", "patient/*.rs patient/Consent.cu", organisation_type="pgo", ura=None)
    token = token_for(services, app, patient_id=patient_id, subject="999911120")
    return TestClient(create_app(services=services), base_url=ORIGIN, headers={"Authorization": f"Bearer {token}"})


def obs(oid: str, pid: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": oid,
        "status": "final",
        "code": {"text": "bloeddruk"},
        "subject": {"reference": f"Patient/{pid}"},
    }


def consent(status: str = "active", decision: str = "permit", consulting: str | None = "RPZAC001") -> dict[str, Any]:
    res: dict[str, Any] = {
        "resourceType": "Consent",
        "id": "choice",
        "status": status,
        "scope": {
            "coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]
        },
        "category": [{"coding": [{"system": GGC, "code": "GGC002"}]}],
        "patient": {"reference": "Patient/p1"},
        "provision": {"type": decision},
    }
    if consulting:
        res["extension"] = [
            {
                "url": "http://fhir.nl/StructureDefinition/OTV-ProviderCategory",
                "valueCodeableConcept": {"coding": [{"system": RPZAC, "code": consulting}]},
            }
        ]
    return res


@pytest.fixture
def world(services: Services) -> Iterator[tuple[TestClient, TestClient, TestClient]]:
    with (
        org_client(services, "hix", "hospital", "10000001") as hospital,
        org_client(services, "his", "gp", "10000002") as gp,
        pgo_client(services, "p1") as pgo,
    ):
        for res in (
            {"resourceType": "Patient", "id": "p1", "identifier": [{"system": BSN, "value": "999911120"}]},
            {"resourceType": "Patient", "id": "p2", "identifier": [{"system": BSN, "value": "999909587"}]},
            obs("o1", "p1"),
            obs("o2", "p2"),
        ):
            assert hospital.put(f"/fhir/{res['resourceType']}/{res['id']}", json=res, headers=JSON).status_code == 201
        assert pgo.put("/fhir/Consent/choice", json=consent(), headers=JSON).status_code == 201
        assert gp.get("/fhir/Observation/o1").status_code == 200  # an access the log will show
        yield hospital, gp, pgo


def test_access_the_patient_exports_everything_held_about_them(world: Any) -> None:
    _hospital, gp, pgo = world
    r = pgo.get("/fhir/Patient/p1/$avg-export")
    assert r.status_code == 200, r.text
    bundle = r.json()
    assert bundle["type"] == "collection"
    held = {f"{e['resource']['resourceType']}/{e['resource'].get('id')}" for e in bundle["entry"]}
    assert {"Patient/p1", "Observation/o1", "Consent/choice"} <= held
    assert "Observation/o2" not in held and "Patient/p2" not in held
    log = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "AuditEvent"]
    assert log, "the access log is part of the export"
    gp_reads = [
        e
        for e in log
        if e["action"] == "R" and "URA 10000002" in e["agent"][0]["who"]["display"]
        and e["entity"][0]["what"]["display"] == "measurements and test results"
    ]  # fmt: skip
    assert len(gp_reads) == 1, log  # the GP's read, in plain terms
    # only the patient themselves
    assert gp.get("/fhir/Patient/p1/$avg-export").status_code == 403
    assert pgo.get("/fhir/Patient/p2/$avg-export").status_code in (403, 404)


def test_erasure_is_refused_while_retention_applies(world: Any, services: Services) -> None:
    hospital, _gp, pgo = world
    r = pgo.post("/fhir/Patient/p1/$avg-erase")
    assert r.status_code == 409
    issue = r.json()["issue"][0]
    assert issue["code"] == "business-rule" and "WGBO" in issue["diagnostics"]
    assert hospital.get("/fhir/Observation/o1").status_code == 200  # nothing was erased


def test_erasure_removes_every_version_when_nothing_is_retained(world: Any, services: Services) -> None:
    hospital, gp, pgo = world
    assert (
        hospital.put("/fhir/Observation/o1", json={**obs("o1", "p1"), "status": "amended"}, headers=JSON).status_code
        == 200
    )
    task = {
        "resourceType": "Task",
        "id": "t1",
        "status": "requested",
        "intent": "order",
        "for": {"reference": "Patient/p1"},
        "owner": {"identifier": {"system": "http://fhir.nl/fhir/NamingSystem/ura", "value": "10000002"}},
    }
    assert hospital.put("/fhir/Task/t1", json=task, headers=JSON).status_code == 201
    with services.db.transaction() as conn:  # the care process it implies (consent/care.py)
        assert conn.execute(select(care_relation.c.patient_id)).scalars().all() == ["p1"]
    services.settings = services.settings.with_(retention_years=0)
    assert gp.post("/fhir/Patient/p1/$avg-erase").status_code == 403  # not the GP's right to use
    r = pgo.post("/fhir/Patient/p1/$avg-erase")
    assert r.status_code == 200, r.text
    for path in ("/fhir/Patient/p1", "/fhir/Observation/o1", "/fhir/Observation/o1/_history/1", "/fhir/Consent/choice"):
        assert hospital.get(path).status_code == 404, path  # gone, not merely deleted (410)
    assert hospital.get("/fhir/Observation", params={"patient": "p1", "_summary": "count"}).json()["total"] == 0
    assert hospital.get("/fhir/Patient", params={"identifier": f"{BSN}|999911120"}).json().get("entry") is None
    with services.db.transaction() as conn:
        left = conn.execute(
            select(func.count()).select_from(resource).where(resource.c.res_id.in_(["p1", "o1", "choice"]))
        ).scalar_one()
        authors = conn.execute(
            select(func.count()).select_from(resource_author).where(resource_author.c.res_id.in_(["p1", "o1"]))
        ).scalar_one()
        tokens = conn.execute(
            select(func.count()).select_from(idx_token).where(idx_token.c.code == "999911120")
        ).scalar_one()
        relations = conn.execute(select(func.count()).select_from(care_relation)).scalar_one()
    assert (left, authors, tokens, relations) == (0, 0, 0, 0)
    # the other patient is untouched
    assert hospital.get("/fhir/Observation/o2").status_code == 200
    assert hospital.get("/fhir/Patient/p2").status_code == 200


def test_restriction_is_a_deny_all_consent(world: Any) -> None:
    hospital, gp, pgo = world
    assert gp.get("/fhir/Observation/o1").status_code == 200
    restriction = consent(decision="deny", consulting=None)
    restriction.pop("category")
    restriction["category"] = [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}]
    assert pgo.put("/fhir/Consent/choice", json=restriction, headers=JSON).status_code == 200
    assert gp.get("/fhir/Observation/o1").status_code == 404
    assert hospital.get("/fhir/Observation/o1").status_code == 200  # the data holder keeps its record
