"""Query plans of common searches and writes use the indexes, on PostgreSQL and on SQLite.

A few thousand resources are written through the API and ANALYZEd; each search then runs through the
API while the SQL the engine sends is captured, and the page query is EXPLAINed with its own
parameters. Every index table and `resource` it reads must be read by Index / Index Only / Bitmap
Index scans, never a sequential scan of a whole table. `_total=estimate` on a large result is the
planner's estimate, close to the true count.

On SQLite (without statistics, and with statistics that match the data) every statement a search,
`$everything` or a transaction bundle sends is run again and its virtual-machine instructions
counted: none may cost as many as there are resources, which whatever visits every row of a type or
table does. SQLite once
scanned `resource` for the current versions a bundle writes over (a row-value IN list) and never used
the partial indexes over current rows (their condition was not written as the queries write it).
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
from conftest import ORIGIN, TEST_URA, empty, token_for
from fastapi.testclient import TestClient
from sqlalchemy import event, insert

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
    if database.dialect == "postgresql":
        database.refresh_statistics()  # ANALYZE
    else:  # without statistics, as a hub fed by its API plans; not with those an earlier test left
        with database.transaction(write=True) as conn:  # BEGIN IMMEDIATE: waits for the audit drainer
            conn.exec_driver_sql("DROP TABLE IF EXISTS sqlite_stat1")
    headers = {"Authorization": f"Bearer {token_for(services)}"}
    with TestClient(create_app(services=services), base_url=ORIGIN, headers=headers) as client:
        yield services, client


@pytest.fixture
def pg_world(world: tuple[Services, TestClient]) -> tuple[Services, TestClient]:
    if world[0].db.dialect != "postgresql":
        pytest.skip("a PostgreSQL plan")
    return world


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
    pg_world: tuple[Services, TestClient], label: str, url: str, tables: set[str], hits: int | None
) -> None:
    services, client = pg_world
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


def test_access_control_filters_use_indexes_too(pg_world: tuple[Services, TestClient]) -> None:
    """The consent filter's per-row tests included (they once joined every resource with every author)."""
    services, client = pg_world
    statement, parameters = _page_query(services, client, "/fhir/Observation?patient=Patient/p17", OBSERVATIONS_EACH)
    nodes = _explain(services, statement, parameters, subplans=True)
    scans = [(n["Node Type"], n.get("Relation Name")) for n in nodes if n["Node Type"] == "Seq Scan"]
    assert not [s for s in scans if s[1] in (*BIG_TABLES, "resource_author")], scans


def test_total_estimate_is_the_planner_estimate_for_large_results(pg_world: tuple[Services, TestClient]) -> None:
    services, loaded = pg_world
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


def test_everything_starts_from_the_patients_resources(pg_world: tuple[Services, TestClient]) -> None:
    """Not from the (type, id) index walked in sort order, filtering every resource of the hub: with
    `pk IN members OR (type, id) IN referenced` PostgreSQL did that (1.3 s a page at 1,200 patients)."""
    services, client = pg_world
    statement, parameters = _page_query(services, client, "/fhir/Patient/p17/$everything", None)
    nodes = _explain(services, statement, parameters)
    on_resource = [n for n in nodes if n.get("Alias") == "resource" and "Scan" in n["Node Type"]]
    walked = [n for n in on_resource if "Index Cond" in n and "pk" not in n["Index Cond"]]
    assert not walked, [(n["Node Type"], n.get("Index Name"), n.get("Index Cond")) for n in walked]


