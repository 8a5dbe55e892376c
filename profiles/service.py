"""Profile validation in the hub: the registry every process keeps, validation on write, $validate.

The registry holds the R4 base, the hub's own profiles (profiles/definitions) and every
StructureDefinition, ValueSet and CodeSystem stored in the hub (installed packages). Like custom
SearchParameters, it is reloaded when those rows change: at once in the process that wrote them,
within a second elsewhere.

On write (create, update, patch; bundle entries too), a resource whose meta.profile names a loaded
profile is validated against it. HUB_PROFILE_VALIDATION decides what a failure does: `enforce`
refuses the write (422 with the OperationOutcome), `warn` stores it and returns the problems as
warnings (in the OperationOutcome of `Prefer: return=OperationOutcome`), `off` skips profiles.
The default enforces the hub's own workflow profiles and warns for the others. A Dutch identifier
of the wrong form (BSN 11-proof, AGB, URA) on a resource's own identifiers is refused unless the
setting is `warn` or `off`.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import orjson
from sqlalchemy import Connection, func, not_, select

from hub.fhirmodel.validate import has_errors, validate_resource
from hub.formats.outcome import FhirError, Issue
from hub.pipeline import CREATE, DELETE, PATCH, UPDATE, Context, Result
from hub.store.tables import resource as resource_table
from profiles import dutch
from profiles.registry import KINDS, Registry, own_definitions
from profiles.validator import Resolver, validate_against

MODES = ("default", "off", "warn", "enforce")
STORED_KINDS = tuple(k for k in KINDS if k != "SearchParameter")
_CHECK_EVERY = 1.0


def dedupe(issues: list[Issue]) -> list[Issue]:
    seen: set[tuple[str, str, str, tuple[str, ...]]] = set()
    out = []
    for i in issues:
        key = (i.severity, i.code, i.diagnostics, tuple(i.expression))
        if key not in seen:
            seen.add(key)
            out.append(i)
    return out


def identifier_issues(res: dict[str, Any]) -> list[Issue]:
    """Dutch identifier form checks on the resource's own `identifier` list."""
    out = []
    ids = res.get("identifier")
    for n, ident in enumerate(ids if isinstance(ids, list) else [ids] if isinstance(ids, dict) else []):
        if isinstance(ident, dict) and ident.get("system") in dutch.SYSTEMS:
            problem = dutch.identifier_problem(ident["system"], ident.get("value"))
            if problem:
                where = f"{res.get('resourceType')}.identifier" + (f"[{n}]" if isinstance(ids, list) else "")
                out.append(Issue("error", "value", problem, [where + ".value"]))
    return out


def _warnings(issues: list[Issue]) -> list[Issue]:
    return [Issue("warning", i.code, i.diagnostics, i.expression) if i.severity == "error" else i for i in issues]


