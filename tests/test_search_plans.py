"""PostgreSQL query plans of common searches use the index tables' indexes (run only when a
PostgreSQL URL is among the test databases: HUB_TEST_DB=sqlite,postgresql://...).

A few thousand resources are written through the API and ANALYZEd; each search then runs through the
API while the SQL the engine sends is captured, and the page query is EXPLAINed with its own
parameters. Every index table and `resource` it reads must be read by Index / Index Only / Bitmap
Index scans, never a sequential scan of a whole table. `_total=estimate` on a large result is the
planner's estimate, close to the true count.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import ORIGIN, TEST_URA, empty, token_for
from fastapi.testclient import TestClient
from sqlalchemy import event, insert, text

from consent.decision import org_key
from hub.app import Services, create_app
from hub.config import Settings
from hub.store.database import Database
from hub.store.repository import Write
from hub.store.tables import resource_author

MRN = "http://hub.example.nl/fhir/NamingSystem/mrn"
LOINC = "http://loinc.org"
AGB = "http://fhir.nl/fhir/NamingSystem/agb-z"
ELSEWHERE = "http://other.example.org/fhir"
CODES = ["8867-4", "8480-6", "8462-4", "29463-7", "8302-2", "39156-5", "2339-0", "4548-4", "2093-3", "718-7"]
PATIENTS = 300
OBSERVATIONS_EACH = 8
ENCOUNTERS_EACH = 2
BIG_TABLES = (
    "resource",
    "idx_string",
    "idx_token",
    "idx_reference",
    "idx_date",
    "idx_number",
    "idx_quantity",
    "idx_uri",
)


def _resources() -> Iterator[dict[str, Any]]:
    rng = random.Random(7)
    for n in range(PATIENTS):
        pid = f"p{n}"
        yield {
            "resourceType": "Patient",
            "id": pid,
            "identifier": [{"system": MRN, "value": f"MRN{n:05d}"}],
            "name": [{"family": f"Familie{n % 97}", "given": ["Jan" if n % 2 else "Anna"]}],
            "gender": "male" if n % 2 else "female",
            "birthDate": f"{1930 + n % 70}-0{1 + n % 9}-1{n % 10}",
        }
        for e in range(ENCOUNTERS_EACH):
            day = rng.randrange(1, 28)
            yield {
                "resourceType": "Encounter",
                "id": f"e{n}-{e}",
                "status": "finished",
                "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
                "subject": {"reference": f"Patient/{pid}"},
                "period": {
                    "start": f"202{e}-0{1 + n % 9}-{day:02d}T09:00:00Z",
                    "end": f"202{e}-0{1 + n % 9}-{day:02d}T10:00:00Z",
                },
            }
        for o in range(OBSERVATIONS_EACH):
            day = rng.randrange(1, 28)
            yield {
                "resourceType": "Observation",
                "id": f"o{n}-{o}",
                "status": "final",
                "code": {"coding": [{"system": LOINC, "code": CODES[(n + o) % len(CODES)]}]},
                "subject": {"reference": f"Patient/{pid}"},
                "encounter": {"reference": f"Encounter/e{n}-{o % ENCOUNTERS_EACH}"},
                "performer": [{"identifier": {"system": AGB, "value": f"AGB{n:05d}"}}],  # no literal reference
                "basedOn": [{"reference": f"{ELSEWHERE}/ServiceRequest/sr{n}"}],  # on another server
                "effectiveDateTime": f"20{10 + rng.randrange(12)}-{rng.randrange(1, 13):02d}-{day:02d}T12:00:00Z",
                "valueQuantity": {
                    "value": rng.randrange(40, 200),
                    "system": "http://unitsofmeasure.org",
                    "code": "/min",
                },
            }


@pytest.fixture(scope="module")
def world(
    db_url: str, database: Database, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Services, TestClient]]:
    """One loaded, ANALYZEd database for the module. Written through the store's bulk write path (the
    API takes 40 s for the same rows), with the test client's organisation recorded as the author of
    everything, as the API would: consent then lets it see all (the data holder)."""
    if not db_url.startswith("postgresql"):
        pytest.skip("query plans are checked on PostgreSQL")
    empty(database)
    settings = Settings(data_dir=tmp_path_factory.mktemp("plans"), database_url=str(database.engine.url))
    services = Services(settings, database)
    org = org_key(TEST_URA, None, None)
    resources = list(_resources())
    with database.transaction(write=True) as conn:
        repo = services.repository(conn)
        for n in range(0, len(resources), 500):
            repo.apply([Write(r["resourceType"], r["id"], r, "PUT") for r in resources[n : n + 500]])
        conn.execute(
            insert(resource_author), [{"res_type": r["resourceType"], "res_id": r["id"], "org": org} for r in resources]
        )
    with database.engine.begin() as conn:
        conn.execute(text("ANALYZE"))
    headers = {"Authorization": f"Bearer {token_for(services)}"}
    with TestClient(create_app(services=services), base_url=ORIGIN, headers=headers) as client:
        yield services, client


def _captured(services: Services, client: TestClient, url: str) -> tuple[list[tuple[str, Any]], dict[str, Any]]:
    """The statements the engine sends for a search (with their parameters), and the Bundle."""
    seen: list[tuple[str, Any]] = []

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        seen.append((statement, parameters))

    engine = services.db.engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        r = client.get(url)
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert r.status_code == 200, r.text
    return seen, r.json()


def _nodes(plan: dict[str, Any], subplans: bool = True) -> Iterator[dict[str, Any]]:
    """The plan's nodes; without `subplans`, only the main tree: what access control adds (the consent
    filter's CTE and per-row SubPlans) is left out."""
    yield plan
    for child in plan.get("Plans", []):
        if subplans or child.get("Parent Relationship") not in ("SubPlan", "InitPlan"):
            yield from _nodes(child, subplans)


