"""Test set-up: the same API tests run on every database given with --db (default: SQLite).

    pytest                                   # SQLite
    pytest --db sqlite --db postgresql://root@127.0.0.1:5432/test
    HUB_TEST_DB=sqlite,postgresql://... pytest

PostgreSQL tests run in a private schema that is dropped and re-created per session; every test
starts from empty tables.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from hub.app import Services, create_app
from hub.auth.clients import Client
from hub.auth.keys import SigningKeys
from hub.config import Settings
from hub.store import schema
from hub.store.database import Database
from hub.store.engine import make_engine, normalise_url
from hub.store.tables import metadata


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--db",
        action="append",
        default=[],
        help="database URL to run the database-backed tests on (repeatable); 'sqlite' = a temporary file",
    )


def _db_urls(config: pytest.Config) -> list[str]:
    urls = config.getoption("--db") or [u for u in os.environ.get("HUB_TEST_DB", "sqlite").split(",") if u]
    return urls


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "db_url" in metafunc.fixturenames:
        urls = _db_urls(metafunc.config)
        ids = ["sqlite" if u == "sqlite" else re.sub(r"[:+].*", "", u) for u in urls]
        metafunc.parametrize("db_url", urls, ids=ids, scope="session")


@pytest.fixture(scope="session")
def database(db_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Database]:
    """One migrated database per URL per session."""
    if db_url == "sqlite":
        path = tmp_path_factory.mktemp("db") / "hub.db"
        db = Database.connect(f"sqlite:///{path}")
        yield db
        db.dispose()
        return
    with private_schema(db_url, "hub_test") as url:
        db = Database(make_engine(url))
        schema.upgrade(db.engine)
        yield db
        db.dispose()


@contextmanager
def private_schema(db_url: str, prefix: str) -> Iterator[str]:
    """A new, empty PostgreSQL schema in the database `db_url` names, as a URL whose connections use
    it; dropped afterwards."""
    url = normalise_url(db_url)
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    admin = make_engine(url)
    with admin.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {name}"))
    try:
        yield f"{url}{'&' if '?' in url else '?'}options=-csearch_path%3D{name}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA {name} CASCADE"))
        admin.dispose()


def empty(db: Database) -> None:
    tables = [t.name for t in reversed(metadata.sorted_tables)]
    with db.transaction(write=True) as conn:
        if db.dialect == "postgresql":
            conn.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
        else:
            for t in tables:
                conn.execute(text(f"DELETE FROM {t}"))


@pytest.fixture(scope="session", autouse=True)
def signing_keys(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One RSA key pair for the whole session (generating one per test would cost seconds)."""
    path = tmp_path_factory.mktemp("keys") / "signing-keys.json"
    SigningKeys(path)
    old = os.environ.get("HUB_SIGNING_KEYS_FILE")
    os.environ["HUB_SIGNING_KEYS_FILE"] = str(path)
    yield path
    if old is None:
        del os.environ["HUB_SIGNING_KEYS_FILE"]
    else:
        os.environ["HUB_SIGNING_KEYS_FILE"] = old


@pytest.fixture
def services(database: Database, tmp_path: Path) -> Iterator[Services]:
    empty(database)
    settings = Settings(data_dir=tmp_path, database_url=str(database.engine.url), max_body_bytes=2 * 1024 * 1024)
    services = Services(settings, database)
    yield services
    services.audit.journal.settle()  # no read record reaches the next test's database


BASE = "http://hub.test/fhir"
TEST_URA = "99900001"  # the organisation of the default test client (a hospital)
ORIGIN = "http://hub.test"


def system_client(name: str = "test-hix", scopes: str = "system/*.cruds", **org: str | None) -> Client:
    """An in-memory client (tokens are checked by signature; the database is not consulted)."""
    return Client(
        client_id=name,
        organisation_type=str(org.get("organisation_type") or "hospital"),
        ura=org.get("ura", TEST_URA),
        agb=org.get("agb"),
        scopes=scopes,
        jwks=None,
        jwks_url=None,
        secret_hash=None,
        redirect_uris=(),
        status="active",
    )


def token_for(services: Services, client: Client | None = None, scope: str | None = None, **kwargs: Any) -> str:
    c = client or system_client()
    return services.tokens.issue(c, issuer=ORIGIN, audience=BASE, scope=scope or c.scopes, **kwargs).token


@pytest.fixture
def client(services: Services) -> Iterator[TestClient]:
    """An HTTP client of the FHIR API holding a system token with every scope."""
    headers = {"Authorization": f"Bearer {token_for(services)}"}
    with TestClient(create_app(services=services), base_url=ORIGIN, headers=headers) as c:
        yield c


def fhir_json(**extra: str) -> dict[str, str]:
    return {"Content-Type": "application/fhir+json", **extra}


def patient(**fields: Any) -> dict[str, Any]:
    """A small valid Dutch patient (test BSN)."""
    res: dict[str, Any] = {
        "resourceType": "Patient",
        "identifier": [{"system": "http://fhir.nl/fhir/NamingSystem/bsn", "value": "999911120"}],
        "name": [{"family": "Jansen", "given": ["Jan"]}],
        "gender": "male",
        "birthDate": "1950-01-01",
    }
    res.update(fields)
    return res
