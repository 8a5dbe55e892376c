"""The search engine: runs a parsed query as SQL, pages with keyset cursors, adds _include and
_revinclude, and builds the searchset Bundle. One engine serves type, system and compartment
search, conditional interactions and $everything."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, bindparam, false, func, or_, select

from hub.api.paging import bundle, decode_cursor, encode_cursor, full_url
from hub.fhirmodel.structure import structure
from hub.formats.outcome import invalid, not_found, operation_outcome
from hub.formats.subset import parse_summary
from hub.pipeline import SEARCH_COMPARTMENT, SEARCH_SYSTEM, Context
from hub.search.compartment import index_params
from hub.search.planner import (
    DRIVER,
    Planner,
    ReferenceValues,
    base_select,
    narrowest_first,
    param_scope,
    rank,
    token_driver,
)
from hub.search.query import Clause, Include, QueryParser, SearchQuery
from hub.search.registry import COMPARTMENTS
from hub.store.keys import pairs_in
from hub.store.repository import READ_COLUMNS, Stored, stored_from_row
from hub.store.tables import idx_reference, resource
from hub.terminology.service import Terminology

MAX_INCLUDES = 1000  # included resources per page, against runaway :iterate
MAX_MATCH = 1000  # conditional interactions look at no more than this many matches
EXACT_UP_TO = 1000  # _total=estimate counts exactly up to here (see estimate_total)


@dataclass
class Page:
    matches: list[Stored]
    included: list[Stored]
    total: int | None
    next_cursor: str | None
    prev_cursor: str | None
    query: SearchQuery


class SearchEngine:
    def __init__(self, registry: Any) -> None:
        self.registry = registry
        self.terminology = Terminology()  # ValueSet expansions and CodeSystem hierarchies, per process

    # -- capability -----------------------------------------------------------------------------

    def includes_for(self, rt: str) -> list[str]:
        return ["*", *sorted(f"{rt}:{p.code}" for p in self.registry.for_type(rt) if p.type == "reference")]

    def revincludes_for(self, rt: str) -> list[str]:
        """Every SourceType:param whose reference can point at `rt`."""
        found = {
            f"{base}:{p.code}"
            for p in self.registry.all()
            if p.type == "reference" and rt in p.targets
            for base in p.base
            if structure().is_resource_type(base)
        }
        return ["*", *sorted(found)]

    # -- entry points ---------------------------------------------------------------------------

    def planner(self, ctx: Context, probed: dict[Any, Any] | None = None) -> Planner:
        """`probed`: the probe answers the planners of one search share (a bundle's later entries
        may have written containers, so nothing longer-lived)."""
        base = ctx.interaction.base_url
        constraints = ctx.facts.get("search-constraints", ())
        conn = ctx.conn
        return Planner(
            self.registry,
            base,
            constraints,
            self.terminology.session(conn, base),
            dialect=conn.dialect.name,
            probe=lambda stmt: probe(conn, stmt),
            probed=probed,
        )

    def parser(self, ctx: Context, strict: bool | None = None) -> QueryParser:
        settings = ctx.services.settings
        if strict is None:
            strict = ctx.interaction.prefer_handling == "strict"
        return QueryParser(self.registry, strict, settings.default_page_size, settings.max_page_size)

    def match(self, ctx: Context, res_type: str, params: list[tuple[str, str]]) -> list[Stored]:
        """Current resources matching criteria, for conditional interactions (always strict: an
        ignored unknown parameter would widen a conditional delete to everything)."""
        query = self.parser(ctx, strict=True).parse([res_type], params)
        if query.includes or query.sort:
            raise invalid("Conditional criteria take filter parameters only")
        stmt = self._filtered([res_type], query.clauses, ctx).order_by(resource.c.res_id).limit(MAX_MATCH)
        pks = [row[0] for row in ctx.conn.execute(stmt)]
        found = ctx.repo.by_pks(pks)
        ctx.prepare_shows(found)
        return [s for s in found if ctx.shows(s)]

    def search(self, ctx: Context) -> dict[str, Any]:
        """The searchset Bundle for a type, system or compartment search."""
        i = ctx.interaction
        types = self._types(ctx)
        query = self.parser(ctx).parse(types, i.params)
        parse_summary(query.summary)
        extra: list[Any] = []
        if i.kind == SEARCH_COMPARTMENT:
            extra.append(self._compartment(ctx, types))
        page = self.run(ctx, types, query, extra)
        return self.bundle(ctx, page)

    # -- running ----------------------------------------------------------------------------------

    def _types(self, ctx: Context) -> list[str]:
        i = ctx.interaction
        if i.kind == SEARCH_COMPARTMENT:
            return [i.compartment_type or ""]
        if i.kind == SEARCH_SYSTEM:
            wanted = [t for v in (v for k, v in i.params if k == "_type") for t in v.split(",") if t]
            for t in wanted:
                if not structure().is_resource_type(t):
                    raise invalid(f"_type: unknown resource type {t!r}", "_type")
            return wanted or sorted(structure().resource_types)
        return [i.res_type or ""]

    def _compartment(self, ctx: Context, types: list[str]) -> Any:
        i = ctx.interaction
        owner_type, owner_id = i.res_type or "", i.res_id or ""
        if owner_type not in COMPARTMENTS:
            raise invalid(f"{owner_type} is not a compartment (the compartments are {', '.join(COMPARTMENTS)})")
        params = index_params(self.registry, owner_type, types[0])
        if not params and owner_type != types[0]:  # the owner is in its own compartment ({def})
            raise invalid(f"{types[0]} is not in the {owner_type} compartment")
        owner = ctx.repo.current(owner_type, owner_id)
        if owner is None or owner.deleted or not ctx.shows(owner):
            raise not_found(f"{owner_type}/{owner_id} is not known")
        sub = select(idx_reference.c.resource_pk).where(
            idx_reference.c.res_type == types[0],
            idx_reference.c.param.in_(params),
            idx_reference.c.target_type == owner_type,
            idx_reference.c.target_id == owner_id,
            _local(ctx),
        )
        if owner_type == types[0]:
            return (
                or_(resource.c.res_id == owner_id, resource.c.pk.in_(sub)) if params else resource.c.res_id == owner_id
            )
        return resource.c.pk.in_(sub)

    def _filtered(
        self,
        types: list[str],
        clauses: list[Clause],
        ctx: Context,
        extra: list[Any] | None = None,
        constrained: bool = True,
        late: bool = True,
        driver: Clause | None = None,
        probed: dict[Any, Any] | None = None,
    ) -> Any:
        """The search's SELECT resource.pk with its access constraints (`constrained`), or without
        those marked `late` (`late=False`: see paged); driven by the token rows of `driver` if given
        (see _driver)."""
        planner = self.planner(ctx, probed)
        if driver is not None:
            stmt = planner.driven(driver, types, postgres=ctx.conn.dialect.name == "postgresql")
            clauses = [c for c in clauses if c is not driver]
        else:
            stmt = base_select(types)
        # SQLite: the driving clause (the first, or `driver`) enumerates; the others test each
        # candidate's own index rows (a chain: its own references) rather than building their lists
        # of every match. A _has fans out to whatever refers to a candidate, so it does so only after
        # a handful (an id, an identifier). A chain ranks as a reference, so it is later only after
        # an id, an identifier, a reference or another chain.
        sqlite = ctx.conn.dialect.name == "sqlite"
        ordered = narrowest_first(clauses)
        first = driver if driver is not None else (ordered[0] if ordered else None)
        few = first is not None and rank(first) == 0
        for n, clause in enumerate(ordered):
            later = n > 0 or driver is not None
            per_row = sqlite and later and (clause.has is None or few)
            stmt = stmt.where(planner.condition(clause, types, per_row=per_row))
        for cond in extra or []:
            stmt = stmt.where(cond)
        if constrained:  # only estimate_total looks at the search without the access constraints
            for cond in ctx.facts.get("search-constraints", []):  # e.g. the patient compartment of a PGO token
                if late or not getattr(cond, "late", False):
                    stmt = stmt.where(cond(types, resource))
        return stmt

    @staticmethod
    def _late(ctx: Context, types: list[str]) -> list[Any]:
        """The constraints that may be tested on a page's candidates rather than on every match."""
        return [c(types, resource) for c in ctx.facts.get("search-constraints", []) if getattr(c, "late", False)]

    def _driver(self, ctx: Context, types: list[str], query: SearchQuery, extra: list[Any] | None) -> Clause | None:
        """In the default order: the token clause whose index rows drive the page
        (planner.token_driver), on both databases. Not where a patient's compartment narrows the
        search (a compartment search, a patient's token): walking a common code's rows in write order
        to find one patient's would read them all."""
        if query.sort or extra:
            return None
        if any(getattr(c, "narrow", False) for c in ctx.facts.get("search-constraints", [])):
            return None
        return token_driver(query.clauses, types, self.registry)

    def run(self, ctx: Context, types: list[str], query: SearchQuery, extra: list[Any] | None = None) -> Page:
        probed: dict[Any, Any] = {}
        planner = self.planner(ctx, probed)
        late = self._late(ctx, types)
        driver = self._driver(ctx, types, query, extra)
        early = self._filtered(types, query.clauses, ctx, extra, late=False, driver=driver, probed=probed)
        filtered = early.where(*late) if late else early
        keys = [(planner.sort_key(code, desc, types), desc) for code, desc in query.sort]
        want_total = total_wanted(query)
        estimate = query.total == "estimate" and query.summary != "count"
        unconstrained = (
            self._filtered(types, query.clauses, ctx, extra, constrained=False, driver=driver, probed=probed)
            if estimate
            else None
        )
        # On PostgreSQL planning the constraint costs more than testing it on every candidate, so a
        # second statement for a page's candidates does not pay there (bench/bench_consent.py).
        two_step = bool(late) and ctx.conn.dialect.name == "sqlite"
        matches, total, next_cursor, prev_cursor = self.paged(
            ctx,
            filtered,
            keys,
            query.page,
            query.count,
            want_total,
            unconstrained,
            (early, late) if two_step else None,
            pk=resource.c.pk if driver is None else DRIVER.c.resource_pk,
        )
        included = self._includes(ctx, query.includes, matches) if query.includes and query.summary != "count" else []
        return Page(matches, included, total, next_cursor, prev_cursor, query)

    def paged(
        self,
        ctx: Context,
        filtered: Any,
        sort: list[tuple[Any, bool]],
        page: str | None,
        count: int,
        want_total: bool | None,
        estimate_from: Any = None,
        early: tuple[Any, list[Any]] | None = None,
        pk: Any = resource.c.pk,
    ) -> tuple[list[Stored], int | None, str | None, str | None]:
        """One page of a `SELECT resource.pk ...` in the given sort order, ties (and a search without
        _sort) in the order rows were written (resource.pk: an index gives it, so a first page of a
        common code stops after `count` matches instead of sorting every match by id; a resource
        changed while a client pages moves behind the cursor and may show twice, never not at all),
        with keyset cursors for the next and previous pages, and the total if wanted (None: only
        when the first page holds every match, so it costs no second query).

        `early`: (the same statement without its late constraints, those constraints). The page is
        first taken from the candidates and only those are tested (consent per row costs as much as
        the search itself, and a patient's search sorts hundreds of candidates for a page of 50);
        when a candidate is hidden and more exist, the page comes from `filtered` after all.

        `pk`: the column equal to resource.pk that orders the page (a driving index's, see _driver)."""
        keys = [*sort, (pk, False)]
        labels = [k.label(f"k{n}") for n, (k, _) in enumerate(keys)]
        cursor: Any = None
        backwards = False
        if page:
            direction, values = _decode_page(page, len(keys))
            backwards = direction == "prev"
            cursor = _after([k for k, _ in keys], [d for _, d in keys], values, backwards)
        order = []
        for k, desc in keys:  # forward: NULLs last; backwards is the exact reverse
            ascending = desc == backwards
            column = k.asc() if ascending else k.desc()
            if getattr(k, "nullable", True) is False:
                # A NOT NULL column (_lastUpdated, type, id): no NULLS clause, so PostgreSQL can walk
                # an index backwards for a descending sort (DESC NULLS LAST would not match it).
                order.append(column)
            else:
                order.append(column.nulls_first() if backwards else column.nulls_last())

        def page_of(stmt: Any, *extra: Any) -> list[Any]:
            stmt = stmt.add_columns(*labels, *extra)
            if cursor is not None:
                stmt = stmt.where(cursor)
            return list(ctx.conn.execute(stmt.order_by(*order).limit(count + 1)))

        rows: list[Any] | None = [] if count <= 0 else None
        fetched: dict[int, Stored] = {}  # candidates read while testing them
        if rows is None and early is not None and not want_total:  # a count tests every match anyway
            candidates = page_of(early[0])
            if candidates:
                # The rows of the candidates that pass the late constraints, in one statement. In the
                # WHERE clause SQLite stops at the first OR term that holds (usually the patient's
                # blanket permit); as a result column it would evaluate every term for every row.
                test = select(*READ_COLUMNS).where(resource.c.pk.in_(_PKS), *early[1])
                for columns in ctx.conn.execute(test, {"pks": [row[0] for row in candidates]}):
                    fetched[columns[0]] = stored_from_row(columns)
                if len(fetched) == len(candidates) or len(candidates) <= count:
                    rows = [row for row in candidates if row[0] in fetched]  # exactly the page
            else:
                rows = []
        total = None
        one_pass = early is not None or ctx.conn.dialect.name == "postgresql"
        if rows is None and one_pass and want_total and cursor is None and estimate_from is None:
            # A first page and its total in one statement, so each match is tested once, not once
            # for the page and again for the count: where constraints are tested per row (SQLite's
            # two steps), and on PostgreSQL, whose plan for a large list (a chain) tests every match
            # for the page anyway (`patient.gender=male&_total=accurate`, 120 patients: two passes
            # of 105 and 79 ms, one of 110).
            rows = page_of(filtered, func.count().over())
            total = rows[0][-1] if rows else 0
            rows = [row[:-1] for row in rows]
        if rows is None:
            rows = page_of(filtered)
        more = len(rows) > count
        rows = rows[:count]
        if backwards:
            rows.reverse()
        pks = [row[0] for row in rows]
        found = [fetched[pk] for pk in pks] if all(pk in fetched for pk in pks) else ctx.repo.by_pks(pks)
        # `filtered` carries the search constraints (scopes, compartment, consent): no second check per row.
        matches = [s for s in found if ctx.shows(s, constrained=True)]
        if want_total is None:
            total = len(matches) if not page and not more else None
        elif want_total and total is None:
            if estimate_from is not None:
                total = estimate_total(ctx.conn, filtered, estimate_from)
            else:
                total = count_total(ctx.conn, filtered)
        next_cursor = prev_cursor = None
        if rows:
            last, first = rows[-1], rows[0]
            if (more and not backwards) or (backwards and page):
                next_cursor = _encode_page("next", [_plain(v) for v in last[1:]])
            if (backwards and more) or (not backwards and page):
                prev_cursor = _encode_page("prev", [_plain(v) for v in first[1:]])
        return matches, total, next_cursor, prev_cursor

    # -- includes ---------------------------------------------------------------------------------

    def _includes(self, ctx: Context, includes: list[Include], matches: list[Stored]) -> list[Stored]:
        seen = {(s.res_type, s.res_id) for s in matches}
        out: list[Stored] = []
        frontier = matches
        first = True
        while frontier and len(out) < MAX_INCLUDES:
            wanted = [inc for inc in includes if first or inc.iterate]
            if not wanted:
                break
            found: list[Stored] = []
            for inc in wanted:
                batch = self._revinclude(ctx, inc, frontier) if inc.reverse else self._include(ctx, inc, frontier)
                ctx.prepare_shows(batch)
                for s in batch:
                    key = (s.res_type, s.res_id)
                    if key not in seen and ctx.shows(s):
                        seen.add(key)
                        found.append(s)
            out.extend(found)
            frontier = found
            first = False
        return out[:MAX_INCLUDES]

    def _include(self, ctx: Context, inc: Include, sources: list[Stored]) -> list[Stored]:
        r = idx_reference
        pks = [s.pk for s in sources if inc.source_type in ("*", s.res_type)]
        if not pks:
            return []
        stmt = select(r.c.target_type, r.c.target_id).where(
            r.c.resource_pk.in_(pks), r.c.target_id.is_not(None), _local(ctx)
        )
        if inc.code != "*":
            types = [inc.source_type] if inc.source_type != "*" else sorted({s.res_type for s in sources})
            stmt = stmt.where(param_scope(self.registry, r, types, inc.code))
        if inc.target_type:
            stmt = stmt.where(r.c.target_type == inc.target_type)
        keys = {(t, i) for t, i in ctx.conn.execute(stmt) if t}
        found = ctx.repo.current_many(sorted(keys))
        return [s for s in found.values() if not s.deleted]

    def _revinclude(self, ctx: Context, inc: Include, targets: list[Stored]) -> list[Stored]:
        r = idx_reference
        keys = [(s.res_type, s.res_id) for s in targets if inc.target_type in (None, s.res_type)]
        if not keys:
            return []
        stmt = select(r.c.resource_pk).where(pairs_in(r.c.target_type, r.c.target_id, keys), _local(ctx))
        if inc.code != "*":
            types = [inc.source_type] if inc.source_type != "*" else sorted(structure().resource_types)
            stmt = stmt.where(param_scope(self.registry, r, types, inc.code))
        elif inc.source_type != "*":
            stmt = stmt.where(r.c.res_type == inc.source_type)
        pks = sorted({row[0] for row in ctx.conn.execute(stmt.limit(MAX_INCLUDES))})
        return ctx.repo.by_pks(pks)

    # -- the bundle -------------------------------------------------------------------------------

    def bundle(self, ctx: Context, page: Page) -> dict[str, Any]:
        i = ctx.interaction
        base = i.base_url
        query = page.query
        path = self._path(ctx)
        echo = list(query.echo)
        if not any(k == "_count" for k, _ in echo):
            echo.append(("_count", str(query.count)))
        links = {"self": _link(base, path, [*echo, *([("_page", query.page)] if query.page else [])])}
        if query.page:
            links["first"] = _link(base, path, echo)
        if page.prev_cursor:
            links["previous"] = _link(base, path, [*echo, ("_page", page.prev_cursor)])
        if page.next_cursor:
            links["next"] = _link(base, path, [*echo, ("_page", page.next_cursor)])
        entries: list[dict[str, Any]] = []
        if query.summary != "count":
            for s in page.matches:
                entries.append({"fullUrl": full_url(base, s), "resource": s, "search": {"mode": "match"}})
            for s in page.included:
                entries.append({"fullUrl": full_url(base, s), "resource": s, "search": {"mode": "include"}})
        if query.warnings:
            entries.append(
                {
                    "fullUrl": "urn:uuid:search-warnings",
                    "resource": operation_outcome(query.warnings),
                    "search": {"mode": "outcome"},
                }
            )
        return bundle("searchset", entries, links, page.total)

    @staticmethod
    def _path(ctx: Context) -> str:
        i = ctx.interaction
        if i.kind == SEARCH_COMPARTMENT:
            return f"{i.res_type}/{i.res_id}/{i.compartment_type}"
        if i.operation:
            return "/".join(p for p in (i.res_type, i.res_id, i.operation) if p)
        return i.res_type or ""