def _explain(services: Services, statement: str, parameters: Any, subplans: bool = False) -> list[dict[str, Any]]:
    with services.db.engine.connect() as conn:
        raw = conn.exec_driver_sql(f"EXPLAIN (FORMAT JSON) {statement}", parameters).scalar_one()
    plan = json.loads(raw) if isinstance(raw, str) else raw
    return list(_nodes(plan[0]["Plan"], subplans))


def _page_query(services: Services, client: TestClient, url: str, hits: int | None) -> tuple[str, Any]:
    statements, bundle = _captured(services, client, url)
    if hits is not None:
        assert len([e for e in bundle.get("entry", []) if e["search"]["mode"] == "match"]) == hits
    pages = [(s, p) for s, p in statements if " AS k0" in s and "LIMIT" in s]  # engine.paged labels its keys k0..
    assert pages, f"{url}: no page query captured"
    return pages[0]


SEARCHES = [
    ("token identifier", f"Patient?identifier={MRN}|MRN00042", {"idx_token"}, 1),
    ("reference patient", "Observation?patient=Patient/p17", {"idx_reference"}, OBSERVATIONS_EACH),
    ("date range", "Encounter?date=ge2021-03-01&date=lt2021-03-08", {"idx_date"}, None),
    (
        "chained patient.identifier",
        f"Observation?patient.identifier={MRN}|MRN00123",
        {"idx_reference", "idx_token"},
        OBSERVATIONS_EACH,
    ),
    ("_lastUpdated sort", "Observation?_sort=-_lastUpdated&_count=20", set(), 20),
    # References without a local target: each has a partial index over just such rows.
    ("reference :identifier", f"Observation?performer:identifier={AGB}|AGB00042", {"idx_reference_id_value"}, 8),
    ("reference system only", f"Observation?performer:identifier={AGB}|&_count=5", {"idx_reference_id_value"}, 5),
    ("reference elsewhere", f"Observation?based-on={ELSEWHERE}/ServiceRequest/sr42", {"idx_reference_url"}, 8),
    ("token code and patient", f"Observation?code={LOINC}|8867-4&patient=p5", {"idx_token", "idx_reference"}, None),
]


