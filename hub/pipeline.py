"""The interaction pipeline: every FHIR interaction, from HTTP or from a bundle entry, passes here.

    authorise -> consent -> execute -> filter results -> audit

Cross-cutting concerns are `Interceptor`s (in the spirit of HAPI FHIR's interceptor chain), not code
copied into each route. Each top-level interaction runs in one database transaction (a write
transaction when it may write); bundle entries run nested in their parent's transaction, so a
transaction bundle is all or nothing and its audit records commit with it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from hub.formats.outcome import FhirError

if TYPE_CHECKING:
    from hub.store.database import Database
    from hub.store.repository import Repository, Stored

log = logging.getLogger("hub.pipeline")

# Interaction kinds (FHIR R4 http.html), named as in CapabilityStatement.rest.interaction where one exists.
READ, VREAD, UPDATE, PATCH, DELETE, CREATE = "read", "vread", "update", "patch", "delete", "create"
HISTORY_INSTANCE, HISTORY_TYPE, HISTORY_SYSTEM = "history-instance", "history-type", "history-system"
SEARCH_TYPE, SEARCH_SYSTEM, SEARCH_COMPARTMENT = "search-type", "search-system", "search-compartment"
CAPABILITIES, BATCH, TRANSACTION, OPERATION = "capabilities", "batch", "transaction", "operation"

WRITES = frozenset({UPDATE, PATCH, DELETE, CREATE, BATCH, TRANSACTION})
DELETED_ID = "deleted-id"  # facts key: the id a conditional delete's criteria matched (its result names none)


@dataclass(slots=True)
class Principal:
    """Who is asking. Filled in by the authentication step (hub/auth); anonymous until then."""

    kind: str = "anonymous"  # anonymous | local | system | practitioner | patient
    client_id: str | None = None
    organisation_ura: str | None = None
    organisation_agb: str | None = None
    organisation_type: str | None = None
    practitioner_id: str | None = None  # the acting professional (UZI or AGB number)
    practitioner_system: str | None = None  # the naming system of practitioner_id
    practitioner_name: str | None = None
    role: str | None = None  # the professional's role code (e.g. UZI 01.015 huisarts)
    patient_id: str | None = None  # a PGO token's patient
    login: str | None = None  # who authenticated at the identity provider (for the audit trail)
    scopes: frozenset[str] = frozenset()
    purpose_of_use: str | None = None
    token_id: str | None = None


@dataclass(slots=True)
class Interaction:
    kind: str
    res_type: str | None = None
    res_id: str | None = None
    version_id: str | None = None
    operation: str | None = None  # "$everything", "$validate", ...
    compartment_type: str | None = None  # Patient/123/Observation -> "Observation"
    params: list[tuple[str, str]] = field(default_factory=list)
    body: Any = None  # parsed resource dict, JSON Patch list, or None
    body_kind: str | None = None  # resource | json-patch | fhirpath-patch
    if_match: str | None = None
    if_none_match: str | None = None
    if_none_exist: str | None = None
    if_modified_since: str | None = None
    prefer_return: str | None = None  # minimal | representation | OperationOutcome
    prefer_handling: str | None = None  # strict | lenient
    principal: Principal = field(default_factory=Principal)
    base_url: str = ""
    request_headers: dict[str, str] = field(default_factory=dict)
    client_address: str | None = None
    nested: bool = False  # a bundle entry

    @property
    def writes(self) -> bool:
        return self.kind in WRITES or (
            self.kind == OPERATION and (self.operation or "").lstrip("$") in WRITING_OPERATIONS
        )

    def param(self, name: str) -> str | None:
        for k, v in self.params:
            if k == name:
                return v
        return None


WRITING_OPERATIONS: set[str] = set()  # operations register themselves here when they write


@dataclass(slots=True)
class Result:
    """What an interaction produced; the API layer renders it (format, _summary, Prefer)."""

    status: int = 200
    stored: Stored | None = None  # a single stored resource (read, create, update ...)
    resource: dict[str, Any] | None = None  # a built resource (Bundle, OperationOutcome, CapabilityStatement)
    headers: dict[str, str] = field(default_factory=dict)
    outcome: dict[str, Any] | None = None  # an OperationOutcome for Prefer: return=OperationOutcome


@dataclass
class Context:
    """One interaction in flight: its request, its database connection and what interceptors add."""

    interaction: Interaction
    conn: Connection
    repo: Repository
    services: Any  # hub.app.Services: search engine, registry, settings
    # Interceptors may add: predicates a stored resource must pass to be shown (consent), and
    # facts for the audit record (the rule or consent that allowed it, patients touched, ...).
    visible: list[Callable[[Context, Stored], bool]] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)
    parent: Context | None = None
    _after_commit: list[Callable[[], None]] = field(default_factory=list)
    _after_rollback: list[Callable[[], None]] = field(default_factory=list)

    def shows(self, stored: Stored, *, constrained: bool = False) -> bool:
        """Whether the caller may see `stored`. `constrained`: the row came out of a query that applied
        facts["search-constraints"], so predicates marked `sql_twin` (their SQL form is such a
        constraint) need not run again per row."""
        return all(
            check(self, stored) for check in self.visible if not (constrained and getattr(check, "sql_twin", False))
        )

    def prepare_shows(self, batch: list[Stored]) -> None:
        """Before `shows` runs on each of a batch: checks that look things up per resource (consent:
        authors and rules) fetch them for the whole batch at once."""
        if len(batch) < 2:
            return
        for check in self.visible:
            prefetch = getattr(check, "prefetch", None)
            if prefetch is not None:
                prefetch(batch)

    @property
    def root(self) -> Context:
        return self.parent.root if self.parent is not None else self

    def on_commit(self, callback: Callable[[], None]) -> None:
        """Run `callback` once the top-level transaction has committed (not at all if it rolls back)."""
        self.root._after_commit.append(callback)

    def on_rollback(self, callback: Callable[[], None]) -> None:
        """Run `callback` once the top-level transaction has rolled back after a FhirError (the audit
        of refusals is written in a transaction of its own, which must not wait for this one)."""
        self.root._after_rollback.append(callback)


class Interceptor(Protocol):
    """A pipeline step. It may also define `prepare(interaction)`, run before the top-level
    transaction begins (the audit step flushes its journal there before the trail is read)."""

    def before(self, ctx: Context) -> None:
        """Runs before execution; raise FhirError to refuse (401/403)."""

    def after(self, ctx: Context, result: Result) -> None:
        """Runs after execution, inside the same transaction (audit of writes commits with them)."""

    def failed(self, ctx: Context, error: FhirError) -> None:
        """Runs when the interaction failed or was refused (audit of denials)."""


Executor = Callable[[Context], Result]

_RETRIES = 4


class Pipeline:
    def __init__(self, db: Database, services: Any, executor: Executor, interceptors: list[Interceptor]) -> None:
        self.db = db
        self.services = services
        self.executor = executor
        self.interceptors = interceptors

    def run(self, interaction: Interaction) -> Result:
        """Run a top-level interaction in its own transaction, retrying on a write-write race."""
        for interceptor in self.interceptors:
            prepare = getattr(interceptor, "prepare", None)  # optional: work before the transaction
            if prepare is not None:
                prepare(interaction)
        for attempt in range(_RETRIES):
            ctx: Context | None = None
            try:
                try:
                    with self._transaction(interaction.writes) as conn:
                        ctx = self._context(interaction, conn, None)
                        result = self._execute(ctx)
                except Exception as exc:
                    retried = isinstance(exc, IntegrityError | OperationalError) and _is_race(exc)
                    for callback in ctx._after_rollback if ctx is not None and not retried else ():
                        callback()  # e.g. the audit record of the refusal or failure, in its own transaction
                    raise
                assert ctx is not None
                for callback in ctx._after_commit:
                    callback()
                return result
            except (IntegrityError, OperationalError) as exc:
                if attempt == _RETRIES - 1 or not _is_race(exc):
                    raise
                log.info("write race on %s %s, retrying", interaction.kind, interaction.res_type)
        raise AssertionError("unreachable")

    def run_nested(self, interaction: Interaction, parent: Context) -> Result:
        """Run a bundle entry inside the parent's transaction."""
        interaction.nested = True
        return self._execute(self._context(interaction, parent.conn, parent))

    def check(self, interaction: Interaction, parent: Context) -> Context:
        """Run the before-steps for a bundle entry that the bundle executes in bulk (transactions);
        the bundle calls `finish` with the entry's result once the writes are done."""
        interaction.nested = True
        ctx = Context(interaction, parent.conn, parent.repo, self.services, parent=parent)
        try:
            for i in self.interceptors:
                i.before(ctx)
        except FhirError as err:
            for i in self.interceptors:
                i.failed(ctx, err)
            raise
        return ctx

    def finish(self, ctx: Context, result: Result) -> None:
        for i in self.interceptors:
            i.after(ctx, result)

    def _context(self, interaction: Interaction, conn: Connection, parent: Context | None) -> Context:
        return Context(interaction, conn, self.services.repository(conn), self.services, parent=parent)

    def _execute(self, ctx: Context) -> Result:
        try:
            for i in self.interceptors:
                i.before(ctx)
            result = self.executor(ctx)
            for i in self.interceptors:
                i.after(ctx, result)
            return result
        except FhirError as err:
            for i in self.interceptors:
                i.failed(ctx, err)
            raise
        except Exception as exc:
            if isinstance(exc, IntegrityError | OperationalError) and _is_race(exc):
                raise  # run() retries the whole interaction: nothing to record yet
            # A bug, not the client's doing: the client gets a 500; the audit trail still records
            # the attempt (NEN 7513 logs failed accesses too).
            internal = FhirError(500, "exception", f"internal error ({type(exc).__name__})")
            for i in self.interceptors:
                try:
                    i.failed(ctx, internal)
                except Exception:
                    log.exception("an interceptor failed while recording an internal error")
            raise

    @contextmanager
    def _transaction(self, write: bool) -> Iterator[Connection]:
        with self.db.transaction(write=write) as conn:
            yield conn


def _is_race(exc: DBAPIError) -> bool:
    """A unique-index violation on the current-version index or a PostgreSQL serialisation failure."""
    text = str(exc.orig)
    return (
        "uq_resource_current" in text
        or "uq_resource_version" in text
        or "UNIQUE constraint failed: resource." in text
        or "could not serialize" in text
        or "deadlock detected" in text
    )
