"""A patient's token (PGO app) reaches only that patient's compartment, through every door, and
never learns whether another patient's data exists - not even through a count."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import ORIGIN, patient, system_client, token_for
from fastapi.testclient import TestClient

from hub.app import Services, create_app

JSON = {"Content-Type": "application/fhir+json"}
BSN = "http://fhir.nl/fhir/NamingSystem/bsn"


def obs(oid: str, subject: str, code: str = "8867-4", performer: str | None = None) -> dict[str, Any]:
    res: dict[str, Any] = {
        "resourceType": "Observation",
        "id": oid,
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
        "subject": {"reference": f"Patient/{subject}"},
    }
    if performer:
        res["performer"] = [{"reference": performer}]
    return res


@pytest.fixture
def world(client: TestClient) -> None:
    """Patients a (our PGO user) and b, each with observations; a shared practitioner."""
    for res in (
        {"resourceType": "Practitioner", "id": "dr", "name": [{"family": "Arts"}]},
        patient(id="a"),
        patient(id="b", identifier=[{"system": BSN, "value": "999909587"}], name=[{"family": "Bakker"}]),
        obs("a1", "a", performer="Practitioner/dr"),
        obs("a2", "a", code="1234-5"),
        obs("b1", "b"),
        obs("b2", "b", code="secret-code"),
        {"resourceType": "Provenance", "id": "pb", "target": [{"reference": "Observation/b1"}],
         "recorded": "2026-01-01T00:00:00Z", "agent": [{"who": {"reference": "Practitioner/dr"}}]},
    ):  # fmt: skip
        r = client.put(f"/fhir/{res['resourceType']}/{res['id']}", json=res, headers=JSON)
        assert r.status_code in (200, 201), r.text


@pytest.fixture
def pgo(services: Services, world: None) -> Any:
    app_client = system_client("pgo-app", "patient/*.rs patient/Observation.c", organisation_type="pgo", ura=None)
    token = token_for(services, app_client, patient_id="a", subject="999911120")
    with TestClient(create_app(services=services), base_url=ORIGIN, headers={"Authorization": f"Bearer {token}"}) as c:
        yield c


def ids(bundle: dict[str, Any], mode: str = "match") -> set[str]:
    return {
        f"{e['resource']['resourceType']}/{e['resource']['id']}"
        for e in bundle.get("entry", [])
        if e.get("search", {}).get("mode", "match") == mode
    }


def test_reads_of_other_patients_data_look_like_404(pgo: TestClient) -> None:
    assert pgo.get("/fhir/Patient/a").status_code == 200
    assert pgo.get("/fhir/Observation/a1").status_code == 200
    assert pgo.get("/fhir/Practitioner/dr").status_code == 200  # not patient data
    for path in (
        "/fhir/Patient/b",
        "/fhir/Observation/b1",
        "/fhir/Observation/b1/_history/1",
        "/fhir/Observation/b1/_history",
    ):
        r = pgo.get(path)
        assert r.status_code == 404, path
        assert r.json()["issue"][0]["code"] == "not-found"
    assert pgo.get("/fhir/Observation/nonexistent").status_code == 404  # indistinguishable


def test_searches_and_counts_see_only_the_compartment(pgo: TestClient) -> None:
    assert ids(pgo.get("/fhir/Observation").json()) == {"Observation/a1", "Observation/a2"}
    assert pgo.get("/fhir/Observation", params={"_summary": "count"}).json()["total"] == 2
    assert pgo.get("/fhir/Observation", params={"code": "secret-code", "_summary": "count"}).json()["total"] == 0
    assert pgo.get("/fhir/Patient", params={"identifier": f"{BSN}|999909587"}).json()["total"] == 0
    assert ids(pgo.get("/fhir/Patient").json()) == {"Patient/a"}
    # chains and _has cannot reveal that b exists or what b has
    assert pgo.get("/fhir/Observation", params={"subject:Patient.family": "Bakker"}).json()["total"] == 0
    assert pgo.get("/fhir/Patient", params={"_has:Observation:patient:code": "secret-code"}).json()["total"] == 0
    # system search too
    everything = pgo.get("/fhir", params={"_type": "Observation,Patient"}).json()
    assert ids(everything) == {"Patient/a", "Observation/a1", "Observation/a2"}


def test_a_chain_after_an_id_cannot_reveal_another_patient(client: TestClient, pgo: TestClient) -> None:
    """a's Observation names patient b as its performer. A chain after an `_id` follows the
    candidate's own references (on SQLite, Planner._chain per_row) and must still look only into
    what the token may see: b is not in a's compartment, so neither b's name nor b's existence shows."""
    a3 = {**obs("a3", "a"), "performer": [{"reference": "Patient/b"}]}
    assert client.put("/fhir/Observation/a3", json=a3, headers=JSON).status_code == 201
    assert ids(pgo.get("/fhir/Observation", params={"_id": "a3"}).json()) == {"Observation/a3"}
    for chain in ("performer:Patient.family", "performer:Patient.name"):
        found = pgo.get("/fhir/Observation", params={"_id": "a1,a3", chain: "Bakker"}).json()
        assert found["total"] == 0, chain
    mine = pgo.get("/fhir/Observation", params={"_id": "a1,a3", "subject:Patient._id": "a"}).json()
    assert ids(mine) == {"Observation/a1", "Observation/a3"}  # the chain itself works