def test_everything_sends_its_lists_as_arrays(pg_world: tuple[Services, TestClient]) -> None:
    """PostgreSQL plans each alternative of an IN list: the compartment's 99 (type, parameter) pairs
    and a list of all 146 resource types for a token that may read them all made the $everything page
    statement 24,000 characters with 442 parameters, 31-46 ms to plan for 16 ms of execution, and too
    big for psycopg's cache of parsed statements (1,000 patients; after: 7 ms planning). The pairs
    and a page's primary keys go as one array parameter each; an all-types list is left out."""
    services, client = pg_world
    statements, bundle = _captured(services, client, "/fhir/Patient/p17/$everything")
    assert len(bundle["entry"]) == 1 + ENCOUNTERS_EACH + OBSERVATIONS_EACH
    page = next(p for s, p in statements if " AS k0" in s and "LIMIT" in s)
    assert len(page) < 120, sorted(page)
    lists = Counter(re.sub(r"_\d+$", "", name) for name in page)  # an IN list's parameters: name_1, name_2, ...
    assert max(lists.values()) < 50, lists.most_common(3)
    reads = [(s, p) for s, p in statements if s.startswith("SELECT resource.pk, resource.res_type") and "ANY" in s]
    assert reads and all(len(p) <= 2 for _, p in reads), reads


def test_token_estimates_take_the_system_with_the_code(pg_world: tuple[Services, TestClient]) -> None:
    """`system|code`: the statistics know the system follows the code (migration 0010). Taken as
    independent, the estimate of a common code fell five-fold at 1,200 patients and PostgreSQL sorted
    every match for a first page instead of walking it in index order."""
    services, _ = pg_world
    where = "res_type = 'Observation' AND param = 'code' AND code = '8867-4' AND system = %(s)s"
    with services.db.engine.connect() as conn:
        actual = conn.exec_driver_sql(f"SELECT count(*) FROM idx_token WHERE {where}", {"s": LOINC}).scalar_one()
        raw = conn.exec_driver_sql(f"EXPLAIN (FORMAT JSON) SELECT 1 FROM idx_token WHERE {where}", {"s": LOINC})
        plan = raw.scalar_one()
    estimate = (json.loads(plan) if isinstance(plan, str) else plan)[0]["Plan"]["Plan Rows"]
    assert actual == PATIENTS * OBSERVATIONS_EACH // len(CODES)
    assert actual / 2 <= estimate <= actual * 2, (estimate, actual)


def test_first_page_of_a_common_code_reads_its_page_not_every_match(pg_world: tuple[Services, TestClient]) -> None:
    """`Observation?code=system|code` joins the code's index rows in write order (the search index ends
    in resource_pk; hub.search.planner token_driver) and stops after the page. Before, PostgreSQL
    hashed every match and walked the pk index against the hash: at 1,079 patients the first page
    took 72 ms p50 (189 ms p95), driven by the index rows 6.4 ms (8.7 ms). Which index PostgreSQL
    walks is its choice by cost; what it may not do is read or sort every match."""
    services, client = pg_world
    found = PATIENTS * OBSERVATIONS_EACH // len(CODES)
    statement, parameters = _page_query(services, client, f"/fhir/Observation?code={LOINC}|{CODES[0]}&_count=5", 5)
    # At this size PostgreSQL also pages the `pk IN (...)` form well (a merge join); at 1,079 patients
    # it hashed every match. So: the page is the join of the code's rows, and its plan reads a page.
    assert "JOIN idx_token AS driver" in statement, statement
    with services.db.engine.connect() as conn:
        raw = conn.exec_driver_sql(f"EXPLAIN (ANALYZE, FORMAT JSON) {statement}", parameters).scalar_one()
    nodes = list(_nodes((json.loads(raw) if isinstance(raw, str) else raw)[0]["Plan"], subplans=False))
    shown = [(n["Node Type"], n.get("Index Name"), n["Actual Rows"], n.get("Rows Removed by Filter")) for n in nodes]
    token = [n for n in nodes if n.get("Relation Name") == "idx_token"]
    assert token, f"the page is not joined from the code's index rows: {shown}"
    read = sum((n["Actual Rows"] + n.get("Rows Removed by Filter", 0)) * n["Actual Loops"] for n in token)
    assert read < found, f"read {read} index rows for a page of 5 of {found} matches: {shown}"
    assert not [n for n in nodes if n["Node Type"] in ("Sort", "Hash", "HashAggregate")], shown


# -- SQLite ---------------------------------------------------------------------------------------

