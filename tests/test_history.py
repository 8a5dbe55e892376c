"""History at instance, type and system level: every version, _since, _at, _count and paging."""

from __future__ import annotations

import time
from typing import Any

from conftest import patient
from fastapi.testclient import TestClient

JSON = {"Content-Type": "application/fhir+json"}


def entries(bundle: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(type/id, versionId or '-', method) per entry, newest first as served."""
    out = []
    for e in bundle.get("entry", []):
        res = e.get("resource")
        version = res["meta"]["versionId"] if res else e["response"]["etag"]
        out.append((e["fullUrl"].split("/fhir/")[1], version, e["request"]["method"]))
    return out


def follow(client: TestClient, url: str) -> list[dict[str, Any]]:
    pages = []
    while url:
        page = client.get(url.replace("http://hub.test", "")).json()
        pages.append(page)
        nxt = [link["url"] for link in page.get("link", []) if link["relation"] == "next"]
        url = nxt[0] if nxt else ""
    return pages


def test_instance_history_lists_every_version_newest_first(client: TestClient) -> None:
    client.put("/fhir/Patient/p", json=patient(id="p"), headers=JSON)
    client.put("/fhir/Patient/p", json=patient(id="p", gender="female"), headers=JSON)
    client.delete("/fhir/Patient/p")
    client.put("/fhir/Patient/p", json=patient(id="p", gender="other"), headers=JSON)
    hist = client.get("/fhir/Patient/p/_history").json()
    assert hist["type"] == "history"
    assert hist["total"] == 4
    got = entries(hist)
    assert [m for _, _, m in got] == ["PUT", "DELETE", "PUT", "PUT"]
    assert got[0][1] == "4" and got[2][1] == "2" and got[3][1] == "1"
    assert hist["entry"][1]["response"]["status"].startswith("204")
    assert hist["entry"][3]["response"]["status"].startswith("201")
    assert client.get("/fhir/Patient/nobody/_history").status_code == 404


def test_type_and_system_history(client: TestClient) -> None:
    client.put("/fhir/Patient/p1", json=patient(id="p1"), headers=JSON)
    client.post("/fhir/Organization", json={"resourceType": "Organization", "name": "HAP"}, headers=JSON)
    client.put("/fhir/Patient/p1", json=patient(id="p1", gender="female"), headers=JSON)
    typed = client.get("/fhir/Patient/_history").json()
    assert {k for k, _, _ in entries(typed)} == {"Patient/p1"}
    assert typed["total"] == 2
    system = client.get("/fhir/_history").json()
    # The whole system's history holds patient data others may have written: where consent decides
    # what a caller sees, a total would count what it may not see, so there is none.
    assert "total" not in system and len(system["entry"]) == 3
    methods = [m for _, _, m in entries(system)]
    assert methods == ["PUT", "POST", "PUT"]
    assert system["entry"][1]["request"]["url"] == "Organization"


def test_since_and_at(client: TestClient) -> None:
    client.put("/fhir/Patient/p", json=patient(id="p"), headers=JSON)
    first = client.get("/fhir/Patient/p").json()["meta"]["lastUpdated"]
    time.sleep(0.01)
    client.put("/fhir/Patient/p", json=patient(id="p", gender="female"), headers=JSON)
    second = client.get("/fhir/Patient/p").json()["meta"]["lastUpdated"]
    client.put("/fhir/Patient/q", json=patient(id="q"), headers=JSON)

    since = client.get("/fhir/_history", params={"_since": second}).json()
    assert {(k, v) for k, v, _ in entries(since)} == {("Patient/p", "2"), ("Patient/q", "1")}
    at_first = client.get("/fhir/Patient/p/_history", params={"_at": first}).json()
    assert [v for _, v, _ in entries(at_first)] == ["1"]
    # _at with day precision: every version current at some point that day
    day = client.get("/fhir/Patient/p/_history", params={"_at": first[:10]}).json()
    assert sorted(v for _, v, _ in entries(day)) == ["1", "2"]
    assert client.get("/fhir/_history", params={"_since": "not-a-date"}).status_code == 400
    assert client.get("/fhir/_history", params={"_count": "-1"}).status_code == 400
    assert client.get("/fhir/_history", params={"bogus": "1"}).status_code == 400


def test_paging_is_stable_while_others_write(client: TestClient) -> None:
    for n in range(7):
        client.put(f"/fhir/Patient/p{n}", json=patient(id=f"p{n}"), headers=JSON)
    first = client.get("/fhir/Patient/_history", params={"_count": 3}).json()
    assert len(first["entry"]) == 3
    # Someone writes between our page requests: the next pages still hold exactly the rest.
    client.put("/fhir/Patient/late", json=patient(id="late"), headers=JSON)
    nxt = next(link["url"] for link in first["link"] if link["relation"] == "next")
    rest = follow(client, nxt)
    seen = [k for page in [first, *rest] for k, _, _ in entries(page)]
    assert sorted(seen) == sorted(f"Patient/p{n}" for n in range(7))
    assert client.get("/fhir/Patient/_history", params={"_page": "garbage!"}).status_code == 400


def test_history_in_xml(client: TestClient) -> None:
    client.put("/fhir/Patient/p", json=patient(id="p"), headers=JSON)
    r = client.get("/fhir/Patient/p/_history", headers={"Accept": "application/fhir+xml"})
    assert r.status_code == 200
    assert b'<type value="history"/>' in r.content and b"<Patient>" in r.content
