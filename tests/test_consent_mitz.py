"""The Mitz consent notification Bundle (../shared/fixtures/mitz) as input: Consent/$mitz-notify."""

from __future__ import annotations

from pathlib import Path

from conftest import ORIGIN, system_client, token_for
from fastapi.testclient import TestClient
from support import FIXTURES

from hub.app import Services, create_app

NOTIFICATION = FIXTURES / "mitz" / "example-example_notification_bundle.xml"
JSON = {"Content-Type": "application/fhir+json"}
XML = {"Content-Type": "application/fhir+xml"}
BSN = "http://fhir.nl/fhir/NamingSystem/bsn"
URA = "http://fhir.nl/fhir/NamingSystem/ura"
HOLDER_URA = "00000659"  # the custodian the example's consents name


def client_of(services: Services, name: str, kind: str, ura: str) -> TestClient:
    c = system_client(name, "system/*.cruds", organisation_type=kind, ura=ura)
    return TestClient(
        create_app(services=services), base_url=ORIGIN, headers={"Authorization": f"Bearer {token_for(services, c)}"}
    )


def test_the_mitz_notification_bundle_sets_the_patients_choice(services: Services) -> None:
    xml = Path(NOTIFICATION).read_bytes()
    with (
        client_of(services, "hix", "hospital", HOLDER_URA) as hospital,
        client_of(services, "registry", "consent-registry", "10000006") as registry,
        client_of(services, "apotheek", "pharmacy", "10000004") as pharmacy,
        client_of(services, "huisarts", "gp", "10000002") as gp,
    ):
        patient = {"resourceType": "Patient", "id": "p", "identifier": [{"system": BSN, "value": "900186021"}]}
        assert hospital.put("/fhir/Patient/p", json=patient, headers=JSON).status_code == 201
        obs = {
            "resourceType": "Observation",
            "id": "o",
            "status": "final",
            "code": {"text": "bloeddruk"},
            "subject": {"reference": "Patient/p"},
        }
        assert hospital.put("/fhir/Observation/o", json=obs, headers=JSON).status_code == 201
        assert pharmacy.get("/fhir/Observation/o").status_code == 404  # no consent yet

        r = registry.post("/fhir/Consent/$mitz-notify", content=xml, headers=XML)
        assert r.status_code == 200, r.text
        # The patient and the custodian were matched by BSN / URA, not created again.
        patients = registry.get("/fhir/Patient", params={"identifier": f"{BSN}|900186021"}).json()
        assert [e["resource"]["id"] for e in patients["entry"]] == ["p"]
        consent = registry.get("/fhir/Consent/27b7bc07-7a6a-4545-a813-0f0bba89b09c").json()
        assert consent["patient"]["reference"] == "Patient/p"
        org_ref = consent["provision"]["actor"][0]["reference"]["reference"]
        org = registry.get(f"/fhir/{org_ref}").json()
        assert org["identifier"][0]["value"] == HOLDER_URA

        # Permit GGC002 from the custodian to pharmacies (RPZAC005); the other consent is inactive.
        assert pharmacy.get("/fhir/Observation/o").status_code == 200
        assert gp.get("/fhir/Observation/o").status_code == 404

        # Sent again: nothing new is created (idempotent by BSN, URA and the Mitz consent id).
        assert registry.post("/fhir/Consent/$mitz-notify", content=xml, headers=XML).status_code == 200
        orgs = registry.get("/fhir/Organization", params={"identifier": f"{URA}|{HOLDER_URA}"}).json()
        assert len(orgs["entry"]) == 1

        # A later notification withdraws the permit (status inactive): it counts at once.
        withdrawn = xml.replace(b'<status value="active"/>', b'<status value="inactive"/>')
        assert registry.post("/fhir/Consent/$mitz-notify", content=withdrawn, headers=XML).status_code == 200
        assert pharmacy.get("/fhir/Observation/o").status_code == 404


def test_only_the_registry_sends_notifications(services: Services) -> None:
    with client_of(services, "huisarts", "gp", "10000002") as gp:
        r = gp.post("/fhir/Consent/$mitz-notify", content=NOTIFICATION.read_bytes(), headers=XML)
        assert r.status_code == 403
        assert gp.get("/fhir/Consent", params={"_summary": "count"}).json()["total"] == 0


def test_a_malformed_notification_is_refused_and_stores_nothing(services: Services) -> None:
    with client_of(services, "registry", "consent-registry", "10000006") as registry:
        r = registry.post("/fhir/Consent/$mitz-notify", json={"resourceType": "Patient"}, headers=JSON)
        assert r.status_code == 400 and r.json()["resourceType"] == "OperationOutcome"
        bundle = {
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [
                {"resource": {"resourceType": "Patient", "identifier": [{"system": BSN, "value": "999911120"}]}},
                {"resource": {"resourceType": "Consent", "status": "active"}},  # no Mitz id
            ],
        }
        r = registry.post("/fhir/Consent/$mitz-notify", json=bundle, headers=JSON)
        assert r.status_code == 400
        assert r.json()["issue"][0]["expression"] == ["Bundle.entry[1].resource.id"]
        assert registry.get("/fhir/Patient", params={"_summary": "count"}).json()["total"] == 0


def test_state_changing_operations_run_in_write_transactions() -> None:
    """$mitz-notify and $avg-erase write: on SQLite their transaction must begin IMMEDIATE, or a
    concurrent writer (e.g. the audit journal's drainer) makes the lock upgrade fail at once."""
    from hub.pipeline import OPERATION, Interaction

    assert Interaction(OPERATION, res_type="Consent", operation="$mitz-notify").writes
    assert Interaction(OPERATION, res_type="Patient", res_id="p", operation="$avg-erase").writes
    assert not Interaction(OPERATION, res_type="Patient", res_id="p", operation="$everything").writes
