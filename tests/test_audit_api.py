"""Reading the audit trail: auditors search and export AuditEvent, patients see their own access log."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from conftest import ORIGIN, fhir_json, patient, system_client, token_for
from fastapi.testclient import TestClient
from test_audit_trail import PRACTITIONER, query_of, records

from hub.app import Services, create_app

BSN_A, BSN_B = "999911120", "999909587"
VIJVERHOF = {
    "resourceType": "Organization",
    "id": "vijverhof",
    "identifier": [{"system": "http://fhir.nl/fhir/NamingSystem/ura", "value": "99900003"}],
    "name": "Huisartsenpraktijk Vijverhof",
}


def http(services: Services, token: str) -> TestClient:
    return TestClient(create_app(services=services), base_url=ORIGIN, headers={"Authorization": f"Bearer {token}"})


@pytest.fixture
def region(services: Services, client: TestClient) -> dict[str, Any]:
    """Two patients; a GP (URA 99900003, a huisarts) creates and reads A, reads B; one refused read."""
    assert client.put("/fhir/Organization/vijverhof", json=VIJVERHOF, headers=fhir_json()).status_code in (200, 201)
    gp_token = token_for(
        services, system_client("his-vijverhof", ura="99900003"), practitioner=PRACTITIONER, purpose_of_use="TREAT"
    )
    with http(services, gp_token) as gp:
        a = gp.post("/fhir/Patient", json=patient(), headers=fhir_json()).json()["id"]
        b = gp.post(
            "/fhir/Patient",
            json=patient(identifier=[{"system": "http://fhir.nl/fhir/NamingSystem/bsn", "value": BSN_B}]),
            headers=fhir_json(),
        ).json()["id"]
        assert gp.get(f"/fhir/Patient/{a}").status_code == 200
        assert gp.get(f"/fhir/Patient/{b}").status_code == 200
    narrow = token_for(services, system_client("his-vijverhof", "system/Observation.rs", ura="99900003"))
    with http(services, narrow) as other:
        assert other.get(f"/fhir/Patient/{a}").status_code == 403
    auditor = token_for(
        services, system_client("auditor-1", "system/AuditEvent.rs", organisation_type="auditor", ura="99900099")
    )
    return {"a": a, "b": b, "auditor": auditor}


def ids(bundle: dict[str, Any]) -> list[str]:
    return [e["resource"]["id"] for e in bundle.get("entry", [])]


def test_auditor_searches_by_every_parameter(services: Services, region: dict[str, Any]) -> None:
    a, b = region["a"], region["b"]
    by_id = {x["event"]["id"]: x for x in records(services)}
    today = datetime.now(UTC).date()
    with http(services, region["auditor"]) as auditor:

        def search(query: str) -> set[tuple[str, str, str | None]]:
            r = auditor.get(f"/fhir/AuditEvent?{query}")
            assert r.status_code == 200, r.text
            assert r.json()["total"] == len(r.json().get("entry", []))
            return {(by_id[i]["subtype"], by_id[i]["outcome"], by_id[i]["patient_id"]) for i in ids(r.json())}

        assert search(f"patient=Patient/{a}") == {("create", "0", a), ("read", "0", a), ("read", "4", a)}
        assert search(f"patient.identifier=http://fhir.nl/fhir/NamingSystem/bsn|{BSN_B}") == {
            ("create", "0", b),
            ("read", "0", b),
        }
        assert search(f"agent={PRACTITIONER['id']}&action=R") == {("read", "0", a), ("read", "0", b)}
        assert search("organization=99900003&outcome=4") == {("read", "4", a)}
        assert search(f"entity=Patient/{b}&subtype=create") == {("create", "0", b)}
        assert search(f"type=rest&subtype=update&date=ge{today.isoformat()}") == {("update", "0", None)}
        assert search(f"date=lt{(today - timedelta(days=1)).isoformat()}") == set()
        assert search(f"patient={a},{b}&subtype=create") == {("create", "0", a), ("create", "0", b)}
        r = auditor.get("/fhir/AuditEvent?colour=blue")
        assert r.status_code == 400 and "colour" in r.text
        # Paging: newest first, one at a time, following `next`.
        seen: list[str] = []
        url: str | None = f"/fhir/AuditEvent?patient={a}&_count=1"
        while url:
            page = auditor.get(url).json()
            seen += ids(page)
            url = next((link["url"] for link in page["link"] if link["relation"] == "next"), None)
        assert len(seen) == 3 and len(set(seen)) == 3
        assert [by_id[i]["seq"] for i in seen] == sorted((by_id[i]["seq"] for i in seen), reverse=True)
        one = seen[0]
        got = auditor.get(f"/fhir/AuditEvent/{one}").json()
        assert got["resourceType"] == "AuditEvent" and got["id"] == one
        assert auditor.get(f"/fhir/AuditEvent/{one}/_history/1").json()["id"] == one
        assert auditor.get("/fhir/AuditEvent/unknown").status_code == 404
        assert auditor.get(f"/fhir/Patient/{a}/AuditEvent").json()["total"] == 3


def test_reading_the_trail_is_itself_audited(services: Services, region: dict[str, Any]) -> None:
    with http(services, region["auditor"]) as auditor:
        assert auditor.get(f"/fhir/AuditEvent?patient={region['a']}").status_code == 200
    last = records(services)[-1]
    assert (last["subtype"], last["client_id"], last["organisation"], last["outcome"]) == (
        "search-type",
        "auditor-1",
        "99900099",
        "0",
    )
    assert query_of(last["event"]) == f"AuditEvent?patient={region['a']}"


def test_auditor_exports_ndjson_and_csv(services: Services, region: dict[str, Any]) -> None:
    a = region["a"]
    with http(services, region["auditor"]) as auditor:
        r = auditor.get(f"/fhir/AuditEvent/$export-audit?patient={a}")
        assert r.status_code == 200 and r.headers["content-type"].startswith("application/fhir+ndjson")
        lines = [orjson.loads(x) for x in r.text.splitlines()]
        assert [x["action"] for x in lines] == ["C", "R", "R"]
        assert all(x["resourceType"] == "AuditEvent" for x in lines)
        r = auditor.get(f"/fhir/AuditEvent/$export-audit?patient={a}&_outputFormat=csv")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
        rows = list(csv.DictReader(io.StringIO(r.text)))
        assert [(x["action"], x["outcome"], x["bsn"], x["user"], x["organisation"]) for x in rows] == [
            ("C", "0", BSN_A, PRACTITIONER["id"], "99900003"),
            ("R", "0", BSN_A, PRACTITIONER["id"], "99900003"),
            ("R", "4", BSN_A, "his-vijverhof", "99900003"),
        ]
        assert (
            rows[0]["user_role"] == "01.015" and rows[0]["purpose"] == "TREAT" and rows[0]["patient"] == f"Patient/{a}"
        )
        assert auditor.get("/fhir/AuditEvent/$export-audit?_outputFormat=xlsx").status_code == 400
    assert records(services)[-1]["subtype"] == "operation"  # the export was audited


def test_only_auditors_read_the_trail_and_nobody_writes_it(services: Services, region: dict[str, Any]) -> None:
    system = token_for(services)  # every scope, but a hospital's system
    pgo = token_for(
        services,
        system_client("pgo-app", "patient/*.rs", organisation_type="pgo", ura=None),
        patient_id=region["a"],
        subject=BSN_A,
    )
    some_event = records(services)[0]["event"]["id"]
    for token in (system, pgo):
        with http(services, token) as c:
            assert c.get("/fhir/AuditEvent").status_code == 403
            assert c.get(f"/fhir/AuditEvent/{some_event}").status_code == 403
            assert c.get("/fhir/AuditEvent/$export-audit").status_code == 403
            assert c.get("/fhir?_type=AuditEvent").status_code == 403
    refused = records(services)[-1]
    assert (refused["outcome"], refused["user_id"]) == ("4", BSN_A)  # the refusals are audited too
    with http(services, system) as c:
        event = {"resourceType": "AuditEvent", "recorded": "2026-01-01T00:00:00Z"}
        assert c.post("/fhir/AuditEvent", json=event, headers=fhir_json()).status_code == 405
        assert c.delete(f"/fhir/AuditEvent/{some_event}").status_code == 405


def test_patient_sees_who_accessed_their_record_in_plain_terms(services: Services, region: dict[str, Any]) -> None:
    a, b = region["a"], region["b"]
    app = system_client("pgo-app", "patient/*.rs", organisation_type="pgo", ura=None)
    token = token_for(services, app, patient_id=a, subject=BSN_A)
    with http(services, token) as pgo:
        assert pgo.get(f"/fhir/Patient/{a}").status_code == 200  # the patient looks at their own data
        r = pgo.get(f"/fhir/Patient/{a}/$access-log")
        assert r.status_code == 200, r.text
        again = pgo.get(f"/fhir/Patient/{a}/$access-log").json()  # own looks at the log are left out
        assert pgo.get(f"/fhir/Patient/{b}/$access-log").status_code in (403, 404)
    log = r.json()
    assert again == log
    texts = [e["resource"]["text"]["div"] for e in log["entry"]]
    assert len(texts) == 4, texts  # own read, the refused read, the GP's read and create: newest first
    assert "You, through your health app viewed your personal details" in texts[0]
    assert "refused" in texts[1]
    assert "Huisarts at Huisartsenpraktijk Vijverhof viewed your personal details for your treatment." in texts[2]
    assert "added your personal details" in texts[3]
    gp_read = log["entry"][2]["resource"]
    assert gp_read["agent"][0]["who"]["display"] == "Huisartsenpraktijk Vijverhof"
    assert gp_read["agent"][0]["role"] == [{"text": "Huisarts"}]
    assert gp_read["purposeOfEvent"] == [{"text": "your treatment"}]
    raw = r.text
    for internal in ("his-vijverhof", "testclient", "hash", PRACTITIONER["id"], "urn:hub", "query", b):
        assert internal not in raw, internal
    with http(services, token_for(services)) as system:
        assert system.get(f"/fhir/Patient/{a}/$access-log").status_code == 403


def test_the_capability_statement_says_what_auditevent_supports(client: TestClient) -> None:
    rest = client.get("/fhir/metadata").json()["rest"][0]
    by_type = {r["type"]: r for r in rest["resource"]}
    audit = by_type["AuditEvent"]
    assert [i["code"] for i in audit["interaction"]] == ["read", "vread", "search-type"]
    assert [o["name"] for o in audit["operation"]] == ["export-audit"]
    assert {p["name"] for p in audit["searchParam"]} >= {"patient", "agent", "date", "outcome", "organization"}
    assert "access-log" in [o["name"] for o in by_type["Patient"]["operation"]]
