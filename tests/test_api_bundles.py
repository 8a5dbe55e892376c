"""Batch and transaction bundles over HTTP: reference resolution, processing order, atomicity."""

from __future__ import annotations

import base64
from typing import Any

import orjson
from conftest import patient
from fastapi.testclient import TestClient

JSON = {"Content-Type": "application/fhir+json"}
BSN = "http://fhir.nl/fhir/NamingSystem/bsn"


def post(client: TestClient, bundle: dict[str, Any], **headers: str) -> Any:
    return client.post("/fhir", content=orjson.dumps(bundle), headers={**JSON, **headers})


def total(client: TestClient, rt: str) -> int:
    return int(client.get(f"/fhir/{rt}", params={"_summary": "count"}).json()["total"])


def tx(*entries: dict[str, Any], kind: str = "transaction") -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": kind, "entry": list(entries)}


def observation(subject: str, code: str = "8867-4") -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
        "subject": {"reference": subject},
        "valueQuantity": {"value": 72, "unit": "/min", "system": "http://unitsofmeasure.org", "code": "/min"},
    }


def test_transaction_resolves_urn_uuid_references(client: TestClient) -> None:
    r = post(
        client,
        tx(
            {
                "fullUrl": "urn:uuid:obs-1",
                "resource": observation("urn:uuid:pat-1"),
                "request": {"method": "POST", "url": "Observation"},
            },
            {"fullUrl": "urn:uuid:pat-1", "resource": patient(), "request": {"method": "POST", "url": "Patient"}},
        ),
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["type"] == "transaction-response"
    statuses = [e["response"]["status"] for e in body["entry"]]
    assert statuses == ["201 Created", "201 Created"]
    obs_loc = body["entry"][0]["response"]["location"]
    pat_loc = body["entry"][1]["response"]["location"]
    pat_id = pat_loc.split("/")[1]
    obs = client.get("/fhir/" + obs_loc.rsplit("/_history", 1)[0]).json()
    assert obs["subject"]["reference"] == f"Patient/{pat_id}"
    assert pat_loc.startswith("Patient/") and pat_loc.endswith("/_history/1")


def test_transaction_resolves_conditional_references(client: TestClient) -> None:
    client.put("/fhir/Patient/p1", json=patient(id="p1"), headers=JSON)
    r = post(
        client,
        tx(
            {
                "resource": observation(f"Patient?identifier={BSN}|999911120"),
                "request": {"method": "POST", "url": "Observation"},
            }
        ),
    )
    assert r.status_code == 200, r.text
    loc = r.json()["entry"][0]["response"]["location"].rsplit("/_history", 1)[0]
    assert client.get(f"/fhir/{loc}").json()["subject"]["reference"] == "Patient/p1"


def test_conditional_reference_without_match_fails_the_transaction(client: TestClient) -> None:
    r = post(
        client,
        tx(
            {"resource": patient(), "request": {"method": "POST", "url": "Patient"}},
            {
                "resource": observation(f"Patient?identifier={BSN}|000000000"),
                "request": {"method": "POST", "url": "Observation"},
            },
        ),
    )
    assert r.status_code == 412
    issue = r.json()["issue"][0]
    assert "Bundle.entry[1]" in issue["diagnostics"]
    assert total(client, "Patient") == 0  # nothing of the transaction stayed


def test_failed_transaction_leaves_no_trace(client: TestClient) -> None:
    client.put("/fhir/Patient/keep", json=patient(id="keep"), headers=JSON)
    r = post(
        client,
        tx(
            {"resource": patient(id="keep", gender="female"), "request": {"method": "PUT", "url": "Patient/keep"}},
            {"resource": patient(), "request": {"method": "POST", "url": "Patient"}},
            {
                "resource": {"resourceType": "Observation", "status": "final"},
                "request": {"method": "POST", "url": "Observation"},
            },
        ),
    )
    assert r.status_code == 400
    assert r.json()["issue"][0]["expression"][0].startswith("Bundle.entry[2]")
    assert total(client, "Patient") == 1
    assert client.get("/fhir/Patient/keep").json()["gender"] == "male"
    assert client.get("/fhir/Patient/keep/_history").json()["total"] == 1


def test_unresolvable_urn_uuid_fails(client: TestClient) -> None:
    r = post(
        client, tx({"resource": observation("urn:uuid:nowhere"), "request": {"method": "POST", "url": "Observation"}})
    )
    assert r.status_code == 400
    assert total(client, "Observation") == 0


def test_same_resource_twice_is_rejected(client: TestClient) -> None:
    r = post(
        client,
        tx(
            {"resource": patient(id="a"), "request": {"method": "PUT", "url": "Patient/a"}},
            {"resource": patient(id="a", gender="female"), "request": {"method": "PUT", "url": "Patient/a"}},
        ),
    )
    assert r.status_code == 400
    assert total(client, "Patient") == 0


def test_processing_order_and_reads_see_writes(client: TestClient) -> None:
    client.put("/fhir/Patient/old", json=patient(id="old"), headers=JSON)
    r = post(
        client,
        tx(
            {"request": {"method": "GET", "url": "Patient/new"}},
            {"resource": patient(id="new"), "request": {"method": "PUT", "url": "Patient/new"}},
            {"request": {"method": "DELETE", "url": "Patient/old"}},
            {"request": {"method": "GET", "url": "Patient?_id=new,old"}},
        ),
    )
    assert r.status_code == 200, r.text
    entries = r.json()["entry"]
    assert entries[0]["response"]["status"] == "200 OK"
    assert entries[0]["resource"]["id"] == "new"
    assert entries[1]["response"]["status"] == "201 Created"
    assert entries[2]["response"]["status"] == "204 No Content"
    found = entries[3]["resource"]
    assert found["total"] == 1 and found["entry"][0]["resource"]["id"] == "new"


def test_conditional_create_in_a_transaction_points_references_at_the_match(client: TestClient) -> None:
    client.put("/fhir/Patient/p1", json=patient(id="p1"), headers=JSON)
    r = post(
        client,
        tx(
            {
                "fullUrl": "urn:uuid:p",
                "resource": patient(),
                "request": {"method": "POST", "url": "Patient", "ifNoneExist": f"identifier={BSN}|999911120"},
            },
            {"resource": observation("urn:uuid:p"), "request": {"method": "POST", "url": "Observation"}},
        ),
    )
    assert r.status_code == 200, r.text
    assert r.json()["entry"][0]["response"]["status"] == "200 OK"
    assert total(client, "Patient") == 1
    loc = r.json()["entry"][1]["response"]["location"].rsplit("/_history", 1)[0]
    assert client.get(f"/fhir/{loc}").json()["subject"]["reference"] == "Patient/p1"


def test_transaction_if_match_conflict_rolls_back(client: TestClient) -> None:
    client.put("/fhir/Patient/a", json=patient(id="a"), headers=JSON)
    r = post(
        client,
        tx(
            {"resource": patient(), "request": {"method": "POST", "url": "Patient"}},
            {
                "resource": patient(id="a", gender="female"),
                "request": {"method": "PUT", "url": "Patient/a", "ifMatch": 'W/"3"'},
            },
        ),
    )
    assert r.status_code == 412
    assert total(client, "Patient") == 1


def test_patch_entries(client: TestClient) -> None:
    client.put("/fhir/Patient/a", json=patient(id="a"), headers=JSON)
    ops = base64.b64encode(orjson.dumps([{"op": "replace", "path": "/gender", "value": "female"}])).decode()
    r = post(
        client,
        tx(
            {
                "resource": {"resourceType": "Binary", "contentType": "application/json-patch+json", "data": ops},
                "request": {"method": "PATCH", "url": "Patient/a"},
            }
        ),
    )
    assert r.status_code == 200, r.text
    assert client.get("/fhir/Patient/a").json()["gender"] == "female"


def test_prefer_representation_returns_resources(client: TestClient) -> None:
    r = post(
        client,
        tx({"resource": patient(), "request": {"method": "POST", "url": "Patient"}}),
        Prefer="return=representation",
    )
    assert r.json()["entry"][0]["resource"]["resourceType"] == "Patient"


def test_batch_answers_each_entry_on_its_own(client: TestClient) -> None:
    r = post(
        client,
        tx(
            {"resource": patient(id="b1"), "request": {"method": "PUT", "url": "Patient/b1"}},
            {"resource": {"resourceType": "Patient", "bogus": 1}, "request": {"method": "POST", "url": "Patient"}},
            {"request": {"method": "GET", "url": "Patient/missing"}},
            {"resource": patient(), "request": {"method": "POST", "url": "Patient"}},
            {"request": {"method": "GET", "url": "Patient/b1"}},
            kind="batch",
        ),
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["type"] == "batch-response"
    statuses = [e["response"]["status"].split()[0] for e in body["entry"]]
    assert statuses == ["201", "400", "404", "201", "200"]
    assert body["entry"][1]["response"]["outcome"]["resourceType"] == "OperationOutcome"
    assert body["entry"][4]["resource"]["id"] == "b1"
    assert total(client, "Patient") == 2


def test_bad_bundles(client: TestClient) -> None:
    assert post(client, {"resourceType": "Patient"}).status_code == 400
    assert post(client, {"resourceType": "Bundle", "type": "collection"}).status_code == 400
    r = post(client, tx({"resource": patient(), "request": {"method": "TRACE", "url": "Patient"}}))
    assert r.status_code == 400
    r = post(client, tx({"resource": patient(), "request": {"method": "POST"}}))
    assert r.status_code == 400
    r = post(client, tx({"resource": patient(), "request": {"method": "POST", "url": "Banana"}}))
    assert r.status_code == 404


def test_xml_transaction(client: TestClient) -> None:
    xml = b"""<Bundle xmlns="http://hl7.org/fhir"><type value="transaction"/>
      <entry><fullUrl value="urn:uuid:x1"/><resource><Patient><gender value="female"/></Patient></resource>
        <request><method value="POST"/><url value="Patient"/></request></entry>
    </Bundle>"""
    r = client.post(
        "/fhir", content=xml, headers={"Content-Type": "application/fhir+xml", "Accept": "application/fhir+xml"}
    )
    assert r.status_code == 200, r.text
    assert b"transaction-response" in r.content and b"201 Created" in r.content
