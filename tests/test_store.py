"""Storage: the migrations build exactly the schema the code declares, on every database, and the
write path's rules (current flag, versions, index rows replaced) hold at the table level."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from conftest import patient
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from hub.store import bulk, schema
from hub.store.database import Database
from hub.store.tables import INDEX_TABLES, idx_token, metadata, resource

JSON = {"Content-Type": "application/fhir+json"}


def test_migrations_match_the_declared_tables(database: Database) -> None:
    assert schema.is_current(database.engine)
    with database.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
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