_PKS: Any = bindparam("pks", expanding=True)  # one statement for any number of candidates


def probe(conn: Connection, stmt: Any) -> Any:
    """The one row of a planner's probe. On PostgreSQL with its values written into the SQL: the
    generic plan for `res_type = $1 AND param = $2` (psycopg prepares a statement after five runs)
    scans every token row, 38-60 ms at 120 patients when no row matches; with the values it is an
    index seek (0.7 ms with compiling). The values are the registry's type and parameter codes."""
    if conn.dialect.name != "postgresql":
        return conn.execute(stmt).one()
    sql = stmt.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True})
    return conn.exec_driver_sql(str(sql)).one()


def total_wanted(query: SearchQuery) -> bool | None:
    """Whether a search counts its matches: always for _summary=count, _total=accurate and
    _total=estimate, never for _total=none; by default for _count=0 and otherwise (None) only when
    the first page holds every match. A second count over all matches costs more than the page
    itself on a common code; like Blaze and Medplum, the default leaves a large total out and
    `_total=accurate` asks for it."""
    if query.summary == "count":
        return True
    if query.total is None:
        return True if query.count == 0 else None  # _count=0 is the usual way to ask "how many?"
    return query.total != "none"


def count_total(conn: Connection, filtered: Any) -> int:
    return int(conn.execute(select(func.count()).select_from(filtered.subquery())).scalar_one())


