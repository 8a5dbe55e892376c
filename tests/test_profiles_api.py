"""Profile validation through the HTTP API: $validate (type and instance level, profile and mode
parameters) and validation on write for resources that declare a loaded profile."""

from __future__ import annotations

from typing import Any

from conftest import patient
from fastapi.testclient import TestClient

HUB_REFERRAL_TASK = "http://haaglanden.example/fhir/StructureDefinition/hub-ReferralTask"


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
