"""Patient/$everything (R4 patient-operation-everything): the patient, everything in their
compartment, and what those resources refer to (practitioners, organisations, medication ...).

Instance level: one patient. Type level: the patients matching the given search parameters, e.g.
`Patient/$everything?identifier=http://fhir.nl/fhir/NamingSystem/bsn|999951750` (find by BSN first).
Parameters: _since (lastUpdated), _type (comma-separated types), _count and paging.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import not_, select, union

from hub.api.operations import Operation, register
from hub.fhirmodel.structure import structure
from hub.formats.dates import parse_instant
from hub.formats.outcome import FhirError, invalid, not_found
from hub.pipeline import Context, Result
from hub.search.compartment import index_params
from hub.search.engine import Page
from hub.search.planner import ReferenceValues
from hub.search.query import SearchQuery
from hub.store.keys import pair_filter
from hub.store.tables import idx_reference, resource

_OWN = {"_since", "_type", "_count", "_page", "_total", "_format", "_pretty", "_summary", "_elements", "start", "end"}
DEFAULT_COUNT = 200


def _compartment_pairs(registry: Any) -> list[tuple[str, str]]:
    """(type, parameter) of the index rows that put a resource in a Patient's compartment."""
    from hub.search.registry import patient_compartment

    return [(rt, code) for rt in patient_compartment() for code in index_params(registry, "Patient", rt)]


def members(registry: Any, patient_ids: list[str], local: Any, dialect: str) -> Any:
    """pks of the patients and of the current resources in their compartments."""
    ref = idx_reference.c
    in_compartment = select(ref.resource_pk).where(
        ref.target_type == "Patient",
        ref.target_id.in_(patient_ids),
        pair_filter(ref.res_type, ref.param, _compartment_pairs(registry), dialect),
        local,
    )
    patients = select(resource.c.pk).where(
        resource.c.res_type == "Patient", resource.c.res_id.in_(patient_ids), resource.c.is_current
    )
    return union(in_compartment, patients)


def everything_select(registry: Any, patient_ids: list[str], base_url: str, dialect: str) -> Any:
    """The SELECT of every resource $everything returns for these patients (before _type/_since)."""
    local = ReferenceValues(base_url).local(idx_reference.c)
    inside = members(registry, patient_ids, local, dialect).subquery()
    referenced = (
        select(idx_reference.c.target_type, idx_reference.c.target_id)
        .where(
            idx_reference.c.resource_pk.in_(select(inside.c[0])),
            idx_reference.c.target_type.is_not(None),
            idx_reference.c.target_type != "Patient",  # other patients are never swept in
            local,
        )
        .distinct()
    )
    target = resource.alias("target")
    wanted = referenced.subquery()
    # One look-up per referenced (type, id) through uq_resource_current, as a scalar subquery: as a
    # join, PostgreSQL overestimated the distinct targets (41k for 3.4k) and hashed a sequential scan
    # of all of `resource` (350 ms for a large record at 1,200 patients).
    referenced_pks = select(
        select(target.c.pk)
        .where(target.c.res_type == wanted.c.target_type, target.c.res_id == wanted.c.target_id, target.c.is_current)
        .scalar_subquery()
    ).select_from(wanted)
    # One set of pks (not `pk IN inside OR (type, id) IN referenced`): with the OR, PostgreSQL could
    # not join on the set and walked the whole (type, id) index in sort order filtering each row
    # (0.9 s a page at 1,200 patients).
    return select(resource.c.pk).where(
        resource.c.is_current,
        not_(resource.c.deleted),
        resource.c.pk.in_(union(select(inside.c[0]), referenced_pks)),
    )


def _patients(ctx: Context) -> list[str]:
    i = ctx.interaction
    if i.res_id:
        found = ctx.repo.current("Patient", i.res_id)
        if found is None or found.deleted or not ctx.shows(found):
            raise not_found(f"Patient/{i.res_id} is not known")
        return [i.res_id]
    criteria = [(k, v) for k, v in i.params if k not in _OWN]
    if not criteria:
        raise invalid("Patient/$everything at type level needs search parameters to select the patients")
    return [s.res_id for s in ctx.services.search.match(ctx, "Patient", criteria)]


def everything(ctx: Context) -> Result:
    i = ctx.interaction
    engine = ctx.services.search
    settings = ctx.services.settings
    for name, _ in i.params:
        if name in ("start", "end"):
            raise FhirError(400, "not-supported", f"$everything: the {name} parameter is not supported", name)
    patient_ids = _patients(ctx)
    stmt = everything_select(engine.registry, patient_ids or ["\x00none"], i.base_url, ctx.conn.dialect.name)
    types = [t for v in (v for k, v in i.params if k == "_type") for t in v.split(",") if t]
    if types:
        stmt = stmt.where(resource.c.res_type.in_(types))
    all_types = types or sorted(structure().resource_types)
    for constraint in ctx.facts.get("search-constraints", []):  # scopes, consent: totals count only what is shown
        stmt = stmt.where(constraint(all_types, resource))
    if i.param("_since"):
        stmt = stmt.where(resource.c.last_updated >= parse_instant(i.param("_since") or "", "_since"))
    count_raw = i.param("_count")
    if count_raw is not None and not count_raw.isdigit():
        raise invalid(f"_count must be a non-negative integer, not {count_raw!r}", "_count")
    count = min(int(count_raw), settings.max_page_size) if count_raw else DEFAULT_COUNT
    page = i.param("_page")
    total_raw = i.param("_total")
    if total_raw not in (None, "none", "estimate", "accurate"):
        raise invalid(f"_total must be none, estimate or accurate, not {total_raw!r}", "_total")
    want_total = None if total_raw is None else total_raw != "none"
    matches, total, next_cursor, prev_cursor = engine.paged(ctx, stmt, [], page, count, want_total)
    query = SearchQuery(types=["Patient"], count=count, page=page)
    query.echo = [(k, v) for k, v in i.params if k != "_page"]
    return Result(200, resource=engine.bundle(ctx, Page(matches, [], total, next_cursor, prev_cursor, query)))


register(
    Operation(
        "everything",
        everything,
        type_level=True,
        instance=True,
        resource_types=("Patient",),
        definition="http://hl7.org/fhir/OperationDefinition/Patient-everything",
    )
)