@pytest.mark.parametrize(("label", "url", "tables", "hits"), SEARCHES, ids=[s[0] for s in SEARCHES])
def test_common_searches_use_indexes(
    world: tuple[Services, TestClient], label: str, url: str, tables: set[str], hits: int | None
) -> None:
    services, client = world
    statement, parameters = _page_query(services, client, f"/fhir/{url}", hits)
    nodes = _explain(services, statement, parameters)
    scans = [(n["Node Type"], n.get("Relation Name"), n.get("Index Name")) for n in nodes if "Scan" in n["Node Type"]]
    sequential = [s for s in scans if s[0] == "Seq Scan" and s[1] in BIG_TABLES]
    assert not sequential, f"{label}: sequential scans {sequential} in {scans}"
    indexed = {(index or "").removeprefix("ix_") for kind, _, index in scans if "Index" in kind}
    for table in tables:
        assert any(i.startswith(table) for i in indexed), f"{label}: no index scan on {table}: {scans}"
    if label == "_lastUpdated sort":  # the order comes straight from a lastUpdated index, walked backwards
        assert indexed & {"resource_type_updated", "resource_updated"}, scans
        assert not any(n["Node Type"] == "Sort" for n in nodes), "no sort of all Observations"


def test_access_control_filters_use_indexes_too(world: tuple[Services, TestClient]) -> None:
    """The consent filter's per-row tests included (they once joined every resource with every author)."""
    services, client = world
    statement, parameters = _page_query(services, client, "/fhir/Observation?patient=Patient/p17", OBSERVATIONS_EACH)
    nodes = _explain(services, statement, parameters, subplans=True)
    scans = [(n["Node Type"], n.get("Relation Name")) for n in nodes if n["Node Type"] == "Seq Scan"]
    assert not [s for s in scans if s[1] in (*BIG_TABLES, "resource_author")], scans


def test_total_estimate_is_the_planner_estimate_for_large_results(world: tuple[Services, TestClient]) -> None:
    services, loaded = world
    observations = PATIENTS * OBSERVATIONS_EACH
    statements, bundle = _captured(services, loaded, "/fhir/Observation?status=final&_total=estimate&_count=1")
    assert any(s.startswith("EXPLAIN") for s, _ in statements), "the estimate comes from the planner"
    full_counts = [s for s, _ in statements if "count(*)" in s and "idx_token" in s and "LIMIT" not in s]
    assert not full_counts, "no full count of the search"
    assert observations * 0.5 <= bundle["total"] <= observations * 2
    small = loaded.get("/fhir/Observation", params={"patient": "p3", "_total": "estimate"}).json()
    assert small["total"] == OBSERVATIONS_EACH  # exact while cheap
    accurate = loaded.get("/fhir/Observation", params={"status": "final", "_total": "accurate", "_count": "1"})
    assert accurate.json()["total"] == observations


def test_everything_starts_from_the_patients_resources(world: tuple[Services, TestClient]) -> None:
    """Not from the (type, id) index walked in sort order, filtering every resource of the hub: with
    `pk IN members OR (type, id) IN referenced` PostgreSQL did that (1.3 s a page at 1,200 patients)."""
    services, client = world
    statement, parameters = _page_query(services, client, "/fhir/Patient/p17/$everything", None)
    nodes = _explain(services, statement, parameters)
    on_resource = [n for n in nodes if n.get("Alias") == "resource" and "Scan" in n["Node Type"]]
    walked = [n for n in on_resource if "Index Cond" in n and "pk" not in n["Index Cond"]]
    assert not walked, [(n["Node Type"], n.get("Index Name"), n.get("Index Cond")) for n in walked]


def test_token_estimates_take_the_system_with_the_code(world: tuple[Services, TestClient]) -> None:
    """`system|code`: the statistics know the system follows the code (migration 0010). Taken as
    independent, the estimate of a common code fell five-fold at 1,200 patients and PostgreSQL sorted
    every match for a first page instead of walking it in index order."""
    services, _ = world
    where = "res_type = 'Observation' AND param = 'code' AND code = '8867-4' AND system = %(s)s"
    with services.db.engine.connect() as conn:
        actual = conn.exec_driver_sql(f"SELECT count(*) FROM idx_token WHERE {where}", {"s": LOINC}).scalar_one()
        raw = conn.exec_driver_sql(f"EXPLAIN (FORMAT JSON) SELECT 1 FROM idx_token WHERE {where}", {"s": LOINC})
        plan = raw.scalar_one()
    estimate = (json.loads(plan) if isinstance(plan, str) else plan)[0]["Plan"]["Plan Rows"]
    assert actual == PATIENTS * OBSERVATIONS_EACH // len(CODES)
    assert actual / 2 <= estimate <= actual * 2, (estimate, actual)
