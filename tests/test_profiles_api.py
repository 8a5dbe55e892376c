"""Profile validation through the HTTP API: $validate (type and instance level, profile and mode
parameters) and validation on write for resources that declare a loaded profile."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Any

from conftest import BASE, ORIGIN, empty, patient, token_for
from fastapi.testclient import TestClient
from support import FIXTURES, NICTIZ_EXAMPLES

from hub.app import Services, create_app
from hub.config import Settings
from hub.formats.xml import parse_xml
from hub.store.database import Database
from profiles.packages import install


def _issues(body: dict[str, Any], severity: str = "error") -> list[tuple[str, str]]:
    return [(i["diagnostics"], (i.get("expression") or [""])[0]) for i in body["issue"] if i["severity"] == severity]


def test_validate_type_level_base(client: TestClient) -> None:
    ok = client.post("/fhir/Patient/$validate", json=patient())
    assert ok.status_code == 200
    assert _issues(ok.json()) == []
    bad = client.post("/fhir/Patient/$validate", json=patient(gender="vrouw"))
    assert bad.status_code == 200
    errors = _issues(bad.json())
    assert len(errors) == 1 and errors[0][1] == "Patient.gender"
    assert "administrative-gender" in errors[0][0]


def test_validate_reports_bad_bsn(client: TestClient) -> None:
    res = patient(identifier=[{"system": "http://fhir.nl/fhir/NamingSystem/bsn", "value": "123456789"}])
    errors = _issues(client.post("/fhir/Patient/$validate", json=res).json())
    assert errors == [("'123456789' is not a valid BSN (9 digits passing the 11-proof)", "Patient.identifier[0].value")]


HUB = "https://hub.zorgregio-haaglanden.nl/fhir/StructureDefinition/"
NL_PROFILES = FIXTURES / "nictiz-zib2020" / "profiles"


def _task(**fields: Any) -> dict[str, Any]:
    task: dict[str, Any] = {
        "resourceType": "Task",
        "meta": {"profile": [HUB + "hub-ReferralTask"]},
        "status": "requested",
        "intent": "order",
        "focus": {"reference": "ServiceRequest/ref-1"},
        "for": {"reference": "Patient/p1"},
        "authoredOn": "2026-11-23T10:00:00+01:00",
        "requester": {"reference": "PractitionerRole/gp-1"},
        "owner": {"reference": "Organization/seh"},
    }
    task.update(fields)
    return task


def test_validate_with_profile_parameter_and_modes(client: TestClient) -> None:
    task = _task()
    del task["focus"]
    # The declared profile applies; a profile given as parameter replaces it.
    found = _issues(client.post("/fhir/Task/$validate", json=task).json())
    assert found == [("Minimum required = 1, but only found 0", "Task.focus")]
    base_only = {k: v for k, v in task.items() if k != "meta"}
    assert _issues(client.post("/fhir/Task/$validate", json=base_only).json()) == []
    params = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "resource", "resource": base_only},
            {"name": "profile", "valueCanonical": HUB + "hub-ReferralTask"},
            {"name": "mode", "valueCode": "create"},
        ],
    }
    assert _issues(client.post("/fhir/Task/$validate", json=params).json()) == found
    assert _issues(client.post(f"/fhir/Task/$validate?profile={HUB}hub-ReferralTask", json=base_only).json()) == found
    unknown = client.post("/fhir/Task/$validate?profile=http://example.org/nope", json=base_only)
    assert unknown.status_code == 400
    assert client.post("/fhir/Task/$validate?mode=bogus", json=base_only).status_code == 400
    # mode=update needs the id; mode=delete needs an instance that exists.
    upd = _issues(client.post("/fhir/Task/$validate?mode=update", json=_task()).json())
    assert upd == [("An update needs the resource's id", "id")]
    assert client.post("/fhir/Task/x1/$validate?mode=delete").status_code == 404


def test_validate_instance_level(client: TestClient) -> None:
    created = client.post("/fhir/Task", json=_task())
    assert created.status_code == 201, created.text
    task_id = created.json()["id"]
    ok = client.get(f"/fhir/Task/{task_id}/$validate")
    assert ok.status_code == 200 and _issues(ok.json()) == []
    against_other = client.get(f"/fhir/Task/{task_id}/$validate?profile={HUB}hub-ACP-Procedure")
    assert "Profile" in _issues(against_other.json())[0][0]
    deletable = client.post(f"/fhir/Task/{task_id}/$validate?mode=delete")
    assert deletable.status_code == 200 and deletable.json()["issue"][0]["severity"] == "information"


def test_own_workflow_profile_is_enforced_on_write(client: TestClient) -> None:
    bad = _task(intent="proposal")
    refused = client.post("/fhir/Task", json=bad)
    assert refused.status_code == 422
    assert _issues(refused.json()) == [("Value is 'proposal' but must be fixed to 'order'", "Task.intent")]
    assert client.put("/fhir/Task/t-1", json={**bad, "id": "t-1"}).status_code == 422
    assert client.put("/fhir/Task/t-1", json={**_task(), "id": "t-1"}).status_code == 201
    patched = client.patch(
        "/fhir/Task/t-1",
        json=[{"op": "replace", "path": "/intent", "value": "plan"}],
        headers={"Content-Type": "application/json-patch+json"},
    )
    assert patched.status_code == 422
    assert client.get("/fhir/Task/t-1").json()["intent"] == "order"  # the patch was rolled back


def test_bad_bsn_is_refused_on_write(client: TestClient) -> None:
    res = patient(identifier=[{"system": "http://fhir.nl/fhir/NamingSystem/bsn", "value": "999911121"}])
    refused = client.post("/fhir/Patient", json=res)
    assert refused.status_code == 422
    assert _issues(refused.json()) == [
        ("'999911121' is not a valid BSN (9 digits passing the 11-proof)", "Patient.identifier[0].value")
    ]
    assert client.post("/fhir/Patient", json=patient()).status_code == 201


def test_install_nlcore_and_validate_on_write(services: Services, client: TestClient) -> None:
    summary = install(services, NL_PROFILES, base_url=BASE)
    assert summary.failures == []
    assert summary.written == 729 and summary.read["StructureDefinition"] == 354
    assert client.get("/fhir/StructureDefinition/nl-core-Patient").status_code == 200
    pat = parse_xml((NICTIZ_EXAMPLES / "nl-core-Patient-01.xml").read_bytes())
    # Installed (not the hub's own) profiles warn by default: stored, the problem returned as a warning.
    pat["gender"] = "vrouw"
    created = client.post("/fhir/Patient", json=pat, headers={"Prefer": "return=OperationOutcome"})
    assert created.status_code == 201
    warnings = [i for i in created.json()["issue"] if i["severity"] == "warning"]
    assert [w["expression"] for w in warnings] == [["Patient.gender"]]
    # $validate sees the installed profiles too.
    checked = client.post("/fhir/Patient/$validate", json=pat).json()
    assert [e for _, e in _issues(checked)] == ["Patient.gender"]


def test_enforce_setting_refuses_installed_profile_failures(database: Database, tmp_path: Path) -> None:
    empty(database)
    settings = Settings(data_dir=tmp_path, database_url=str(database.engine.url), profile_validation="enforce")
    services = Services(settings, database)
    install(services, NL_PROFILES / "nl-core" / "nl-core-Patient.xml", base_url=BASE)
    install(services, NL_PROFILES / "zib" / "zib-Patient.xml", base_url=BASE)
    pat = parse_xml((NICTIZ_EXAMPLES / "nl-core-Patient-01.xml").read_bytes())
    pat["gender"] = "vrouw"
    headers = {"Authorization": f"Bearer {token_for(services)}"}
    with TestClient(create_app(services=services), base_url=ORIGIN, headers=headers) as c:
        assert c.post("/fhir/Patient", json=pat).status_code == 422
        off = Services(settings.with_(profile_validation="off"), database)
        with TestClient(create_app(services=off), base_url=ORIGIN, headers=headers) as c2:
            assert c2.post("/fhir/Patient", json=pat).status_code == 201


def test_installed_package_tgz_with_search_parameter(services: Services, client: TestClient, tmp_path: Path) -> None:
    sp = {
        "resourceType": "SearchParameter",
        "id": "task-owner-ura",
        "url": "https://hub.zorgregio-haaglanden.nl/fhir/SearchParameter/task-intent-code",
        "name": "intentcode",
        "status": "active",
        "description": "Task intent (test)",
        "code": "intentcode",
        "base": ["Task"],
        "type": "token",
        "expression": "Task.intent",
    }
    vs = {"resourceType": "ValueSet", "url": "http://example.org/fhir/ValueSet/x", "status": "draft"}
    pkg = tmp_path / "test.tgz"
    with tarfile.open(pkg, "w:gz") as tar:
        for name, res in (("package/SearchParameter-x.json", sp), ("package/ValueSet-x.json", vs)):
            data = json.dumps(res).encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    summary = install(services, pkg, base_url=BASE)
    assert summary.failures == [] and summary.written == 2
    client.post("/fhir/Task", json=_task())
    found = client.get("/fhir/Task?intentcode=order").json()
    assert found["total"] == 1 if "total" in found else len(found.get("entry", [])) == 1
    assert len(client.get("/fhir/Task?intentcode=plan").json().get("entry", [])) == 0


def test_capability_statement_lists_the_hubs_own_profiles(client: TestClient) -> None:
    rest = client.get("/fhir/metadata").json()["rest"][0]
    by_type = {r["type"]: r for r in rest["resource"]}
    assert by_type["Task"]["supportedProfile"] == [HUB + "hub-ReferralTask"]
    assert by_type["Consent"]["supportedProfile"] == sorted(
        HUB + n for n in ("hub-ACP-AdvanceDirective", "hub-ACP-TreatmentDirective", "hub-Consent")
    )
    assert "supportedProfile" not in by_type["Observation"]
    validate_op = next(o for o in by_type["Task"]["operation"] if o["name"] == "validate")
    assert validate_op["definition"] == "http://hl7.org/fhir/OperationDefinition/Resource-validate"


def test_cli_profiles_install(tmp_path: Path, capsys: Any) -> None:
    from hub.cli import main

    folder = FIXTURES / "nictiz-elz" / "resources"
    assert main(["profiles", "install", str(folder), "--data-dir", str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip() == "4 StructureDefinition; 4 stored, 0 failed"
    # Reinstalling is a no-op write (PUT of unchanged resources).
    assert main(["profiles", "install", str(folder), "--data-dir", str(tmp_path)]) == 0


def test_bundle_entries_are_validated_against_their_profiles(client: TestClient) -> None:
    bad, good = _task(intent="proposal"), _task()
    entries = [{"resource": r, "request": {"method": "POST", "url": "Task"}} for r in (good, bad)]
    batch = client.post("/fhir", json={"resourceType": "Bundle", "type": "batch", "entry": entries})
    assert batch.status_code == 200
    assert [e["response"]["status"][:3] for e in batch.json()["entry"]] == ["201", "422"]
    tx = client.post("/fhir", json={"resourceType": "Bundle", "type": "transaction", "entry": entries})
    assert tx.status_code == 422
    assert len(client.get("/fhir/Task").json().get("entry", [])) == 1  # the batch's good one only