def estimate_total(conn: Connection, filtered: Any, unconstrained: Any) -> int:
    """_total=estimate. Exact up to EXACT_UP_TO matches (the count stops there, so it stays cheap).
    Beyond that, on PostgreSQL: the planner's row estimate for the search without the access
    constraints (EXPLAIN, nothing executed; their OR'ed per-row tests would skew it), times the
    share of a sample of EXACT_UP_TO of those rows that the constraints let through, and never less
    than what was counted. SQLite keeps no statistics to estimate from: it counts."""
    counted = count_total(conn, filtered.limit(EXACT_UP_TO + 1))
    if counted <= EXACT_UP_TO:
        return counted
    if conn.dialect.name != "postgresql":
        return count_total(conn, filtered)
    compiled = unconstrained.compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True})
    plan = conn.exec_driver_sql(f"EXPLAIN (FORMAT JSON) {compiled}", compiled.params).scalar_one()
    if isinstance(plan, str):
        plan = json.loads(plan)
    rows = float(plan[0]["Plan"]["Plan Rows"])
    sample = unconstrained.limit(EXACT_UP_TO).subquery()
    sampled, visible = conn.execute(
        select(func.count(), func.count().filter(sample.c.pk.in_(filtered))).select_from(sample)
    ).one()
    share = visible / sampled if sampled else 1.0
    return max(int(rows * share), counted)


