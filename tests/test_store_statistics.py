"""Planner statistics follow a growing PostgreSQL database (hub/store/statistics.py)."""

from __future__ import annotations

import threading

import pytest
from conftest import patient
from fastapi.testclient import TestClient

from hub.store.database import Database
from hub.store.statistics import PlannerStatistics

JSON = {"Content-Type": "application/fhir+json"}


class Recorder:
    def __init__(self, fail: bool = False) -> None:
        self.calls = 0
        self.fail = fail
        self.release = threading.Event()
        self.release.set()

    def __call__(self) -> None:
        self.release.wait(5)
        self.calls += 1
        if self.fail:
            raise RuntimeError("ANALYZE failed")


def test_refreshes_when_the_rows_written_reach_the_rows_known() -> None:
    refresh = Recorder()
    stats = PlannerStatistics(refresh, lambda: 0, first=10)
    stats.wrote(9)
    stats.wait()
    assert refresh.calls == 0  # below the first threshold
    stats.wrote(1)
    stats.wait()
    assert refresh.calls == 1  # 10 rows written on an empty database
    stats.wrote(9)
    stats.wait()
    assert refresh.calls == 1  # the statistics know 10 rows: 9 more is not a doubling
    stats.wrote(1)
    stats.wait()
    assert refresh.calls == 2
    stats.wrote(19)
    stats.wait()
    assert refresh.calls == 2  # 20 known now
    stats.wrote(1)
    stats.wait()
    assert refresh.calls == 3


def test_starts_from_what_the_catalogue_knows() -> None:
    refresh = Recorder()
    stats = PlannerStatistics(refresh, lambda: 100, first=10)
    stats.wrote(99)
    stats.wait()
    assert refresh.calls == 0  # a restarted server with 100 analysed rows waits for another 100
    stats.wrote(1)
    stats.wait()
    assert refresh.calls == 1


def test_one_refresh_at_a_time_and_writes_during_it_count_for_the_next() -> None:
    refresh = Recorder()
    refresh.release.clear()
    stats = PlannerStatistics(refresh, lambda: 0, first=10)
    stats.wrote(10)  # starts a refresh, which now waits
    stats.wrote(30)  # counted, but no second thread
    refresh.release.set()
    stats.wait()
    assert refresh.calls == 1
    stats.wrote(0)  # nothing written: nothing starts
    stats.wait()
    assert refresh.calls == 1
    stats.wrote(1)  # 10 known, 31 written since
    stats.wait()
    assert refresh.calls == 2


def test_a_failed_refresh_is_logged_and_the_next_one_still_runs(caplog: pytest.LogCaptureFixture) -> None:
    refresh = Recorder(fail=True)
    stats = PlannerStatistics(refresh, lambda: 0, first=1)
    stats.wrote(1)  # must not raise into the writer
    stats.wait()
    assert "refreshing the planner statistics failed" in caplog.text
    stats.wrote(1)
    stats.wait()
    assert refresh.calls == 2


def test_committed_writes_are_counted(client: TestClient, database: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    refresh = Recorder()
    monkeypatch.setattr(database, "statistics", PlannerStatistics(refresh, lambda: 0, first=3))
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": patient(id=f"s{i}"), "request": {"method": "PUT", "url": f"Patient/s{i}"}} for i in range(3)
        ],
    }
    failed = {**bundle, "entry": [*bundle["entry"], {"request": {"method": "DELETE", "url": "Nope/1"}}]}
    assert client.post("/fhir", json=failed, headers=JSON).status_code >= 400
    database.statistics.wait()
    assert refresh.calls == 0  # nothing committed, nothing counted
    assert client.post("/fhir", json=bundle, headers=JSON).status_code == 200
    database.statistics.wait()
    # PostgreSQL: the three committed Patients reach the threshold; SQLite keeps no such statistics
    assert refresh.calls == (1 if database.dialect == "postgresql" else 0)
