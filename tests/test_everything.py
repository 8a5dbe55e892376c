"""Patient/$everything: the patient, their compartment, what it refers to; paging, _type, _since."""

from __future__ import annotations

from typing import Any

from conftest import patient
from fastapi.testclient import TestClient

JSON = {"Content-Type": "application/fhir+json"}
BSN = "http://fhir.nl/fhir/NamingSystem/bsn"


def put(client: TestClient, res: dict[str, Any]) -> None:
    r = client.put(f"/fhir/{res['resourceType']}/{res['id']}", json=res, headers=JSON)
    assert r.status_code in (200, 201), r.text


def keys(bundle: dict[str, Any]) -> set[str]:
    return {f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in bundle.get("entry", [])}


def setup_two_patients(client: TestClient) -> None:
    put(client, {"resourceType": "Organization", "id": "gp", "name": "Huisartsenpraktijk"})
    put(client, {"resourceType": "Practitioner", "id": "dr", "name": [{"family": "Arts"}]})
    put(client, patient(id="a", generalPractitioner=[{"reference": "Organization/gp"}]))
    put(client, patient(id="b", identifier=[{"system": BSN, "value": "999909587"}]))
    for n, (subject, performer) in enumerate([("a", "dr"), ("a", None), ("b", None)]):
        obs: dict[str, Any] = {
            "resourceType": "Observation",
            "id": f"o{n}",
            "status": "final",
            "code": {"text": "x"},
            "subject": {"reference": f"Patient/{subject}"},
        }
        if performer:
            obs["performer"] = [{"reference": f"Practitioner/{performer}"}]
        put(client, obs)
    put(client, {"resourceType": "Encounter", "id": "e1", "status": "finished",
                 "class": {"code": "AMB"}, "subject": {"reference": "Patient/a"}})  # fmt: skip
    # A resource elsewhere that merely mentions patient a's id on another server: not a member.
    put(client, {"resourceType": "Observation", "id": "far", "status": "final", "code": {"text": "y"},
                 "subject": {"reference": "https://elders.example/fhir/Patient/a"}})  # fmt: skip


def test_everything_for_one_patient(client: TestClient) -> None:
    setup_two_patients(client)
    r = client.get("/fhir/Patient/a/$everything")
    assert r.status_code == 200, r.text
    bundle = r.json()
    assert bundle["type"] == "searchset"
    assert keys(bundle) == {
        "Patient/a",
        "Observation/o0",
        "Observation/o1",
        "Encounter/e1",
        "Organization/gp",
        "Practitioner/dr",
    }
    assert bundle["total"] == 6


def test_everything_filters_and_pages(client: TestClient) -> None:
    setup_two_patients(client)
    only = client.get("/fhir/Patient/a/$everything", params={"_type": "Observation,Patient"}).json()
    assert keys(only) == {"Patient/a", "Observation/o0", "Observation/o1"}
    seen: list[str] = []
    url = "/fhir/Patient/a/$everything?_count=2"
    while url:
        page = client.get(url).json()
        seen += [f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in page.get("entry", [])]
        nxt = [link["url"] for link in page["link"] if link["relation"] == "next"]
        url = nxt[0].replace("http://hub.test", "") if nxt else ""
    assert len(seen) == 6 and len(set(seen)) == 6
    # a total only when asked (or when one page holds everything)
    assert "total" not in client.get("/fhir/Patient/a/$everything", params={"_count": "2"}).json()
    counted = client.get("/fhir/Patient/a/$everything", params={"_count": "2", "_total": "accurate"}).json()
    assert counted["total"] == 6
    assert client.get("/fhir/Patient/a/$everything").json()["total"] == 6
    future = client.get("/fhir/Patient/a/$everything", params={"_since": "2999-01-01"}).json()
    assert keys(future) == set()


def test_everything_by_bsn_and_errors(client: TestClient) -> None:
    setup_two_patients(client)
    by_bsn = client.get("/fhir/Patient/$everything", params={"identifier": f"{BSN}|999909587"}).json()
    assert keys(by_bsn) == {"Patient/b", "Observation/o2"}
    assert client.get("/fhir/Patient/nobody/$everything").status_code == 404
    assert client.get("/fhir/Patient/$everything").status_code == 400
    assert client.get("/fhir/Observation/o1/$everything").status_code == 400
    assert client.get("/fhir/Patient/a/$everything", params={"_count": "x"}).status_code == 400
    assert client.get("/fhir/Patient/a/$everything", params={"_since": "yesterday"}).status_code == 400
    bad = client.get("/fhir/Patient/a/$everything", params={"_total": "veel"})
    assert bad.status_code == 400 and bad.json()["resourceType"] == "OperationOutcome"
    assert bad.json()["issue"][0]["expression"] == ["_total"] and "veel" in bad.json()["issue"][0]["diagnostics"]
    cs = client.get("/fhir/metadata").json()
    pat = next(r for r in cs["rest"][0]["resource"] if r["type"] == "Patient")
    assert any(op["name"] == "everything" for op in pat["operation"])