def _local(ctx: Context) -> Any:
    """Reference index rows that point into this hub (relative, or absolute on its own base)."""
    return ReferenceValues(ctx.interaction.base_url).local(idx_reference.c)


def _link(base: str, path: str, params: list[tuple[str, str]]) -> str:
    from urllib.parse import urlencode

    query = urlencode(params)
    url = f"{base}/{path}" if path else base
    return f"{url}?{query}" if query else url


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return {"t": value.isoformat()}
    return value


def _unplain(value: Any) -> Any:
    if isinstance(value, dict) and "t" in value:
        return datetime.fromisoformat(value["t"])
    return value


def _encode_page(direction: str, values: list[Any]) -> str:
    return encode_cursor(direction, json.dumps(values, separators=(",", ":")))


def _decode_page(token: str, n: int) -> tuple[str, list[Any]]:
    direction, raw = decode_cursor(token, 2)
    try:
        values = [_unplain(v) for v in json.loads(raw)]
    except (ValueError, TypeError):
        raise invalid("The paging token is damaged", "_page") from None
    if direction not in ("next", "prev") or len(values) != n:
        raise invalid("The paging token does not belong to this search", "_page")
    return direction, values


def _after(cols: list[Any], descending: list[bool], values: list[Any], backwards: bool) -> Any:
    """Rows strictly after the cursor row in the sort order (or strictly before it, paging back).

    The order is each key ascending or descending with NULLs (missing values) last; the last key
    (resource.pk) is never NULL, so the order is total."""
    options = []
    for n, (col, desc, value) in enumerate(zip(cols, descending, values, strict=True)):
        ties = [_same(c, v) for c, v in zip(cols[:n], values[:n], strict=True)]
        if not backwards:
            if value is None:
                continue  # nothing sorts after NULL at this key; only ties go on
            step = or_(col < value if desc else col > value, col.is_(None))
        else:
            step = col.is_not(None) if value is None else (col > value if desc else col < value)
        options.append(and_(*ties, step))
    return or_(*options) if options else false()


def _same(col: Any, value: Any) -> Any:
    return col.is_(None) if value is None else col == value
