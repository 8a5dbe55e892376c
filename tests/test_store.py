"""Storage: the migrations build exactly the schema the code declares, on every database, and the
write path's rules (current flag, versions, index rows replaced) hold at the table level."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from conftest import BASE, patient, private_schema
from fastapi.testclient import TestClient
from sqlalchemy import Engine, create_engine, func, select

from hub.app import Services
from hub.store import bulk, schema
from hub.store.database import Database
from hub.store.tables import INDEX_TABLES, idx_reference, idx_token, metadata, resource

JSON = {"Content-Type": "application/fhir+json"}


def test_migrations_match_the_declared_tables(database: Database) -> None:
    assert schema.is_current(database.engine)
    with database.engine.connect() as conn:

        def on_this_database(obj: object, name: str | None, type_: str, reflected: bool, compare_to: object) -> bool:
            only_on = getattr(obj, "info", {}).get("only_on")  # e.g. SQLite's covering index (migration 0007)
            return only_on in (None, conn.dialect.name)

        context = MigrationContext.configure(conn, opts={"include_object": on_this_database})
        diff = compare_metadata(context, metadata)
    assert diff == []


def test_index_columns_follow_the_extractor() -> None:
    from hub.search.extract import COLUMNS

    for name, table in INDEX_TABLES.items():
        assert bulk.INDEX_COLUMNS[name] == ("resource_pk", "res_type", "param", *COLUMNS[name]), table.name


def test_one_current_row_and_index_rows_follow_it(client: TestClient, database: Database) -> None:
    client.put("/fhir/Patient/p", json=patient(id="p"), headers=JSON)
    client.put("/fhir/Patient/p", json=patient(id="p", gender="female"), headers=JSON)
    with database.transaction() as conn:
        rows = conn.execute(
            select(resource.c.version_id, resource.c.is_current, resource.c.patient_id)
            .where(resource.c.res_id == "p")
            .order_by(resource.c.version_id)
        ).all()
        assert [(v, c) for v, c, _ in rows] == [(1, False), (2, True)]
        assert {p for _, _, p in rows} == {"p"}  # a Patient is in its own compartment
        current_pk = conn.execute(select(resource.c.pk).where(resource.c.res_id == "p", resource.c.is_current)).scalar()
        genders = conn.execute(
            select(idx_token.c.resource_pk, idx_token.c.code).where(idx_token.c.param == "gender")
        ).all()
        assert genders == [(current_pk, "female")]  # the old version's index rows are gone
    client.delete("/fhir/Patient/p")
    with database.transaction() as conn:
        assert conn.execute(select(func.count()).select_from(idx_token)).scalar() == 0
        deleted = conn.execute(
            select(resource.c.deleted, resource.c.content).where(resource.c.is_current, resource.c.res_id == "p")
        ).one()
        assert deleted == (True, None)


def test_each_written_row_names_its_writer_as_holder(client: TestClient, database: Database) -> None:
    """resource.holder: the organisation (here the test client's hospital) on every version it writes;
    consent's "the writer always sees it" tests that before looking in resource_author."""
    from conftest import TEST_URA

    client.put("/fhir/Patient/h", json=patient(id="h"), headers=JSON)
    client.put("/fhir/Patient/h", json=patient(id="h", gender="female"), headers=JSON)
    with database.transaction() as conn:
        holders = conn.execute(select(resource.c.holder).where(resource.c.res_id == "h")).scalars().all()
    assert holders == [f"ura:{TEST_URA}", f"ura:{TEST_URA}"]


def test_migration_0009_drops_the_rows_of_derived_parameters(tmp_path: Path) -> None:
    """Observation combo-* rows written before derived parameters are dropped, except for a code a
    stored custom SearchParameter defines (its rows are its own)."""
    from alembic import command
    from sqlalchemy import create_engine, insert

    from hub.store.tables import idx_quantity

    engine = create_engine(f"sqlite:///{tmp_path / 'old.db'}")
    cfg = schema.alembic_config(engine)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0008")
    custom = {"resourceType": "SearchParameter", "id": "x", "code": "combo-value-quantity", "base": ["Observation"]}
    with engine.begin() as conn:
        for pk, (rt, rid, content) in enumerate(
            [("Observation", "o1", {"resourceType": "Observation"}), ("SearchParameter", "x", custom)], start=1
        ):
            conn.execute(
                insert(resource).values(
                    pk=pk, res_type=rt, res_id=rid, version_id=1, last_updated=datetime(2026, 1, 1),
                    is_current=True, deleted=False, method="PUT", content=json.dumps(content).encode(),
                )
            )  # fmt: skip
        for code in ("code", "component-code", "combo-code"):
            conn.execute(insert(idx_token).values(resource_pk=1, res_type="Observation", param=code, code="1-1"))
        conn.execute(
            insert(idx_quantity).values(
                resource_pk=1, res_type="Observation", param="combo-value-quantity", value=1, low=1, high=1
            )
        )
    schema.upgrade(engine)
    with engine.connect() as conn:
        tokens = sorted(conn.execute(select(idx_token.c.param)).scalars())
        quantities = list(conn.execute(select(idx_quantity.c.param)).scalars())
    assert tokens == ["code", "component-code"]
    assert quantities == ["combo-value-quantity"]  # a custom parameter's own rows stay
    engine.dispose()


def test_migration_0013_drops_the_rows_of_derived_reference_parameters(tmp_path: Path) -> None:
    """`patient` rows that repeated `subject`'s are dropped, the fixed list agrees with the
    registry's derivation, and a code whose source a stored custom SearchParameter defines keeps its rows."""
    import importlib

    from alembic import command
    from sqlalchemy import create_engine, insert

    from hub.fhirmodel.structure import structure
    from hub.search.extract import derived_references
    from hub.search.registry import default_registry

    migration = importlib.import_module("hub.store.migrations.versions.0013_derived_reference_rows")
    registry = default_registry()
    now = {
        (rt, code, src)
        for rt in structure().resource_types
        for code, (src, _) in derived_references(rt, registry).items()
    }
    assert {(rt, code, src) for rt, pairs in migration.DERIVED.items() for code, src in pairs} == now

    engine = create_engine(f"sqlite:///{tmp_path / 'old.db'}")
    cfg = schema.alembic_config(engine)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0012")
    custom = {"resourceType": "SearchParameter", "id": "x", "code": "subject", "base": ["Encounter"]}
    with engine.begin() as conn:
        for pk, (rt, rid, content) in enumerate(
            [
                ("Observation", "o1", {"resourceType": "Observation"}),
                ("Encounter", "e1", {"resourceType": "Encounter"}),
                ("SearchParameter", "x", custom),
            ],
            start=1,
        ):
            conn.execute(
                insert(resource).values(
                    pk=pk,
                    res_type=rt,
                    res_id=rid,
                    version_id=1,
                    last_updated=datetime(2026, 1, 1),
                    is_current=True,
                    deleted=False,
                    method="PUT",
                    content=json.dumps(content).encode(),
                )
            )
        for pk, rt in ((1, "Observation"), (2, "Encounter")):
            for code in ("subject", "patient", "performer"):
                conn.execute(
                    insert(idx_reference).values(
                        resource_pk=pk, res_type=rt, param=code, target_type="Patient", target_id="p"
                    )
                )
    schema.upgrade(engine)
    with engine.connect() as conn:
        left = sorted(conn.execute(select(idx_reference.c.res_type, idx_reference.c.param)).all())
    assert left == [
        ("Encounter", "patient"),  # the custom `subject` on Encounter: `patient` is its own again
        ("Encounter", "performer"),
        ("Encounter", "subject"),
        ("Observation", "performer"),
        ("Observation", "subject"),
    ]
    engine.dispose()


def _on_a_new_database(db_url: str, tmp_path: Path, run: Callable[[Engine], None]) -> None:
    """Run a migration test on an empty database of the kind under test (its own PostgreSQL schema)."""
    if db_url == "sqlite":
        engine = create_engine(f"sqlite:///{tmp_path / 'old.db'}")
        run(engine)
        engine.dispose()
        return
    with private_schema(db_url, "hub_migration") as url:
        engine = create_engine(url)
        run(engine)
        engine.dispose()


def _upgrade_to(engine: Engine, revision: str, stored: list[tuple[str, str, dict[str, Any], bool]]) -> None:
    """The schema at `revision`, holding these (type, id, content, current) resource rows."""
    from alembic import command
    from sqlalchemy import insert

    cfg = schema.alembic_config(engine)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
    with engine.begin() as conn:
        for pk, (rt, rid, content, current) in enumerate(stored, start=1):
            conn.execute(
                insert(resource).values(
                    pk=pk, res_type=rt, res_id=rid, version_id=1, last_updated=datetime(2026, 1, 1),
                    is_current=current, deleted=False, method="PUT", content=json.dumps(content).encode(),
                )
            )  # fmt: skip


def test_migration_0019_indexes_the_narratives_and_positions_already_stored(db_url: str, tmp_path: Path) -> None:
    _on_a_new_database(db_url, tmp_path, _migrate_0019)


def _migrate_0019(engine: Engine) -> None:
    from hub.store.tables import idx_composite, idx_string

    div = '<div xmlns="http://www.w3.org/1999/xhtml">Woont <b>alleen</b></div>'
    stored = [
        ("Patient", "p1", {"resourceType": "Patient", "text": {"status": "generated", "div": div}}, True),
        ("Patient", "p2", {"resourceType": "Patient"}, True),
        ("Location", "l1", {"resourceType": "Location", "position": {"latitude": 52.06, "longitude": 4.49}}, True),
        ("Location", "l0", {"resourceType": "Location", "position": {"latitude": 1.0, "longitude": 2.0}}, False),
    ]
    _upgrade_to(engine, "0018", stored)
    schema.upgrade(engine)
    with engine.connect() as conn:
        texts = conn.execute(select(idx_string.c.resource_pk, idx_string.c.param, idx_string.c.exact)).all()
        positions = conn.execute(
            select(idx_composite.c.resource_pk, idx_composite.c.c2_low, idx_composite.c.c3_low)
        ).all()
    assert texts == [(1, "_text", "woont alleen")]
    assert positions == [(3, 52.06, 4.49)]  # the old version (pk 4) is not indexed


def test_migration_0020_indexes_the_contained_resources_already_stored(db_url: str, tmp_path: Path) -> None:
    _on_a_new_database(db_url, tmp_path, _migrate_0020)


def _migrate_0020(engine: Engine) -> None:
    from alembic import command

    from hub.store.tables import idx_string, idx_token

    def observation(family: str) -> dict[str, Any]:
        return {
            "resourceType": "Observation",
            "subject": {"reference": "#p"},
            "contained": [{"resourceType": "Patient", "id": "p", "name": [{"family": family}]}],
        }

    stored = [
        ("Observation", "o1", observation("Taylor"), True),
        ("Observation", "o0", observation("Old"), False),  # an old version: not indexed
        ("Patient", "p1", {"resourceType": "Patient", "name": [{"family": "Plain"}]}, True),
    ]
    _upgrade_to(engine, "0019", stored)
    with engine.begin() as conn:  # a row the write path of 0019 left: the migration keeps it
        plain = {"resource_pk": 3, "res_type": "Patient", "param": "name", "value": "plain", "exact": "Plain"}
        conn.execute(idx_string.insert().values(**plain))
    schema.upgrade(engine)

    def rows() -> list[tuple[Any, ...]]:
        with engine.connect() as conn:
            strings = conn.execute(select(idx_string.c.resource_pk, idx_string.c.param, idx_string.c.exact))
            tokens = conn.execute(select(idx_token.c.resource_pk, idx_token.c.param, idx_token.c.code))
            refs = conn.execute(select(idx_reference.c.resource_pk, idx_reference.c.param, idx_reference.c.url))
            return sorted([*strings, *tokens, *refs])

    assert rows() == [
        (1, "subject", "#p"),
        (1, "subject:Patient._id", "p"),
        (1, "subject:Patient.deceased", "false"),
        (1, "subject:Patient.family", "Taylor"),
        (1, "subject:Patient.name", "Taylor"),
        (1, "subject:Patient.phonetic", "Taylor"),
        (3, "name", "Plain"),
    ]
    cfg = schema.alembic_config(engine)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0019")
    assert rows() == [(3, "name", "Plain")]


def test_migration_0011_backfills_the_care_relations_the_hub_writes(services: Services) -> None:
    """The backfill of care_relation (SQL, fixed in the migration) and consent/care.py (run on every
    write) derive the same rows from the same data: references by id with and without a URA / AGB,
    by identifier, to an unknown Organization, ended and deleted carriers, both carrier types."""
    import importlib

    from sqlalchemy import delete

    from hub.pipeline import TRANSACTION, Interaction, Principal
    from hub.store.tables import care_relation

    migration = importlib.import_module("hub.store.migrations.versions.0011_care_relations")
    ura, agb = "http://fhir.nl/fhir/NamingSystem/ura", "http://fhir.nl/fhir/NamingSystem/agb-z"
    orgs = [
        {
            "resourceType": "Organization",
            "id": "both",
            "identifier": [{"system": ura, "value": "10000001"}, {"system": agb, "value": "01000002"}],
        },
        {"resourceType": "Organization", "id": "plain", "name": "no identifier of either kind"},
    ]
    patients = [patient(id=f"p{n}") for n in range(3)]

    def task(tid: str, pid: str, owner: dict[str, object], status: str = "requested") -> dict[str, Any]:
        return {
            "resourceType": "Task",
            "id": tid,
            "status": status,
            "intent": "order",
            "for": {"reference": f"Patient/{pid}"},
            "owner": owner,
        }

    carriers = [
        task("t1", "p0", {"reference": "Organization/both"}),
        task("t2", "p1", {"reference": "Organization/plain"}),
        task("t3", "p1", {"reference": "Organization/nowhere"}),
        task("t4", "p2", {"identifier": {"system": ura, "value": "10000007"}, "reference": "Organization/both"}),
        task("t5", "p2", {"reference": "Organization/both"}, status="cancelled"),
        task("t6", "p0", {"identifier": {"system": "urn:other", "value": "10000007"}}),
        task("t7", "p0", {"reference": "Organization/both"}),
        {
            "resourceType": "ServiceRequest",
            "id": "s1",
            "status": "active",
            "intent": "order",
            "subject": {"reference": "Patient/p1"},
            "performer": [{"reference": "Organization/both"}, {"identifier": {"system": agb, "value": "01000009"}}],
        },
    ]
    entries = [
        {"resource": r, "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}}
        for r in [*orgs, *patients, *carriers]
    ]
    deletion = [{"request": {"method": "DELETE", "url": "Task/t7"}}]
    for batch in (entries, deletion):
        bundle = {"resourceType": "Bundle", "type": "transaction", "entry": batch}
        run = Interaction(TRANSACTION, body=bundle, principal=Principal(kind="local"), base_url=BASE)
        assert services.pipeline.run(run).status == 200
    columns = [care_relation.c[n] for n in ("carrier_type", "carrier_id", "patient_id", "org_id", "org_key")]
    with services.db.transaction(write=True) as conn:
        written = sorted(conn.execute(select(*columns)).all(), key=str)
        conn.execute(delete(care_relation))
        migration.backfill(conn)
        backfilled = sorted(conn.execute(select(*columns)).all(), key=str)
    assert written == backfilled
    assert {tuple(r) for r in written} == {
        ("Task", "t1", "p0", "both", "ura:10000001"),
        ("Task", "t1", "p0", "both", "agb:01000002"),
        ("Task", "t2", "p1", "plain", None),
        ("Task", "t3", "p1", "nowhere", None),
        ("Task", "t4", "p2", None, "ura:10000007"),
        ("Task", "t4", "p2", "both", "ura:10000001"),
        ("Task", "t4", "p2", "both", "agb:01000002"),
        ("ServiceRequest", "s1", "p1", "both", "ura:10000001"),
        ("ServiceRequest", "s1", "p1", "both", "agb:01000002"),
        ("ServiceRequest", "s1", "p1", None, "agb:01000009"),
    }


def test_postgresql_sessions_run_without_jit(database: Database) -> None:
    """JIT compilation costs PostgreSQL 100-300 ms on a large search (hub/store/engine.py), and the
    search path the tests set through the URL's options must survive the setting."""
    if database.engine.dialect.name != "postgresql":
        pytest.skip("a PostgreSQL setting")
    with database.engine.connect() as conn:
        assert conn.exec_driver_sql("SHOW jit").scalar_one() == "off"
        assert conn.exec_driver_sql("SHOW search_path").scalar_one().startswith("hub_test_")


def test_sqlite_uses_the_partial_indexes_over_current_rows(database: Database) -> None:
    """SQLAlchemy writes the filter `resource.c.is_current` as `is_current = 1` on SQLite, and SQLite
    takes a partial index only where the query repeats its condition (migration 0014): a patient's
    current resources of a type (a PGO's compartment) come from ix_resource_patient."""
    if database.engine.dialect.name != "sqlite":
        pytest.skip("a SQLite plan")
    queries = {
        "ix_resource_patient": select(resource.c.pk).where(
            resource.c.patient_id == "p1", resource.c.res_type == "Observation", resource.c.is_current
        ),
        "uq_resource_current": select(resource.c.pk).where(
            resource.c.res_type == "Patient", resource.c.res_id == "p1", resource.c.is_current
        ),
    }
    with database.engine.connect() as conn:
        for index, query in queries.items():
            sql = str(query.compile(conn, compile_kwargs={"literal_binds": True}))
            plan = " ".join(row[3] for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}"))
            assert index in plan, plan


def test_per_row_hints_name_an_index_led_by_resource_pk(database: Database) -> None:
    """hub.store.hints makes SQLite read an index table through RESOURCE_INDEXES[table]: a name
    that is not such an index fails every search that tests a clause per row."""
    from sqlalchemy.dialects import postgresql, sqlite

    from hub.store.hints import by_resource
    from hub.store.tables import RESOURCE_INDEXES

    stmt = select(by_resource(idx_token).c.code)
    assert "INDEXED BY ix_idx_token_resource_key" in str(stmt.compile(dialect=sqlite.dialect()))
    assert "INDEXED BY" not in str(stmt.compile(dialect=postgresql.dialect()))
    if database.dialect != "sqlite":
        return
    assert set(RESOURCE_INDEXES) == {t.name for t in INDEX_TABLES.values()}
    with database.engine.connect() as conn:
        for table, index in RESOURCE_INDEXES.items():
            columns = [row[2] for row in conn.exec_driver_sql(f"PRAGMA index_info({index})")]
            assert columns[:1] == ["resource_pk"], (table, index, columns)
            owner = conn.exec_driver_sql("SELECT tbl_name FROM sqlite_master WHERE name = ?", (index,)).scalar()
            assert owner == table


def test_sqlite_keeps_no_planner_statistics(database: Database) -> None:
    """SQLite plans are made for no statistics, and nothing would keep them current: taken after a
    small load they made look-ups by primary key scan the table once it grew (migration 0017)."""
    database.refresh_statistics()  # after `hub load`
    if database.dialect != "sqlite":
        return
    with database.engine.connect() as conn:
        found = conn.exec_driver_sql("SELECT name FROM sqlite_master WHERE name LIKE 'sqlite_stat%'").fetchall()
    assert found == []