SQLITE_SEARCHES = [
    "Observation?patient=Patient/p17",
    "Patient/p17/Observation",
    f"Patient?identifier={MRN}|MRN00042&_revinclude=Observation:subject",
    f"Observation?patient.identifier={MRN}|MRN00123",
    f"Observation?subject.identifier={MRN}|MRN00123",  # subject targets many types: (type, id) pairs
    f"Observation?code={LOINC}|8867-4&patient=p5",
    "Observation?patient=p9&_include=Observation:encounter",
    "Patient/p17/$everything",
    # an `or` of lists is one list (Planner._filter): as two `pk IN` tests, every Observation was tested
    "Observation?_filter=patient re Patient/p17 or subject re Patient/p18 or _id eq o3-0",
]


def _sqlite_work(services: Services, statements: list[tuple[str, Any]]) -> list[tuple[int, str]]:
    """(SQLite VM instructions, statement and its plan) of every read, update or delete among
    `statements`. Each runs twice and counts its cheaper run, so one-off work of a first run (a
    schema reload after another connection changed it) is not counted; a plan that visits every row
    costs as much every time. Such a plan showed up in about one full suite run in three: SQLite
    scans `resource` for a page's rows by primary key (23,400 instructions) when its statistics say
    the table holds a few rows (reproduced), and earlier modules' `hub load` took such statistics
    (PRAGMA optimize); how they outlived the world's DROP of sqlite_stat1 is not known. With the hub
    keeping no SQLite statistics (migration 0017), four full runs were clean."""
    out = []
    with services.db.engine.connect() as conn:
        raw = conn.connection.driver_connection
        assert raw is not None
        for statement, parameters in statements:
            if not statement.lstrip().upper().startswith(("SELECT", "WITH", "UPDATE", "DELETE")):
                continue
            if isinstance(parameters, list):  # executemany: one row's statement is enough
                parameters = parameters[0]
            runs = []
            for _ in range(2):
                steps = [0]

                def count(steps: list[int] = steps) -> int:
                    steps[0] += 1
                    return 0

                raw.execute("SAVEPOINT plan_check")
                raw.set_progress_handler(count, 100)
                try:
                    raw.execute(statement, parameters).fetchall()
                finally:
                    raw.set_progress_handler(None, 0)
                    raw.execute("ROLLBACK TO plan_check")
                    raw.execute("RELEASE plan_check")
                runs.append(steps[0] * 100)
            plan = raw.execute("EXPLAIN QUERY PLAN " + statement, parameters).fetchall()
            detail = " | ".join(str(row[-1]) for row in plan)
            out.append((min(runs), f"{' '.join(statement.split())[:300]} -- plan: {detail}"))
    return out


def _too_costly(services: Services, statements: list[tuple[str, Any]]) -> list[tuple[int, str]]:
    """The statements that cost as many VM instructions as there are resources: whatever visits every
    row of a type or of a table (about 6 instructions a row, and more) is among them, while an index
    look-up costs tens."""
    resources = PATIENTS * (1 + ENCOUNTERS_EACH + OBSERVATIONS_EACH)
    return [(steps, sql) for steps, sql in _sqlite_work(services, statements) if steps >= resources]


@pytest.fixture(params=["no statistics", "statistics"])
def sqlite_world(
    world: tuple[Services, TestClient], request: pytest.FixtureRequest
) -> Iterator[tuple[Services, TestClient]]:
    """The world without planner statistics (a hub fed through its API never gathers them) and with
    statistics that match the data (after `hub load`, whose PRAGMA optimize may ANALYZE)."""
    if world[0].db.dialect != "sqlite":
        pytest.skip("a SQLite plan")
    db = world[0].db
    # Write transactions (BEGIN IMMEDIATE) wait for the lock: the audit journal's drainer writes
    # beside the tests, and a deferred transaction that turns into a writer fails at once instead.
    if request.param == "statistics":
        with db.transaction(write=True) as conn:
            conn.exec_driver_sql("ANALYZE")
            assert conn.exec_driver_sql("SELECT count(*) FROM sqlite_stat1").scalar_one() > 0
    try:
        yield world
    finally:
        with db.transaction(write=True) as conn:
            conn.exec_driver_sql("DROP TABLE IF EXISTS sqlite_stat1")