class ProfileService:
    def __init__(self, mode: str = "default", registry: Registry | None = None) -> None:
        if mode not in MODES:
            raise ValueError(f"HUB_PROFILE_VALIDATION must be one of {', '.join(MODES)}, not {mode!r}")
        self.mode = mode
        self._registry: Registry | None = registry
        self._marker: tuple[Any, ...] | None = None
        self._checked = 0.0
        self._lock = threading.Lock()

    # -- the registry -----------------------------------------------------------------------------

    def registry(self) -> Registry:
        if self._registry is None:
            self._registry = self._build([])
        return self._registry

    @staticmethod
    def _build(stored: list[dict[str, Any]]) -> Registry:
        reg = Registry()
        reg.add_all(own_definitions(), origin="hub")
        reg.add_all(stored, origin="installed")
        return reg

    def _current_marker(self, conn: Connection) -> tuple[Any, ...]:
        row = conn.execute(
            select(func.count(), func.max(resource_table.c.pk)).where(resource_table.c.res_type.in_(STORED_KINDS))
        ).one()
        return tuple(row)

    def load(self, conn: Connection) -> None:
        rows = conn.execute(
            select(resource_table.c.content).where(
                resource_table.c.res_type.in_(STORED_KINDS), resource_table.c.is_current, not_(resource_table.c.deleted)
            )
        ).all()
        marker = self._current_marker(conn)
        registry = self._build([orjson.loads(c) for (c,) in rows if c is not None])
        with self._lock:
            self._registry, self._marker, self._checked = registry, marker, time.monotonic()

    def refresh(self, conn: Connection) -> None:
        if self._marker is not None and time.monotonic() - self._checked < _CHECK_EVERY:
            return
        self._checked = time.monotonic()
        if self._current_marker(conn) != self._marker:
            self.load(conn)

    def invalidate(self) -> None:
        self._marker = ("stale",)
        self._checked = 0.0

    def own_profiles(self, res_type: str) -> list[str]:
        """The hub's own profiles (profiles/definitions) for a resource type, for the CapabilityStatement."""
        reg = self.registry()
        return sorted(
            url
            for url, origin in reg.origin.items()
            if origin == "hub" and (reg.structure_definition(url) or {}).get("type") == res_type
        )

    # -- validation -------------------------------------------------------------------------------

    def mode_for(self, url: str) -> str:
        if self.mode != "default":
            return self.mode
        return "enforce" if self.registry().origin.get(url.split("|", 1)[0]) == "hub" else "warn"

    def declared(self, res: dict[str, Any]) -> tuple[list[str], list[str]]:
        """(loaded, unknown) profiles of meta.profile; the R4 base ones count as not declared."""
        reg = self.registry()
        loaded: list[str] = []
        unknown: list[str] = []
        profiles = (res.get("meta") or {}).get("profile") or []
        for url in profiles if isinstance(profiles, list) else []:
            if not isinstance(url, str) or reg.is_base(url):
                continue
            (loaded if reg.structure_definition(url) is not None else unknown).append(url)
        return loaded, unknown

    def validate(
        self, res: dict[str, Any], profiles: list[str] | None = None, resolver: Resolver | None = None
    ) -> list[Issue]:
        """Structure, then the given profiles (or the declared ones, or the base definition)."""
        issues = validate_resource(res)
        if has_errors(issues):
            return issues
        reg = self.registry()
        if profiles is None:
            loaded, unknown = self.declared(res)
            issues += [
                Issue("warning", "not-supported", f"Profile {u} is not known to the hub; not checked", ["meta.profile"])
                for u in unknown
            ]
            profiles = loaded or [str(res.get("resourceType"))]
        for url in profiles:
            issues += validate_against(reg, res, url, resolver)
        return dedupe(issues)

    # -- interceptor ------------------------------------------------------------------------------

    def before(self, ctx: Context) -> None:
        if ctx.parent is None:
            self.refresh(ctx.conn)
        i = ctx.interaction
        if i.kind in (CREATE, UPDATE) and isinstance(i.body, dict) and i.body.get("resourceType") == i.res_type:
            self._check_write(ctx, i.body)

    def after(self, ctx: Context, result: Result) -> None:
        i = ctx.interaction
        stored = result.stored
        if i.kind == PATCH and stored is not None and not stored.deleted:
            self._check_write(ctx, stored.resource())
        if i.res_type in STORED_KINDS and i.kind in (CREATE, UPDATE, PATCH, DELETE):
            self.invalidate()
            ctx.on_commit(self.invalidate)
        found = ctx.facts.get("profile-warnings")
        if found and result.outcome is not None:
            issues = [*result.outcome.get("issue", []), *(w.to_json() for w in found)]
            result.outcome = {**result.outcome, "issue": issues}

    def failed(self, ctx: Context, error: FhirError) -> None:
        return None

    def _check_write(self, ctx: Context, body: dict[str, Any]) -> None:
        if self.mode == "off":
            return
        loaded, _ = self.declared(body)
        ids = identifier_issues(body)
        if not loaded and not ids:
            return  # the common case (no loaded profile declared): nothing beyond the base checks
        if has_errors(validate_resource(body)):
            return  # structural errors are the executor's 400
        refused: list[Issue] = []
        kept: list[Issue] = []
        (kept if self.mode == "warn" else refused).extend(ids)
        for url in loaded:
            issues = [x for x in validate_against(self.registry(), body, url) if x.severity != "information"]
            if self.mode_for(url) == "enforce" and has_errors(issues):
                refused.extend(issues)
            else:
                kept.extend(_warnings(issues))
        if has_errors(refused):
            raise FhirError(
                422, "processing", "", issues=dedupe([x for x in refused if x.severity in ("error", "fatal")] + refused)
            )
        if kept:
            ctx.facts.setdefault("profile-warnings", []).extend(dedupe(kept))
