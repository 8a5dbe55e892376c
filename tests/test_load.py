"""`hub load`: the Nictiz examples (XML) and Synthea bundles load without an error, and a rerun is a no-op."""

from __future__ import annotations

import bz2
import gzip
import json
from pathlib import Path

import orjson
import pytest
from conftest import TEST_URA, patient
from fastapi.testclient import TestClient
from support import NICTIZ_EXAMPLES, SYNTHEA, synthea_files

from hub.app import Services
from hub.load import discover, load_paths


def test_all_nictiz_examples_load(services: Services, client: TestClient) -> None:
    summary = load_paths(services, [NICTIZ_EXAMPLES], progress=False, holder_ura=TEST_URA)
    assert summary.failures == []
    assert summary.files == 271
    assert summary.outcomes["created"] == 271
    again = load_paths(services, [NICTIZ_EXAMPLES], progress=False, holder_ura=TEST_URA)
    assert again.failures == []
    assert again.outcomes["created"] == 0
    pat = client.get("/fhir/Patient/nl-core-Patient-01").json()
    assert pat["identifier"][0]["value"] == "111222333"
    assert pat["meta"]["versionId"] == "1"  # the rerun made no new version


def test_synthea_bundles_load_and_rerun(services: Services, client: TestClient) -> None:
    files = synthea_files()
    chosen = files[:2] + sorted(files[2:], key=lambda f: f.stat().st_size)[:3]
    summary = load_paths(services, chosen, progress=False, holder_ura=TEST_URA)
    assert summary.failures == []
    assert summary.outcomes["created"] > 1000
    patients = client.get("/fhir/Patient", params={"_summary": "count"}).json()["total"]
    assert patients == 3
    again = load_paths(services, chosen, progress=False, holder_ura=TEST_URA)
    assert again.failures == []
    assert again.outcomes["created"] == 0
    # Conditional references were resolved to the practitioners of the first file.
    enc = client.get("/fhir/Encounter", params={"_count": 1}).json()["entry"][0]["resource"]
    ref = enc["participant"][0]["individual"]["reference"]
    assert ref.startswith("Practitioner/") and "?" not in ref
    assert client.get(f"/fhir/{ref}").status_code == 200


def test_formats_and_compression(services: Services, client: TestClient, tmp_path: Path) -> None:
    (tmp_path / "a.json.gz").write_bytes(gzip.compress(orjson.dumps(patient(id="gz"))))
    (tmp_path / "b.json.bz2").write_bytes(bz2.compress(orjson.dumps(patient(id="bz"))))
    lines = [json.dumps(patient(id=f"nd{i}")) for i in range(3)]
    (tmp_path / "c.ndjson").write_text("\n".join(lines) + "\n")
    (tmp_path / "d.xml").write_bytes(
        b'<Patient xmlns="http://hl7.org/fhir"><id value="xm"/><gender value="female"/></Patient>'
    )
    (tmp_path / "e.json").write_text(
        json.dumps({"resourceType": "Bundle", "type": "collection", "entry": [{"resource": patient(id="col")}]})
    )
    (tmp_path / "notes.txt").write_text("ignored")
    summary = load_paths(services, [tmp_path], progress=False, holder_ura=TEST_URA)
    assert summary.failures == []
    assert summary.files == 5
    for rid in ("gz", "bz", "nd0", "nd2", "xm", "col"):
        assert client.get(f"/fhir/Patient/{rid}").status_code == 200


def test_bad_files_are_reported_not_fatal(services: Services, tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "invalid.json").write_text(json.dumps(patient(id="x", bogus=1)))
    (tmp_path / "good.json").write_text(json.dumps(patient(id="good")))
    summary = load_paths(services, [tmp_path], progress=False, holder_ura=TEST_URA)
    assert len(summary.failures) == 2
    assert summary.outcomes["created"] == 1
    reasons = " ".join(why for _, why in summary.failures)
    assert "JSON" in reasons and "bogus" in reasons


def test_discover_puts_synthea_reference_files_first() -> None:
    order = discover([SYNTHEA])
    assert "hospitalInformation" in order[0].name
    assert "practitionerInformation" in order[1].name
    with pytest.raises(FileNotFoundError):
        discover([SYNTHEA / "nope"])


@pytest.mark.slow
def test_full_synthea_set_loads(services: Services, client: TestClient) -> None:
    summary = load_paths(services, [SYNTHEA], progress=False, holder_ura=TEST_URA)
    assert summary.failures == []
    assert client.get("/fhir/Patient", params={"_summary": "count"}).json()["total"] == 120
    assert summary.resources > 90_000