@pytest.mark.parametrize("url", SQLITE_SEARCHES)
def test_sqlite_searches_never_visit_every_row(sqlite_world: tuple[Services, TestClient], url: str) -> None:
    services, client = sqlite_world
    statements, bundle = _captured(services, client, f"/fhir/{url}")
    assert bundle.get("entry"), f"{url}: found nothing, so the plans prove little"
    assert not _too_costly(services, statements)


def test_sqlite_plan_check_flags_a_scan(sqlite_world: tuple[Services, TestClient]) -> None:
    """The check above can fail: a statement that reads every Observation row is flagged, one that finds
    rows by primary key is not."""
    services, _ = sqlite_world
    scan = "SELECT pk FROM resource WHERE res_type = ? AND json_extract(content, '$.gender') = ?"
    by_key = "SELECT pk FROM resource WHERE pk IN (?, ?, ?)"
    flagged = _too_costly(services, [(scan, ("Observation", "male")), (by_key, (1, 2, 3))])
    assert [sql.split(" -- ")[0] for _, sql in flagged] == [scan]


@pytest.mark.parametrize(
    "url", ["Observation?patient.gender=male&_count=5", "Observation?patient=p17", "Patient/p17/Observation"]
)
def test_sqlite_lists_of_referring_resources_read_no_table_rows(
    sqlite_world: tuple[Services, TestClient], url: str
) -> None:
    """A chain, a reference search and a compartment read each matching reference row's resource_pk
    and url from the index (migration 0016): a table read per row made a chain's list three times
    slower at 1,200 patients."""
    services, client = sqlite_world
    statements, bundle = _captured(services, client, f"/fhir/{url}")
    assert bundle.get("entry")
    steps = [step for _, sql in _sqlite_work(services, statements) for step in sql.split(" -- plan: ")[1].split(" | ")]
    on_references = [step for step in steps if "idx_reference" in step and "SEARCH" in step]
    assert on_references
    assert all("COVERING INDEX" in step for step in on_references), on_references


def test_sqlite_bundle_writes_find_current_versions_by_index(sqlite_world: tuple[Services, TestClient]) -> None:
    """A transaction updating resources the hub holds reads their current versions by (type, id)."""
    services, client = sqlite_world
    updated: list[dict[str, Any]] = [
        {
            "resourceType": "Patient",
            "id": f"p{n}",
            "gender": "unknown",
            "identifier": [{"system": MRN, "value": f"MRN{n:05d}"}],
        }
        for n in (3, 4)
    ]
    observation: dict[str, Any] = {
        "resourceType": "Observation",
        "id": "o5-0",
        "status": "amended",
        "code": {"coding": [{"system": LOINC, "code": CODES[5]}]},
        "subject": {"reference": "Patient/p5"},
    }
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": r, "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}}
            for r in (*updated, observation)
        ],
    }
    seen: list[tuple[str, Any]] = []

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        seen.append((statement, parameters))

    event.listen(services.db.engine, "before_cursor_execute", record)
    try:
        r = client.post("/fhir", json=bundle, headers={"Content-Type": "application/fhir+json"})
    finally:
        event.remove(services.db.engine, "before_cursor_execute", record)
    assert r.status_code == 200, r.text
    assert [e["response"]["status"] for e in r.json()["entry"]] == ["200 OK"] * 3
    assert not _too_costly(services, seen)


