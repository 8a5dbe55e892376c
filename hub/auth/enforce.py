"""Scope enforcement: the first step of the interaction pipeline.

Every interaction (and every entry of a batch or transaction) is checked against the token's
SMART scopes; a token bound to a patient (a PGO app) reaches only that patient's compartment,
through every door: reads and vreads (others look like 404), searches (an SQL constraint, so totals
and paging never count other patients' data), includes, history, $everything and writes.

Beyond SMART's letter table: a conditional interaction also needs "s" (it searches), update-as-create
also needs "c", and _include / chains / _has see only the types the token may read or search.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from sqlalchemy import and_, or_, select

from hub.auth.scopes import NEEDS, Scope, ScopeError, parse_scopes, permits
from hub.auth.tokens import unauthorised
from hub.fhirmodel.structure import structure
from hub.formats.outcome import FhirError, not_found
from hub.pipeline import (
    BATCH,
    CAPABILITIES,
    CREATE,
    DELETE,
    HISTORY_INSTANCE,
    HISTORY_SYSTEM,
    HISTORY_TYPE,
    OPERATION,
    PATCH,
    SEARCH_COMPARTMENT,
    SEARCH_SYSTEM,
    SEARCH_TYPE,
    TRANSACTION,
    UPDATE,
    Context,
    Interaction,
    Principal,
    Result,
)
from hub.search.compartment import index_params, patient_ids
from hub.search.planner import ReferenceValues
from hub.store.repository import Stored
from hub.store.tables import idx_reference, resource

# Operations and what they need: (permissions, on which type; None = the URL's type). $validate of a
# resource in the body needs no permission (it touches no stored data), of a stored instance "r".
OPERATION_NEEDS: dict[str, tuple[str, str | None]] = {"validate": ("r", None), "everything": ("r", "Patient")}
SEARCHES = (SEARCH_TYPE, SEARCH_SYSTEM, SEARCH_COMPARTMENT)


def forbidden(text: str) -> FhirError:
    return FhirError(403, "forbidden", text)


@lru_cache(maxsize=4096)
def _scopes(scope_set: frozenset[str], patient_bound: bool) -> tuple[Scope, ...]:
    try:
        resource_scopes, _ = parse_scopes(" ".join(sorted(scope_set)))
    except ScopeError:
        return ()
    # A patient-bound token's power is its patient/ scopes; a system token's, system/ and user/.
    wanted = ("patient",) if patient_bound else ("system", "user")
    return tuple(s for s in resource_scopes if s.context in wanted)


def scopes_of(p: Principal) -> tuple[Scope, ...]:
    return _scopes(p.scopes, p.patient_id is not None)


class Authorisation:
    def before(self, ctx: Context) -> None:
        i = ctx.interaction
        p = i.principal
        if p.kind == "local" or i.kind == CAPABILITIES:
            return  # operator commands run in-process; the CapabilityStatement is public
        if p.kind == "anonymous":
            raise unauthorised("an access token is required", "invalid_request")
        scopes = scopes_of(p)
        if i.kind in (BATCH, TRANSACTION):
            return  # each entry passes this step on its own
        if i.kind == OPERATION:
            self._operation(ctx, scopes)
        elif i.kind == SEARCH_SYSTEM:
            self._system_search(ctx, scopes)
        else:
            rt = i.compartment_type if i.kind == SEARCH_COMPARTMENT else i.res_type
            # A conditional interaction searches for its target, so it needs "s" as well (otherwise
            # a "c" token could read an existing resource through If-None-Exist).
            needs = NEEDS[i.kind] + ("s" if _conditional(i) else "")
            for need in needs:
                if not permits(list(scopes), rt or "", need):
                    raise forbidden(f"the token's scopes do not allow '{need}' on {rt}")
            if i.kind == UPDATE and i.res_id and not permits(list(scopes), rt or "", "c"):
                current = ctx.repo.current(rt or "", i.res_id)
                if current is None or current.deleted:
                    raise forbidden(f"this update would create {rt}/{i.res_id}; the token may not create {rt}")
            if i.kind in SEARCHES or _conditional(i):
                _search_only_searchable(ctx, scopes)
        _show_only_readable(ctx, scopes)
        if p.patient_id is not None:
            self._patient_bound(ctx, p.patient_id)

    def after(self, ctx: Context, result: Result) -> None:
        i = ctx.interaction
        p = i.principal
        stored = result.stored
        if not i.writes or stored is None or p.kind == "local":
            return
        # A conditional update that matched nothing creates: that needs "c" (known only now).
        if i.kind == UPDATE and result.status == 201 and not permits(list(scopes_of(p)), stored.res_type, "c"):
            raise forbidden(f"this update would create {stored.res_type}/{stored.res_id}; the token may not create")
        if p.patient_id is None or stored.deleted:
            return
        registry = ctx.services.search_params
        # A patch or conditional update may move a resource out of the patient's compartment ...
        if not in_compartment(registry, stored, p.patient_id):
            raise forbidden("a patient's token may only write data about its own patient")
        # ... or, naming an id its criteria did not find, overwrite another patient's resource.
        if i.kind in (UPDATE, PATCH) and stored.version_id > 1:
            try:
                previous = ctx.repo.vread(stored.res_type, stored.res_id, stored.version_id - 1)
            except FhirError:
                return  # the previous version is a deletion: this re-creates the resource
            if not in_compartment(registry, previous, p.patient_id):
                raise not_found(f"{stored.res_type}/{stored.res_id} is not known")

    def failed(self, ctx: Context, error: FhirError) -> None:
        return None

    # -- special interactions ---------------------------------------------------------------------

    def _operation(self, ctx: Context, scopes: tuple[Scope, ...]) -> None:
        i = ctx.interaction
        name = (i.operation or "").lstrip("$")
        needs, rt = OPERATION_NEEDS.get(name, ("r", None))
        rt = rt or i.res_type
        if name == "validate" and not i.res_id:
            return  # validating a resource given in the body touches no stored data
        if name == "everything" and not i.res_id:
            needs += "s"  # Patient/$everything?identifier=... searches for the patients first
        for need in needs:
            if not permits(list(scopes), rt or "", need):
                raise forbidden(f"the token's scopes do not allow ${name} ('{need}' on {rt})")
        if name == "everything":
            # What the patient's record holds is returned only for types the token may read.
            readable = [t for t in structure().resource_types if permits(list(scopes), t, "r")]
            if len(readable) < len(structure().resource_types):  # all 146 types: no IN list to plan
                ctx.facts.setdefault("search-constraints", []).append(
                    lambda _types, r=resource: r.c.res_type.in_(readable)
                )

    def _system_search(self, ctx: Context, scopes: tuple[Scope, ...]) -> None:
        wanted = [t for v in (v for k, v in ctx.interaction.params if k == "_type") for t in v.split(",") if t]
        allowed = [t for t in (wanted or sorted(structure().resource_types)) if permits(list(scopes), t, "s")]
        if wanted and len(allowed) < len(wanted):
            denied = sorted(set(wanted) - set(allowed))
            raise forbidden(f"the token's scopes do not allow searching {', '.join(denied)}")
        if not allowed:
            raise forbidden("the token's scopes allow no search")
        # The engine keeps to the _type list itself; the constraint is the scopes' (searchable types),
        # which the planner also applies inside _has and chains, where other types are looked into.
        _search_only_searchable(ctx, scopes)

    # -- patient-bound tokens ---------------------------------------------------------------------

    def _patient_bound(self, ctx: Context, patient_id: str) -> None:
        i = ctx.interaction
        registry = ctx.services.search_params
        local = ReferenceValues(i.base_url).local(idx_reference.c)

        def visible(_ctx: Context, stored: Stored) -> bool:
            return in_compartment(registry, stored, patient_id)

        def constraint(types: list[str], r: Any = resource) -> Any:
            options = []
            for t in types:
                params = index_params(registry, "Patient", t)
                if t == "Patient":
                    options.append(and_(r.c.res_type == "Patient", r.c.res_id == patient_id))
                elif params:
                    members = select(idx_reference.c.resource_pk).where(
                        idx_reference.c.res_type == t,
                        idx_reference.c.param.in_(params),
                        idx_reference.c.target_type == "Patient",
                        idx_reference.c.target_id == patient_id,
                        local,
                    )
                    options.append(and_(r.c.res_type == t, r.c.pk.in_(members)))
                else:
                    options.append(r.c.res_type == t)  # not patient data (Practitioner, ...)
            return or_(*options)

        constraint.narrow = True  # type: ignore[attr-defined]  # one patient's data: see SearchEngine._driver
        ctx.visible.append(visible)
        ctx.facts.setdefault("search-constraints", []).append(constraint)
        if i.kind in (HISTORY_TYPE, HISTORY_SYSTEM):
            raise forbidden("a patient's token reads history per resource, not per type or system")
        if i.kind == OPERATION and (i.operation or "").lstrip("$") == "everything" and i.res_id != patient_id:
            raise forbidden("a patient's token may only ask $everything for its own patient")
        if i.kind in (HISTORY_INSTANCE, OPERATION) and i.res_type and i.res_id:  # Observation/x/$validate too
            current = ctx.repo.current(i.res_type, i.res_id)
            if current is None or current.deleted or not visible(ctx, current):
                raise not_found(f"{i.res_type}/{i.res_id} is not known")
        writes_body = i.kind in (CREATE, UPDATE) and isinstance(i.body, dict)
        if writes_body and not _body_in_compartment(registry, i.body, patient_id):
            raise forbidden("a patient's token may only write data about its own patient")
        if i.kind in (UPDATE, PATCH, DELETE) and i.res_type and i.res_id:
            current = ctx.repo.current(i.res_type, i.res_id)
            if current is not None and not current.deleted and not visible(ctx, current):
                raise not_found(f"{i.res_type}/{i.res_id} is not known")


def _conditional(i: Interaction) -> bool:
    return bool(i.kind == CREATE and i.if_none_exist) or (i.kind in (UPDATE, PATCH, DELETE) and not i.res_id)


@lru_cache(maxsize=1024)
def _searchable(scopes: tuple[Scope, ...]) -> tuple[str, ...] | None:
    """The types the scopes may search; None when they may search every type."""
    if any(s.resource_type == "*" and "s" in s.permissions for s in scopes):
        return None
    return tuple(sorted({s.resource_type for s in scopes if "s" in s.permissions}))


def _search_only_searchable(ctx: Context, scopes: tuple[Scope, ...]) -> None:
    """A chain or _has looks into other types' rows: only into those the token may search (the
    planner applies search constraints inside chains too), so neither is an oracle on hidden data."""
    searchable = _searchable(scopes)
    if searchable is not None:
        ctx.facts.setdefault("search-constraints", []).append(lambda _types, r=resource: r.c.res_type.in_(searchable))


def _show_only_readable(ctx: Context, scopes: tuple[Scope, ...]) -> None:
    """Resources of other types than the one asked for (_include, _revinclude) are shown only when
    the token may read or search their type."""
    if any(s.resource_type == "*" and s.permissions & {"r", "s"} for s in scopes):
        return  # every type is readable: no per-resource check
    i = ctx.interaction
    asked = {i.res_type, i.compartment_type}
    known: dict[str, bool] = {}

    def shown(_ctx: Context, stored: Stored) -> bool:
        rt = stored.res_type
        if rt in asked:
            return True
        if rt not in known:
            known[rt] = permits(list(scopes), rt, "r") or permits(list(scopes), rt, "s")
        return known[rt]

    ctx.visible.append(shown)


def in_compartment(registry: Any, stored: Stored, patient_id: str) -> bool:
    if stored.content is None:
        return False
    return _body_in_compartment(registry, stored.resource(), patient_id)


def _body_in_compartment(registry: Any, body: dict[str, Any], patient_id: str) -> bool:
    rt = body.get("resourceType", "")
    if rt == "Patient":
        return bool(body.get("id") == patient_id)
    if not registry.compartment_params("Patient", rt):
        return True  # a type outside the patient compartment holds no patient data
    return patient_id in patient_ids(body, registry)