def test_filter_and_list_see_only_the_compartment(client: TestClient, pgo: TestClient) -> None:
    """`_filter`'s chains and `not`, and `_list`, look only into what the token may see. A List about
    patient b that names a's own Observation a1 does not lead the app to a1: the List is b's."""
    for rid, about in (("lijst-a", "a"), ("lijst-b", "b")):
        lst = {
            "resourceType": "List",
            "id": rid,
            "status": "current",
            "mode": "working",
            "subject": {"reference": f"Patient/{about}"},
            "entry": [{"item": {"reference": "Observation/a1"}}],
        }
        assert client.put(f"/fhir/List/{rid}", json=lst, headers=JSON).status_code == 201
    assert ids(client.get("/fhir/Observation", params={"_list": "lijst-b"}).json()) == {"Observation/a1"}
    assert ids(pgo.get("/fhir/Observation", params={"_list": "lijst-a"}).json()) == {"Observation/a1"}
    assert pgo.get("/fhir/Observation", params={"_list": "lijst-b"}).json()["total"] == 0
    hidden = pgo.get("/fhir/Observation", params={"_filter": 'subject.family eq "Bakker" or code eq secret-code'})
    assert hidden.json()["total"] == 0
    rest = pgo.get("/fhir/Observation", params={"_filter": 'not (subject.family eq "Bakker")'}).json()
    assert ids(rest) == {"Observation/a1", "Observation/a2"}


def test_a_chain_into_contained_resources_sees_only_the_compartment(client: TestClient, pgo: TestClient) -> None:
    """A chain looks inside contained resources, on the container's own rows: b's Observation with a
    contained performer named Bakker stays hidden; a's with the same performer is found."""
    bakker = [{"resourceType": "Practitioner", "id": "c", "name": [{"family": "Bakker"}]}]
    for oid, subject in (("a4", "a"), ("b4", "b")):
        res = {**obs(oid, subject), "performer": [{"reference": "#c"}], "contained": bakker}
        assert client.put(f"/fhir/Observation/{oid}", json=res, headers=JSON).status_code == 201
    assert ids(client.get("/fhir/Observation", params={"performer.name": "Bakker"}).json()) == {
        "Observation/a4",
        "Observation/b4",
    }
    for params in ({"performer.name": "Bakker"}, {"_id": "a4,b4", "performer:Practitioner.family": "Bakker"}):
        found = pgo.get("/fhir/Observation", params={**params, "_total": "accurate"}).json()
        assert ids(found) == {"Observation/a4"} and found["total"] == 1, params


def test_includes_do_not_leak(pgo: TestClient) -> None:
    found = pgo.get("/fhir/Practitioner", params={"_revinclude": "Observation:performer"}).json()
    assert ids(found, "include") == {"Observation/a1"}
    prov = pgo.get("/fhir/Practitioner", params={"_revinclude": "Provenance:agent"}).json()
    assert ids(prov, "include") == set()  # the Provenance is about b's data
    inc = pgo.get("/fhir/Observation", params={"_include": "Observation:patient"}).json()
    assert ids(inc, "include") == {"Patient/a"}


def test_everything_history_and_bundles(pgo: TestClient) -> None:
    ev = pgo.get("/fhir/Patient/a/$everything").json()
    assert {"Patient/a", "Observation/a1", "Observation/a2", "Practitioner/dr"} == ids(ev)
    assert pgo.get("/fhir/Patient/b/$everything").status_code == 403
    assert pgo.get("/fhir/Observation/_history").status_code == 403
    assert pgo.get("/fhir/_history").status_code == 403
    batch = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {"request": {"method": "GET", "url": "Observation/b1"}},
            {"request": {"method": "GET", "url": "Observation?code=secret-code"}},
            {"request": {"method": "GET", "url": "Observation/a1"}},
        ],
    }
    out = pgo.post("/fhir", json=batch, headers=JSON).json()
    statuses = [e["response"]["status"].split()[0] for e in out["entry"]]
    assert statuses == ["404", "200", "200"]
    assert out["entry"][1]["resource"]["total"] == 0


def test_writes_only_about_the_own_patient(pgo: TestClient) -> None:
    mine = pgo.post("/fhir/Observation", json=obs("x", "a"), headers=JSON)
    assert mine.status_code == 201
    theirs = pgo.post("/fhir/Observation", json=obs("y", "b"), headers=JSON)
    assert theirs.status_code == 403
    assert pgo.put("/fhir/Observation/b1", json=obs("b1", "a"), headers=JSON).status_code == 403  # no u scope
    assert pgo.delete("/fhir/Observation/a1").status_code == 403
    tx = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": obs("t1", "a"), "request": {"method": "POST", "url": "Observation"}},
        {"resource": obs("t2", "b"), "request": {"method": "POST", "url": "Observation"}},
    ]}  # fmt: skip
    r = pgo.post("/fhir", json=tx, headers=JSON)
    assert r.status_code == 403
    assert pgo.get("/fhir/Observation", params={"_summary": "count"}).json()["total"] == 3  # a1, a2, x