@pytest.mark.parametrize(
    "query",
    [
        f"code={LOINC}|{CODES[0]}&_count=5",  # the first page of a common code
        f"patient=p5&code={LOINC}|{CODES[0]}",  # a patient's values of one kind
        f"code={LOINC}|{CODES[0]}&_id=o0-0,o1-0",
        f"../Patient?identifier={MRN}|MRN00040&_has:Observation:patient:code={LOINC}|{CODES[0]}",
    ],
)
def test_sqlite_searches_with_a_common_code_cost_their_page_not_the_codes_matches(
    sqlite_world: tuple[Services, TestClient], query: str
) -> None:
    """No statement of these searches (the page query, the reads with consent, the audit's BSN
    look-up) may cost two VM instructions per match of the code (240): visiting each match costs
    more. The page query built the list of every match and then walked it (1,600 instructions for
    the first page; now it walks the code's index rows in write order, hub.search.planner
    token_driver); a clause after the first did the same (5,100 with `_id`; now each candidate's
    own index rows are tested, Planner.condition per_row), a `_has` after an identifier too (it
    listed every Observation with the code); and the audit walked every Patient identifier for the
    patients' BSNs (1,500)."""
    services, client = sqlite_world
    code = f"/fhir/Observation?code={LOINC}|{CODES[0]}"
    found = PATIENTS * OBSERVATIONS_EACH // len(CODES)
    assert client.get(code + "&_summary=count").json()["total"] == found
    path = query[3:] if query.startswith("../") else f"Observation?{query}"
    statements, bundle = _captured(services, client, f"/fhir/{path}")
    assert bundle.get("entry"), "found nothing, so the costs prove little"
    costly = [(steps, sql) for steps, sql in _sqlite_work(services, statements) if steps >= 2 * found]
    assert not costly


@pytest.mark.parametrize(
    "query",
    [
        "patient=p5&patient.gender=male",
        "patient=p5&subject:Patient.general-practitioner.name=nobody",
        "_id=o5-0,o7-0&patient.gender=male",
    ],
)
def test_sqlite_chain_after_a_narrow_clause_follows_the_candidates_references(
    sqlite_world: tuple[Services, TestClient], query: str
) -> None:
    """A chain after the clause that enumerates (a patient's Observations, two ids) reads each
    candidate's own references and tests their targets (Planner._chain per_row). As a list it held
    every Observation of every male patient, 1,200 here (15,600 VM instructions for
    `patient=p5&patient.gender=male`; now 900): no statement may cost two instructions per
    Observation of that list."""
    services, client = sqlite_world
    listed = PATIENTS // 2 * OBSERVATIONS_EACH
    statements, bundle = _captured(services, client, f"/fhir/Observation?{query}")
    expected = 0 if "nobody" in query else (OBSERVATIONS_EACH if query.startswith("patient") else 2)
    assert len(bundle.get("entry", [])) == expected
    costly = [(steps, sql) for steps, sql in _sqlite_work(services, statements) if steps >= 2 * listed]
    assert not costly


def test_a_filter_or_on_one_index_table_is_one_list(world: tuple[Services, TestClient]) -> None:
    """`_filter=code eq a or code eq b` sends the two codes as one list of token rows, as `code=a,b`
    does (Planner._filter). As a UNION of two lists, PostgreSQL's generic plan (psycopg prepares a
    statement after five runs) for `patient re .. and (code eq a or code eq b)` rescanned the union
    for every one of the patient's Observations: 145 ms p50 at 120 Synthea patients, 5 ms as one
    list. An `or` over two tables (a code, a value) is a UNION of their lists on SQLite, two tested
    lists on PostgreSQL."""
    services, client = world
    one = f"code eq loinc|{CODES[0]} or code eq loinc|{CODES[1]}"
    statements, bundle = _captured(services, client, f"/fhir/Observation?_filter={quote(one)}&_count=5")
    page = [s for s, _ in statements if "FROM resource" in s and "idx_token" in s]
    assert page and bundle.get("entry"), "the page statement or its matches are missing"
    assert not any("UNION" in s for s in page)
    assert any(re.search(r"idx_token\.code = \S+ AND .*idx_token\.code = ", s, re.S) for s in page)
    two = f"code eq loinc|{CODES[0]} or value-quantity gt 1000"
    statements, _ = _captured(services, client, f"/fhir/Observation?_filter={quote(two)}&_count=5")
    assert any("UNION ALL" in s for s, _ in statements) == (services.db.dialect == "sqlite")
