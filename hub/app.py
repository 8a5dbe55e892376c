"""The app factory and the services every interaction can reach (search, storage, validation)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import cached_property
from typing import Any

import anyio.to_thread
from fastapi import FastAPI
from sqlalchemy import Connection
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

import consent.mitz  # noqa: F401  (registers Consent/$mitz-notify)
import hub.rights.erasure  # noqa: F401  (registers Patient/$avg-erase and $avg-export)
from consent.enforce import ConsentEnforcement
from hub.api.dispatch import execute
from hub.api.routes import fhir_routes
from hub.audit.api import audit_routes
from hub.audit.auth_events import AuditedAuthEvents
from hub.audit.chain import AuditTrail
from hub.audit.interceptor import Audit
from hub.audit.refusals import RefusalAudit
from hub.auth.endpoints import auth_routes
from hub.auth.enforce import Authorisation
from hub.auth.keys import SigningKeys
from hub.auth.patient_sessions import RevokedTokens
from hub.auth.tokens import TokenService
from hub.config import Settings
from hub.fhirmodel.validate import validate_resource
from hub.formats.outcome import Issue
from hub.pipeline import Interceptor, Pipeline
from hub.search.custom import CustomSearchParameters
from hub.search.engine import SearchEngine
from hub.search.indexer import SearchIndexer
from hub.search.registry import Registry
from hub.store.database import Database
from hub.store.repository import Repository
from profiles.service import ProfileService

log = logging.getLogger("hub")


class Services:
    """Everything an interaction needs, built once per process."""

    def __init__(self, settings: Settings, db: Database, interceptors: list[Interceptor] | None = None) -> None:
        self.settings = settings
        self.db = db
        self.search_params = Registry.load()
        self.indexer = SearchIndexer(self.search_params)
        self.search = SearchEngine(self.search_params)
        self.custom_params = CustomSearchParameters(self.search_params)
        with db.transaction() as conn:
            self.custom_params.load(conn)
        self.profiles = ProfileService(settings.profile_validation)  # profiles/: validation on write, $validate
        self.keys = SigningKeys.for_data_dir(settings.data_dir)
        self.tokens = TokenService(self.keys, settings.system_token_lifetime, settings.patient_token_lifetime)
        self.audit = AuditTrail(db, self.keys, settings.data_dir / "audit-journal")  # NEN 7513; its step goes last
        self.audit.journal.recover()  # read records journalled by a process that has ended
        self.auth_events = AuditedAuthEvents(self.audit)
        self.pipeline = Pipeline(
            db,
            self,
            execute,
            [
                RevokedTokens(),
                Authorisation(),
                ConsentEnforcement(),
                self.custom_params,
                self.profiles,
                *(interceptors or []),
                Audit(self.audit),
            ],
        )
        self._capability: dict[str, Any] | None = None

    def repository(self, conn: Connection) -> Repository:
        return Repository(conn, self.indexer)

    def validate(self, resource: dict[str, Any]) -> list[Issue]:
        return validate_resource(resource)

    def capability_statement(self) -> dict[str, Any]:
        if self._capability is None:
            from conformance.capability import build

            self._capability = build(self)
        return self._capability

    def search_params_changed(self) -> None:
        self._capability = None

    @cached_property
    def dialect(self) -> str:
        return self.db.dialect


def create_app(settings: Settings | None = None, services: Services | None = None) -> FastAPI:
    if services is None:
        settings = settings or Settings()
        services = Services(settings, Database.connect(settings.database_url))
    hub_services = services

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        anyio.to_thread.current_default_thread_limiter().total_tokens = hub_services.settings.request_threads
        yield
        hub_services.audit.journal.settle()  # journalled read records into the chain before exit

    app = FastAPI(
        title="Haaglanden FHIR hub",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,  # the FHIR API describes itself at /fhir/metadata
        lifespan=lifespan,
    )
    app.state.services = services
    app.add_middleware(RefusalAudit, trail=services.audit)  # 401s never reach the pipeline
    # well-known paths and the audit export before /fhir/...
    for route in [*auth_routes(services), *audit_routes(services), *fhir_routes(services)]:
        app.router.routes.append(route)

    @app.get("/health", include_in_schema=False)
    def health() -> Response:
        with services.db.transaction() as conn:
            conn.exec_driver_sql("SELECT 1")
        return JSONResponse({"status": "ok"})

    @app.get("/", include_in_schema=False)
    def root(request: Request) -> Response:
        return RedirectResponse(url="/fhir/metadata")

    return app


def app_from_env() -> FastAPI:
    """For `uvicorn --factory hub.app:app_from_env` (the server processes `hub serve` starts)."""
    return create_app(Settings())
