"""Custom SearchParameters POSTed at run time: checked, used at once, existing data re-indexed,
removed on delete, and picked up by other hub processes on the same database."""

from __future__ import annotations

from typing import Any

from conftest import patient, token_for
from fastapi.testclient import TestClient

from hub.app import Services, create_app

JSON = {"Content-Type": "application/fhir+json"}
SNOMED = "http://snomed.info/sct"

# The ACP IG's own custom parameter (acp-pzp/fsh/SearchParameter.fsh).
REASON_CODE = {
    "resourceType": "SearchParameter",
    "url": "https://fhir.iknl.nl/fhir/SearchParameter/Communication-reason-code",
    "version": "4.0.1",
    "name": "ReasonCode",
    "status": "draft",
    "description": "ReasonCode for the Communication",
    "code": "reason-code",
    "base": ["Communication"],
    "type": "token",
    "expression": "Communication.reasonCode",
}


def communication(cid: str, code: str) -> dict[str, Any]:
    return {
        "resourceType": "Communication",
        "id": cid,
        "status": "completed",
        "subject": {"reference": "Patient/p"},
        "reasonCode": [{"coding": [{"system": SNOMED, "code": code}]}],
    }


def ids(bundle: dict[str, Any]) -> set[str]:
    return {e["resource"]["id"] for e in bundle.get("entry", []) if e["search"]["mode"] == "match"}


def warnings(bundle: dict[str, Any]) -> list[str]:
    return [
        i["diagnostics"]
        for e in bundle.get("entry", [])
        if e["search"]["mode"] == "outcome"
        for i in e["resource"]["issue"]
    ]


def test_custom_parameter_indexes_existing_and_new_data(client: TestClient) -> None:
    client.put("/fhir/Patient/p", json=patient(id="p"), headers=JSON)
    client.put("/fhir/Communication/c1", json=communication("c1", "713603004"), headers=JSON)
    before = client.get("/fhir/Communication", params={"reason-code": f"{SNOMED}|713603004"}).json()
    assert warnings(before)  # unknown until registered: ignored with a warning, so everything matches
    assert ids(before) == {"c1"}

    r = client.post("/fhir/SearchParameter", json=REASON_CODE, headers=JSON)
    assert r.status_code == 201, r.text
    client.put("/fhir/Communication/c2", json=communication("c2", "713603004"), headers=JSON)
    client.put("/fhir/Communication/c3", json=communication("c3", "11111111"), headers=JSON)

    found = client.get("/fhir/Communication", params={"patient": "p", "reason-code": f"{SNOMED}|713603004"}).json()
    assert ids(found) == {"c1", "c2"}  # c1 was there before the parameter: re-indexed
    assert not warnings(found)
    cs = client.get("/fhir/metadata").json()
    comm = next(r for r in cs["rest"][0]["resource"] if r["type"] == "Communication")
    assert any(p["name"] == "reason-code" for p in comm["searchParam"])


def test_unusable_search_parameter_is_refused_and_not_stored(client: TestClient) -> None:
    bad = {**REASON_CODE, "expression": "Communication.noSuchElement"}
    r = client.post("/fhir/SearchParameter", json=bad, headers=JSON)
    assert r.status_code == 400
    assert "expression" in r.json()["issue"][0]["diagnostics"]
    wrong_type = {**REASON_CODE, "type": "date"}
    assert client.post("/fhir/SearchParameter", json=wrong_type, headers=JSON).status_code == 400
    assert client.get("/fhir/SearchParameter", params={"_summary": "count"}).json()["total"] == 0


def test_changing_and_deleting_a_custom_parameter(client: TestClient) -> None:
    client.put("/fhir/Patient/p", json=patient(id="p"), headers=JSON)
    client.put("/fhir/Communication/c1", json=communication("c1", "713603004"), headers=JSON)
    client.put("/fhir/SearchParameter/rc", json={**REASON_CODE, "id": "rc"}, headers=JSON)
    assert ids(client.get("/fhir/Communication", params={"reason-code": "713603004"}).json()) == {"c1"}

    # Now the parameter means the Communication's status instead.
    changed = {**REASON_CODE, "id": "rc", "expression": "Communication.status"}
    assert client.put("/fhir/SearchParameter/rc", json=changed, headers=JSON).status_code == 200
    assert ids(client.get("/fhir/Communication", params={"reason-code": "713603004"}).json()) == set()
    assert ids(client.get("/fhir/Communication", params={"reason-code": "completed"}).json()) == {"c1"}

    assert client.delete("/fhir/SearchParameter/rc").status_code == 204
    gone = client.get("/fhir/Communication", params={"reason-code": "completed"}).json()
    assert warnings(gone)
    strict = client.get(
        "/fhir/Communication", params={"reason-code": "completed"}, headers={"Prefer": "handling=strict"}
    )
    assert strict.status_code == 400


def test_failed_transaction_does_not_register_the_parameter(client: TestClient) -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": REASON_CODE, "request": {"method": "POST", "url": "SearchParameter"}},
            {"resource": {"resourceType": "Patient", "bogus": True}, "request": {"method": "POST", "url": "Patient"}},
        ],
    }
    assert client.post("/fhir", json=bundle, headers=JSON).status_code == 400
    r = client.get("/fhir/Communication", params={"reason-code": "x"}, headers={"Prefer": "handling=strict"})
    assert r.status_code == 400


