"""Finding ValueSets and CodeSystems in the store, and caching their expansions and hierarchies.

`Terminology` lives as long as the process (one per Services); `session(conn, base_url)` gives the
view one interaction uses. Expansions and CodeSystem views are cached per (url, version). Any write
of a ValueSet or CodeSystem, by this process or another, in this transaction or a rolled-back one,
changes the marker (row count, newest pk, newest lastUpdated of those two types), and a session that
sees a changed marker drops the whole cache before using it: one small indexed query per session
that needs terminology.
"""

from __future__ import annotations

import threading
from typing import Any

import orjson
from sqlalchemy import Connection, func, not_, select

from hub.formats.outcome import FhirError
from hub.store.tables import idx_uri, resource
from hub.terminology.codesystem import CodeSystemView
from hub.terminology.expansion import Expansion, ExpansionError, expand

TYPES = ("ValueSet", "CodeSystem")
_MAX_DEPTH = 20  # value sets importing value sets: deeper than this is taken for a cycle


class Terminology:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._marker: tuple[Any, ...] | None = None
        self.expansions: dict[tuple[str, str | None], Expansion] = {}
        self.code_systems: dict[tuple[str, str | None], CodeSystemView | None] = {}

    def session(self, conn: Connection, base_url: str) -> TerminologySession:
        return TerminologySession(self, conn, base_url)

    def _check(self, conn: Connection) -> None:
        marker = tuple(
            conn.execute(
                select(func.count(), func.max(resource.c.pk), func.max(resource.c.last_updated)).where(
                    resource.c.res_type.in_(TYPES)
                )
            ).one()
        )
        with self._lock:
            if marker != self._marker:
                self.expansions.clear()
                self.code_systems.clear()
                self._marker = marker


class TerminologySession:
    """Lookups for one interaction (its connection sees its own uncommitted writes)."""

    def __init__(self, cache: Terminology, conn: Connection, base_url: str) -> None:
        self.cache = cache
        self.conn = conn
        self.base = base_url.rstrip("/") + "/"
        self._checked = False
        self._stack: list[str] = []

    def _fresh(self) -> None:
        if not self._checked:
            self.cache._check(self.conn)
            self._checked = True

    # -- the store --------------------------------------------------------------------------------

    def _by_url(self, res_type: str, url: str, version: str | None) -> dict[str, Any] | None:
        rows = self.conn.execute(
            select(resource.c.content)
            .where(
                resource.c.res_type == res_type,
                resource.c.is_current,
                not_(resource.c.deleted),
                resource.c.pk.in_(
                    select(idx_uri.c.resource_pk).where(
                        idx_uri.c.res_type == res_type, idx_uri.c.param == "url", idx_uri.c.value == url
                    )
                ),
            )
            .order_by(resource.c.last_updated.desc())
        ).all()
        found = [orjson.loads(content) for (content,) in rows]
        if version is not None:
            found = [r for r in found if r.get("version") == version]
        return found[0] if found else None  # without a version: the one written last

    def _by_id(self, res_type: str, res_id: str) -> dict[str, Any] | None:
        row = self.conn.execute(
            select(resource.c.content).where(
                resource.c.res_type == res_type,
                resource.c.res_id == res_id,
                resource.c.is_current,
                not_(resource.c.deleted),
            )
        ).first()
        return orjson.loads(row[0]) if row else None

    def value_set(self, ref: str) -> dict[str, Any] | None:
        """A ValueSet by canonical (`url` or `url|version`) or literal reference (`ValueSet/id`,
        also as an absolute URL on this hub's base)."""
        url, _, version = ref.partition("|")
        found = self._by_url("ValueSet", url, version or None)
        if found is None:
            local = url[len(self.base) :] if url.startswith(self.base) else url
            kind, _, res_id = local.partition("/")
            if kind == "ValueSet" and res_id and "/" not in res_id:
                found = self._by_id("ValueSet", res_id)
        return found

    # -- cached views ---------------------------------------------------------------------------

    def code_system(self, url: str, version: str | None = None) -> CodeSystemView | None:
        self._fresh()
        key = (url, version)
        if key not in self.cache.code_systems:
            cs = self._by_url("CodeSystem", url, version)
            self.cache.code_systems[key] = CodeSystemView(cs) if cs is not None else None
        return self.cache.code_systems[key]

    def expansion(self, ref: str, name: str = "") -> Expansion:
        """The expansion of the ValueSet `ref`; a 400 naming it when it is unknown or cannot be expanded."""
        self._fresh()
        url, _, version = ref.partition("|")
        key = (url, version or None)
        if key in self.cache.expansions:
            return self.cache.expansions[key]
        if ref in self._stack or len(self._stack) > _MAX_DEPTH:
            raise FhirError(400, "invalid", f"ValueSet {ref} includes itself", name or None)
        vs = self.value_set(ref)
        if vs is None:
            raise FhirError(400, "not-found", f"{name + ': ' if name else ''}unknown ValueSet {ref}", name or None)
        self._stack.append(ref)
        try:
            exp = expand(vs, self.code_system, lambda u: self.expansion(u, name))
        except ExpansionError as exc:
            raise FhirError(400, "not-supported", f"{name + ': ' if name else ''}{exc}", name or None) from None
        finally:
            self._stack.pop()
        self.cache.expansions[key] = exp
        return exp
