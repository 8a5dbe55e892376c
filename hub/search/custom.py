"""SearchParameter resources written to the hub become search parameters, in every process.

A pipeline interceptor: before a SearchParameter is written it is checked (an unusable one is a 400
and nothing is stored); after it is written, the existing resources of its base types are indexed
for it in the same transaction; once the transaction commits, the shared registry is reloaded from
the database. Other processes notice within a second (they compare the newest SearchParameter row
before each interaction) and reload too.
"""

from __future__ import annotations

import threading
import time
from functools import partial
from typing import Any

import orjson
from sqlalchemy import Connection, and_, delete, func, not_, or_, select

from hub.formats.outcome import FhirError
from hub.pipeline import CREATE, DELETE, PATCH, UPDATE, Context, Result
from hub.search.extract import contained_tuples, derived_params, derived_references, extract_tuples
from hub.search.registry import Registry, SearchParam
from hub.store import bulk
from hub.store.tables import INDEX_TABLES, idx_token, resource

SEARCH_PARAMETER = "SearchParameter"
_CHECK_EVERY = 1.0  # seconds between checks for SearchParameters written by other processes
_BATCH = 500


def _usable(res: dict[str, Any]) -> bool:
    return res.get("status") != "retired"


class CustomSearchParameters:
    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.sources: dict[str, dict[str, Any]] = {}  # url -> SearchParameter resource now registered
        self._marker: tuple[Any, ...] | None = None
        self._checked = 0.0
        self._lock = threading.Lock()

    # -- keeping the registry in step with the database -------------------------------------------

    def _current_marker(self, conn: Connection) -> tuple[Any, ...]:
        row = conn.execute(
            select(func.count(), func.max(resource.c.pk)).where(resource.c.res_type == SEARCH_PARAMETER)
        ).one()
        return tuple(row)

    def load(self, conn: Connection) -> None:
        """(Re)register every stored SearchParameter; ones that no longer work are skipped."""
        rows = conn.execute(
            select(resource.c.content).where(
                resource.c.res_type == SEARCH_PARAMETER, resource.c.is_current, not_(resource.c.deleted)
            )
        ).all()
        marker = self._current_marker(conn)
        with self._lock:
            for url in list(self.sources):
                self.registry.remove(url)
            self.sources.clear()
            for (content,) in rows:
                res = orjson.loads(content)
                if not _usable(res):
                    continue
                try:
                    param = self.registry.add(res)
                except FhirError:
                    continue  # stored before a rule tightened; it stays a plain resource
                self.sources[param.url] = res
            self._marker = marker
            self._checked = time.monotonic()

    def refresh(self, conn: Connection) -> None:
        if time.monotonic() - self._checked < _CHECK_EVERY:
            return
        self._checked = time.monotonic()
        if self._current_marker(conn) != self._marker:
            self.load(conn)

    # -- interceptor -------------------------------------------------------------------------------

    def before(self, ctx: Context) -> None:
        if ctx.parent is None:
            self.refresh(ctx.conn)
        i = ctx.interaction
        if i.res_type != SEARCH_PARAMETER:
            return
        if i.kind in (CREATE, UPDATE) and isinstance(i.body, dict) and _usable(i.body):
            self._scratch().add(i.body)  # raises a 400 for an unusable parameter, before any write
        if i.kind in (UPDATE, PATCH, DELETE) and i.res_id:
            old = ctx.repo.current(SEARCH_PARAMETER, i.res_id)
            if old is not None and not old.deleted:
                ctx.facts["old-search-parameter"] = old.resource()

    def after(self, ctx: Context, result: Result) -> None:
        i = ctx.interaction
        if i.res_type != SEARCH_PARAMETER or i.kind not in (CREATE, UPDATE, PATCH, DELETE):
            return
        old = ctx.facts.get("old-search-parameter")
        stored = result.stored
        new = stored.resource() if stored is not None and not stored.deleted else None
        if new is not None and not _usable(new):
            new = None
        if old == new:
            return
        scratch = self._scratch(without=old.get("url") if old else None)
        if new is not None:
            scratch.add(new)  # a patch can make a parameter unusable: 400, and the write rolls back
        affected = {(base, res["code"]) for res in (old, new) if res for base in res.get("base", [])}
        live = ctx.services.search_params
        for base in {b for b, _ in affected if b not in ("Resource", "DomainResource")}:
            # A custom parameter that shadows the source of a derived one (Observation `code` for
            # combo-code) makes that one need rows of its own again, and the reverse.
            for derived in (derived_params, derived_references):
                before, after = derived(base, live), derived(base, scratch)
                affected |= {(base, c) for c in before.keys() | after.keys() if before.get(c) != after.get(c)}
        for base, code in sorted(affected):
            # Whatever indexed (base, code) before, what the registry now says replaces it.
            _drop(ctx.conn, base, code)
            param = (
                scratch.get(base, code)
                if base not in ("Resource", "DomainResource")
                else scratch.by_url((new or old or {}).get("url", ""))
            )
            if param is not None and param.indexed:
                reindex(ctx.conn, scratch, param, [base])
        ctx.on_commit(lambda: self._reload_after_commit(ctx))

    def failed(self, ctx: Context, error: FhirError) -> None:
        return None

    # -- helpers ----------------------------------------------------------------------------------

    def _scratch(self, without: str | None = None) -> Registry:
        """A registry with the standard and the current custom parameters, to try a change on."""
        scratch = Registry.load()
        for url, res in self.sources.items():
            if url != without:
                scratch.add(res)
        return scratch

    def _reload_after_commit(self, ctx: Context) -> None:
        with ctx.services.db.transaction() as conn:
            self.load(conn)
        ctx.services.search_params_changed()