def test_another_process_picks_up_the_parameter(services: Services, client: TestClient) -> None:
    other = Services(services.settings, services.db)  # a second hub process on the same database
    client.put("/fhir/Communication/c1", json=communication("c1", "713603004"), headers=JSON)
    assert client.post("/fhir/SearchParameter", json=REASON_CODE, headers=JSON).status_code == 201
    other.custom_params._checked = 0.0  # as if a second had passed

    headers = {"Authorization": f"Bearer {token_for(other)}"}
    with TestClient(create_app(services=other), base_url="http://hub.test", headers=headers) as second:
        r = second.get(
            "/fhir/Communication", params={"reason-code": "713603004"}, headers={"Prefer": "handling=strict"}
        )
        assert r.status_code == 200, r.text
        assert ids(r.json()) == {"c1"}


def _obs(oid: str, code: str, component: str | None = None) -> dict[str, Any]:
    coding = {"coding": [{"system": "http://loinc.org", "code": code}], "text": f"t-{code}"}
    obs: dict[str, Any] = {"resourceType": "Observation", "id": oid, "status": "final", "code": coding}
    if component:
        obs["component"] = [{"code": {"coding": [{"system": "http://loinc.org", "code": component}]}}]
    return obs


def test_shadowing_the_source_of_a_derived_parameter(client: TestClient) -> None:
    """Observation combo-code has no rows of its own: it reads `code` and `component-code`
    (hub/search/extract.py derived_params). A custom `code` on Observation makes it a union no
    more: it gets rows of its own at once, and loses them again when the custom one goes."""
    client.put("/fhir/Observation/o1", json=_obs("o1", "1-1", "2-2"), headers=JSON)

    def combo(code: str) -> set[str]:
        r = client.get("/fhir/Observation", params={"combo-code": f"http://loinc.org|{code}"})
        assert r.status_code == 200, r.text
        assert not warnings(r.json())
        return ids(r.json())

    assert combo("1-1") == {"o1"} and combo("2-2") == {"o1"}
    custom = {
        "resourceType": "SearchParameter",
        "url": "http://example.org/SearchParameter/Observation-code-text",
        "name": "CodeText",
        "status": "active",
        "description": "Observation.code by its text",
        "code": "code",
        "base": ["Observation"],
        "type": "string",
        "expression": "Observation.code.text",
    }
    r = client.put("/fhir/SearchParameter/code-text", json={**custom, "id": "code-text"}, headers=JSON)
    assert r.status_code == 201, r.text
    assert ids(client.get("/fhir/Observation", params={"code": "t-1"}).json()) == {"o1"}
    assert combo("1-1") == {"o1"} and combo("2-2") == {"o1"}  # its own rows now
    client.put("/fhir/Observation/o2", json=_obs("o2", "3-3"), headers=JSON)
    assert combo("3-3") == {"o2"}
    assert client.delete("/fhir/SearchParameter/code-text").status_code in (200, 204)
    assert combo("1-1") == {"o1"} and combo("3-3") == {"o2"}  # from the standard `code` again
    assert ids(client.get("/fhir/Observation", params={"code": "http://loinc.org|3-3"}).json()) == {"o2"}


def test_shadowing_the_source_of_a_derived_reference_parameter(client: TestClient) -> None:
    """Observation `patient` has no rows of its own: it reads subject's rows of type Patient
    (hub/search/extract.py derived_references). A custom `subject` on Observation (here: its focus)
    ends that: `patient` gets rows of its own at once, and loses them when the custom one goes."""
    client.put("/fhir/Patient/p", json=patient(id="p"), headers=JSON)
    focused = {"resourceType": "Observation", "id": "o1", "status": "final", "code": {"text": "x"},
               "subject": {"reference": "Patient/p"}, "focus": [{"reference": "Patient/other"}]}  # fmt: skip
    client.put("/fhir/Observation/o1", json=focused, headers=JSON)

    def found(**params: str) -> set[str]:
        r = client.get("/fhir/Observation", params=params)
        assert r.status_code == 200, r.text
        assert not warnings(r.json())
        return ids(r.json())

    assert found(patient="p") == {"o1"} and found(subject="Patient/p") == {"o1"}
    custom = {
        "resourceType": "SearchParameter",
        "id": "subject-focus",
        "url": "http://example.org/SearchParameter/Observation-subject-focus",
        "name": "SubjectFocus",
        "status": "active",
        "description": "Observation.focus, under the name subject",
        "code": "subject",
        "base": ["Observation"],
        "type": "reference",
        "expression": "Observation.focus",
    }
    r = client.put("/fhir/SearchParameter/subject-focus", json=custom, headers=JSON)
    assert r.status_code == 201, r.text
    assert found(subject="Patient/other") == {"o1"} and found(subject="Patient/p") == set()
    assert found(patient="p") == {"o1"} and found(patient="other") == set()  # its own rows now
    assert client.delete("/fhir/SearchParameter/subject-focus").status_code in (200, 204)
    assert found(patient="p") == {"o1"} and found(subject="Patient/p") == {"o1"}
    assert found(patient="other") == set()
