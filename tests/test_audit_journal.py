"""Reads' audit records go through a journal file (hub/audit/journal.py): written before the response
leaves, chained in batches, never lost or repeated when a process ends between the two."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import ORIGIN, fhir_json, patient, system_client, token_for
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from test_audit_trail import records

from hub.app import Services, create_app
from hub.audit import journal as journal_module
from hub.audit.journal import ReadJournal
from hub.audit.tables import audit_journal, audit_record
from hub.audit.verify import verify
from hub.config import Settings


def journalled(services: Services) -> list[dict[str, Any]]:
    """The records in this process's journal file(s), in order."""
    out = []
    for path in sorted((services.settings.data_dir / "audit-journal").glob("*.ndjson")):
        out += [orjson.loads(line) for line in path.read_bytes().splitlines()]
    return out


def chained(services: Services) -> int:
    with services.db.transaction() as conn:
        return int(conn.execute(select(func.count()).select_from(audit_record)).scalar_one())


def event(n: int) -> dict[str, Any]:
    return {
        "resourceType": "AuditEvent",
        "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest"},
        "subtype": [{"code": "read"}],
        "action": "R",
        "recorded": f"2026-11-23T12:00:{n:02d}.000000Z",
        "outcome": "0",
        "agent": [{"requestor": True, "who": {"identifier": {"value": f"user-{n}"}}}],
        "source": {"observer": {"display": "test"}},
    }


def crash(journal: ReadJournal) -> None:
    """The process ends without draining: its file stays, its lock goes with it."""
    os.close(journal._fd)
    journal._fd = -1
    journal._pending.clear()


def test_a_read_is_journalled_before_the_response_and_chained_before_the_trail_is_read(
    services: Services, client: TestClient
) -> None:
    pid = client.post("/fhir/Patient", json=patient(), headers=fhir_json()).json()["id"]
    services.audit.journal.settle()
    before = chained(services)
    r = client.get(f"/fhir/Patient/{pid}")
    assert r.status_code == 200
    # the moment the response is there, its record is in the journal file
    reads = [e for e in journalled(services) if e["subtype"][0]["code"] == "read"]
    assert len(reads) == 1
    assert any(x["what"].get("reference", "").startswith(f"Patient/{pid}") for x in reads[0]["entity"])
    # an auditor's search flushes first: the read is in the chain, before the search's own record
    auditor = token_for(services, system_client("audit-desk", "system/AuditEvent.rs", organisation_type="auditor"))
    found = client.get(
        "/fhir/AuditEvent", params={"patient": pid, "subtype": "read"}, headers={"Authorization": f"Bearer {auditor}"}
    ).json()
    assert [e["resource"]["subtype"][0]["code"] for e in found["entry"]] == ["read"]
    assert chained(services) >= before + 1
    assert verify(services.db, services.keys).ok


def test_the_drainer_chains_records_without_being_asked(services: Services) -> None:
    services.audit.journal_read([event(1), event(2)])
    for _ in range(200):  # the background thread moves them within a few tens of ms
        if chained(services) == 2:
            break
        threading.Event().wait(0.02)
    assert chained(services) == 2
    assert [x["user_id"] for x in records(services)] == ["user-1", "user-2"]


def test_records_of_a_process_that_ended_are_recovered_once(services: Services) -> None:
    journal = services.audit.journal
    journal.append([event(1), event(2), event(3)])
    journal.flush()  # chained, offset stored with them
    journal.append([event(4), event(5)])  # journalled, not yet chained
    crash(journal)
    assert chained(services) == 3
    # the next process finds the journal whose lock is free, and takes only what was not chained
    successor = Services(services.settings, services.db)
    assert chained(services) == 5
    assert [x["user_id"] for x in records(successor)] == [f"user-{n}" for n in range(1, 6)]
    assert journalled(services) == []  # the file is gone
    with services.db.transaction() as conn:
        assert conn.execute(select(audit_journal.c.name)).all() == []
    assert verify(services.db, services.keys).ok
    assert successor.audit.journal.recover() == 0  # nothing twice


def test_a_live_journal_of_another_process_is_left_alone(services: Services, tmp_path: Path) -> None:
    mine = services.audit.journal
    mine.append([event(1)])
    other = ReadJournal(services.db, services.audit, mine.directory)
    assert other.recover() == 0  # mine holds its lock
    assert chained(services) == 0 and len(journalled(services)) == 1
    mine.flush()
    assert chained(services) == 1


def test_a_damaged_last_line_is_skipped_not_fatal(services: Services) -> None:
    journal = services.audit.journal
    journal.append([event(1)])
    os.write(journal._fd, b'{"resourceType":"AuditEv')  # the write the crash cut off
    crash(journal)
    Services(services.settings, services.db)
    assert [x["user_id"] for x in records(services)] == ["user-1"]