def _types_clause(base: str) -> Any:
    if base in ("Resource", "DomainResource"):
        return resource.c.res_type.is_not(None)
    return resource.c.res_type == base


def _drop(conn: Connection, base: str, code: str) -> None:
    """Every index row of (base, code): the resources' own, those a container of type `base` keeps
    under a reference parameter `code` (`code:*`), and those containers keep for a contained resource
    of type `base` (`*:base.code`; hub.search.extract.contained_code)."""
    generic = base in ("Resource", "DomainResource")
    for table in INDEX_TABLES.values():
        scope = or_(table.c.param == code, and_(table.c.param >= f"{code}:", table.c.param < f"{code};"))
        if not generic:
            scope = scope & (table.c.res_type == base)
        conn.execute(delete(table).where(scope))
    inside = f"%:{'%' if generic else _like(base)}.{_like(code)}"
    for chunk in _chunks(_holders(conn, base)):
        for table in INDEX_TABLES.values():
            conn.execute(delete(table).where(table.c.resource_pk.in_(chunk), table.c.param.like(inside, escape="\\")))


def _holders(conn: Connection, base: str) -> list[int]:
    """The containers that hold a contained resource of type `base` (of any type for Resource): each
    keeps an `_id` row for it. One pass over the token rows; changing a SearchParameter is rare."""
    kind = "%" if base in ("Resource", "DomainResource") else _like(base)
    found = conn.execute(
        select(idx_token.c.resource_pk).where(idx_token.c.param.like(f"%:{kind}.\\_id", escape="\\")).distinct()
    )
    return sorted(pk for (pk,) in found)


def _chunks(pks: list[int]) -> list[list[int]]:
    return [pks[i : i + _BATCH] for i in range(0, len(pks), _BATCH)]


def _like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def reindex(conn: Connection, registry: Registry, param: SearchParam, bases: list[str] | None = None) -> int:
    """Index the current resources of the parameter's base types for this one parameter, and what
    containers keep for it (chains look inside contained resources): under a reference parameter the
    rows of the contained resources it names; for a contained resource of a base type, its rows."""
    codes = frozenset({param.code})
    references = codes if param.type == "reference" else None
    written = 0
    for base in bases or list(param.base):
        own = partial(_own_rows, registry=registry, codes=codes, references=references)
        written += bulk.index_current(conn, own, _types_clause(base), batch=_BATCH)
        inside = partial(_contained_of, registry=registry, inner=(base, codes))
        for chunk in _chunks(_holders(conn, base)):
            written += bulk.index_current(conn, inside, resource.c.pk.in_(chunk), batch=_BATCH)
    return written


def _own_rows(
    res_type: str, data: bytes, *, registry: Registry, codes: frozenset[str], references: frozenset[str] | None
) -> dict[str, list[tuple[Any, ...]]]:
    res = orjson.loads(data)
    rows = extract_tuples(res, registry, codes)
    if references is not None and res.get("contained"):
        for table, more in contained_tuples(res, registry, references=references).items():
            rows.setdefault(table, []).extend(more)
    return rows


def _contained_of(
    res_type: str, data: bytes, *, registry: Registry, inner: tuple[str, frozenset[str]]
) -> dict[str, list[tuple[Any, ...]]]:
    res = orjson.loads(data)
    if inner[0] in ("Resource", "DomainResource"):  # every contained resource, whatever its type
        types = {c.get("resourceType") for c in res.get("contained", ()) if type(c) is dict}
        out: dict[str, list[tuple[Any, ...]]] = {}
        for t in sorted(t for t in types if isinstance(t, str)):
            for table, rows in contained_tuples(res, registry, inner=(t, inner[1])).items():
                out.setdefault(table, []).extend(rows)
        return out
    return contained_tuples(res, registry, inner=inner)