def test_a_drained_journal_is_rotated(services: Services, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(journal_module, "ROTATE_BYTES", 1)
    journal = services.audit.journal
    journal.append([event(1)])
    first = journal._name
    journal.flush()
    assert journal._name != first and not (journal.directory / first).exists()
    journal.append([event(2)])
    journal.flush()  # the first file's offset row goes with this batch
    with services.db.transaction() as conn:
        names = [r[0] for r in conn.execute(select(audit_journal.c.name))]
    assert first not in names
    assert [x["user_id"] for x in records(services)] == ["user-1", "user-2"]


def test_a_failed_drain_keeps_the_records_for_the_next_attempt(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = services.audit.journal
    journal.settle()
    real = services.audit.append
    calls = {"n": 0}

    def flaky(conn: Any, events: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("database away")
        real(conn, events)

    monkeypatch.setattr(services.audit, "append", flaky)
    journal.append([event(1), event(2)])
    with pytest.raises(RuntimeError):
        journal.flush()
    monkeypatch.setattr(services.audit, "append", real)
    journal.append([event(3)])
    journal.flush()
    assert [x["user_id"] for x in records(services)] == ["user-1", "user-2", "user-3"]


def test_a_read_whose_record_cannot_be_journalled_fails(services: Services, monkeypatch: pytest.MonkeyPatch) -> None:
    with TestClient(create_app(services=services), base_url=ORIGIN, raise_server_exceptions=False) as c:
        c.headers["Authorization"] = f"Bearer {token_for(services)}"
        pid = c.post("/fhir/Patient", json=patient(), headers=fhir_json()).json()["id"]

        def full(fd: int, data: bytes) -> int:
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(journal_module.os, "write", full)
        r = c.get(f"/fhir/Patient/{pid}")
        monkeypatch.undo()
    assert r.status_code == 500 and r.json()["resourceType"] == "OperationOutcome"
    assert pid not in r.text  # no patient data left unaudited


def test_concurrent_reads_all_reach_the_chain(services: Services, client: TestClient) -> None:
    pid = client.post("/fhir/Patient", json=patient(), headers=fhir_json()).json()["id"]
    errors: list[BaseException] = []

    def reader() -> None:
        try:
            for _ in range(15):
                assert client.get(f"/fhir/Patient/{pid}").status_code == 200
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    reads = [x for x in records(services) if x["subtype"] == "read"]
    assert len(reads) == 60
    assert verify(services.db, services.keys).ok


def test_the_journal_lives_in_the_data_directory(tmp_path: Path, services: Services) -> None:
    settings = Settings(data_dir=tmp_path / "elsewhere", database_url=services.settings.database_url)
    other = Services(settings, services.db)
    other.audit.journal_read([event(1)])
    assert list((tmp_path / "elsewhere" / "audit-journal").glob("reads-*.ndjson"))
    other.audit.journal.settle()


CRASHING_PROCESS = """
import os, sys
from pathlib import Path
from hub.app import Services
from hub.config import Settings
from hub.store.database import Database
import hub.audit.journal
hub.audit.journal.GATHER_SECONDS = 60  # the drainer waits: the records are only in the journal when it dies
settings = Settings(data_dir=Path(sys.argv[1]), database_url=sys.argv[2])
services = Services(settings, Database.connect(settings.database_url))
events = [{"resourceType": "AuditEvent", "type": {"code": "rest"}, "subtype": [{"code": "read"}], "action": "R",
           "recorded": "2026-11-23T12:00:00.000000Z", "outcome": "0",
           "agent": [{"requestor": True, "who": {"identifier": {"value": f"crash-{n}"}}}]} for n in range(3)]
services.audit.journal_read(events)
os._exit(0)  # gone before the drainer's first batch: no flush, no clean-up
"""


def test_a_process_killed_after_journalling_loses_no_record(services: Services) -> None:
    import subprocess
    import sys

    url = services.settings.database_url
    done = subprocess.run(
        [sys.executable, "-c", CRASHING_PROCESS, str(services.settings.data_dir), url],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert [x["user_id"] for x in records(services) if x["user_id"].startswith("crash-")] == []
    Services(services.settings, services.db)  # the next start drains the dead process's journal
    assert [x["user_id"] for x in records(services)] == ["crash-0", "crash-1", "crash-2"]
    assert verify(services.db, services.keys).ok


def test_a_journal_recovered_by_another_process_meanwhile_is_not_recovered_twice(services: Services) -> None:
    journal = services.audit.journal
    journal.append([event(1)])
    crash(journal)
    path = next(journal.directory.glob("*.ndjson"))
    fd = os.open(path, os.O_RDWR)  # opened, as a second starting process would ...
    try:
        assert Services(services.settings, services.db)  # ... while the first recovers and removes it
        from hub.audit.journal import _still_there

        assert not _still_there(path, fd)
    finally:
        os.close(fd)
    assert [x["user_id"] for x in records(services)] == ["user-1"]
