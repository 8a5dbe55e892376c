"""Parsing a FHIR search request into a structured query (R4 search.html), before any SQL.

Unknown parameters become warnings (or a 400 under `Prefer: handling=strict`); malformed values are
a 400 naming the parameter. Result parameters (_count, _sort, _include, ...) are separated out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hub.fhirmodel.structure import structure
from hub.formats.outcome import FhirError, Issue

# Parameters on every resource that are not rows in the index tables.
SPECIAL = {"_id", "_lastUpdated", "_has", "_type", "_list", "_text", "_content", "_query", "_filter"}
RESULT = {
    "_count", "_sort", "_total", "_summary", "_elements", "_include", "_revinclude", "_contained",
    "_containedType", "_page", "_format", "_pretty", "_since", "_at",
}  # fmt: skip
# (allowed values, the default): contained resources are never matches, so only the defaults take effect
CONTAINED = {
    "_contained": (("false", "true", "both"), "false"),
    "_containedType": (("container", "contained"), "container"),
}

# R4 list.html "Current Resource Lists": what the hub counts as on each, per resource type. A
# Condition or allergy marked entered-in-error or refuted is not current; a medication is current
# while it is taken (MedicationStatement) or ordered and active (MedicationRequest).
FUNCTIONAL_LISTS: dict[str, dict[str, list[tuple[str, str]]]] = {
    "$current-problems": {
        "Condition": [
            ("clinical-status", "active,recurrence,relapse"),
            ("verification-status:not", "entered-in-error,refuted"),
        ],
    },
    "$current-allergies": {
        "AllergyIntolerance": [("clinical-status", "active"), ("verification-status:not", "entered-in-error,refuted")],
    },
    "$current-medications": {
        "MedicationStatement": [("status", "active")],
        "MedicationRequest": [("status", "active")],
    },
}

MODIFIERS = {
    "string": {"exact", "contains", "missing"},
    "token": {"not", "text", "of-type", "in", "not-in", "above", "below", "missing"},
    "reference": {"identifier", "missing", "above", "below"},  # plus :[type]
    "date": {"missing"},
    "number": {"missing"},
    "quantity": {"missing"},
    "uri": {"below", "above", "missing"},
    "composite": {"missing"},
    "special": {"missing"},
}
PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")


@dataclass
class Clause:
    """One parameter occurrence: its values are OR'd; separate clauses are AND'ed."""

    name: str  # as the client wrote it, e.g. "subject:Patient.name:exact"
    code: str  # the parameter code on the type being searched, e.g. "subject"
    type: str  # search parameter type, or "special"
    modifier: str | None = None
    values: list[str] = field(default_factory=list)
    param: Any = None  # the registry's SearchParam, None for _id / _lastUpdated / _has
    chain: Clause | None = None  # subject.name=x: the clause on the referenced type
    chain_types: list[str] = field(default_factory=list)  # the types the chain goes through
    has: HasLink | None = None  # _has:Observation:patient:code=x
    # _filter (hub.search.filter): a test ordinary search has no form for ("eq", "ne", "ew" on a
    # string, "ne" on a token, "po" / "co" on a date, "co" on a number); and an `or` / `not` of clauses.
    op: str | None = None
    filter: FilterNode | None = None


@dataclass
class FilterNode:
    """A _filter expression's `and` / `or` over its parts, or `not` of its one part."""

    op: str
    parts: list[FilterNode | Clause]


@dataclass
class HasLink:
    source_type: str  # Observation
    reference_code: str  # patient (a reference parameter on Observation)
    inner: Clause  # the clause the Observation must meet (may itself be a _has)


@dataclass
class Include:
    source_type: str  # "*" for all
    code: str  # "*" for all reference parameters
    target_type: str | None
    iterate: bool
    reverse: bool


@dataclass
class SearchQuery:
    types: list[str]  # the resource types searched (one for a type search)
    clauses: list[Clause] = field(default_factory=list)
    count: int = 50
    sort: list[tuple[str, bool]] = field(default_factory=list)  # (code, descending)
    total: str | None = None  # None: the server's choice (a total only when the first page holds all)
    summary: str | None = None
    elements: list[str] | None = None
    includes: list[Include] = field(default_factory=list)
    page: str | None = None
    warnings: list[Issue] = field(default_factory=list)
    echo: list[tuple[str, str]] = field(default_factory=list)  # the parameters that took effect, for links


def _split_or(value: str) -> list[str]:
    """Split on commas that are not escaped with a backslash; unescape \\, \\$ \\|."""
    out, cur, i = [], [], 0
    while i < len(value):
        ch = value[i]
        if ch == "\\" and i + 1 < len(value):
            cur.append(value[i : i + 2])
            i += 2
            continue
        if ch == ",":
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
        i += 1
    out.append("".join(cur))
    return out


def unescape(value: str) -> str:
    return value.replace("\\,", ",").replace("\\$", "$").replace("\\|", "|").replace("\\\\", "\\")


def split_unescaped(value: str, sep: str, maxsplit: int = -1) -> list[str]:
    """Split on `sep` where it is not escaped by a backslash."""
    parts, cur, i, n = [], [], 0, 0
    while i < len(value):
        ch = value[i]
        if ch == "\\" and i + 1 < len(value):
            cur.append(value[i : i + 2])
            i += 2
            continue
        if ch == sep and (maxsplit < 0 or n < maxsplit):
            parts.append("".join(cur))
            cur = []
            n += 1
        else:
            cur.append(ch)
        i += 1
    parts.append("".join(cur))
    return parts


class QueryParser:
    def __init__(self, registry: Any, strict: bool, default_count: int, max_count: int) -> None:
        self.registry = registry
        self.strict = strict
        self.default_count = default_count
        self.max_count = max_count

    def problem(self, query: SearchQuery, name: str, text: str) -> None:
        """An unknown or unsupported parameter: a warning, or a 400 under handling=strict."""
        if self.strict:
            raise FhirError(400, "not-supported", text, name)
        query.warnings.append(Issue("warning", "not-supported", text, [name]))

    def parse(self, types: list[str], params: list[tuple[str, str]]) -> SearchQuery:
        query = SearchQuery(types=types, count=self.default_count)
        for name, value in params:
            base = name.split(":", 1)[0].split(".", 1)[0]
            if base in RESULT:
                self._result_param(query, name, value)
                continue
            if base == "_query":  # a search the client meant to narrow must not answer everything
                raise FhirError(400, "not-supported", f"_query: this server defines no named query {value!r}", name)
            if base == "_type":  # the engine works out `types` from it; the links must keep it
                query.echo.append((name, value))
                continue
            if base == "_list":
                query.clauses.append(self._list(query, types, name, value))
                query.echo.append((name, value))
                continue
            if base == "_filter":
                query.clauses.extend(self._filter(query, types, name, value))
                query.echo.append((name, value))
                continue
            clause = self.clause(query, types, name, value)
            if clause is not None:
                query.clauses.append(clause)
                query.echo.append((name, value))
        return query

    # -- result parameters ------------------------------------------------------------------------

    def _result_param(self, query: SearchQuery, name: str, value: str) -> None:
        base = name.split(":", 1)[0]
        if base == "_count":
            if not value.isdigit():
                raise FhirError(400, "invalid", f"_count must be a non-negative integer, not {value!r}", "_count")
            query.count = min(int(value), self.max_count)
            query.echo.append((name, value))
        elif base == "_sort":
            query.sort = self._sort(query, value)
            query.echo.append((name, value))
        elif base == "_total":
            if value not in ("none", "estimate", "accurate"):
                raise FhirError(400, "invalid", f"_total must be none, estimate or accurate, not {value!r}", "_total")
            query.total = value
            query.echo.append((name, value))
        elif base == "_summary":
            query.summary = value
            query.echo.append((name, value))
        elif base == "_elements":
            query.elements = [v.strip() for v in value.split(",") if v.strip()]
            query.echo.append((name, value))
        elif base in ("_include", "_revinclude"):
            query.includes.extend(self._include(query, name, value))
            query.echo.append((name, value))
        elif base == "_page":
            query.page = value
        elif base in ("_format", "_pretty"):
            query.echo.append((name, value))
        elif base in CONTAINED:
            self._contained(query, name, value)
        else:
            self.problem(query, name, f"{base} is not supported in a search")

    def _contained(self, query: SearchQuery, name: str, value: str) -> None:
        """`_contained` / `_containedType` (R4 search.html#contained). Chained parameters look inside
        contained resources anyway; contained resources as matches are not supported, so only the
        defaults (`false`, `container`) take effect."""
        if name not in CONTAINED:
            raise FhirError(400, "invalid", f"{name}: {name.split(':')[0]} takes no modifier", name)
        allowed, default = CONTAINED[name]
        if value not in allowed:
            raise FhirError(400, "invalid", f"{name} must be one of {', '.join(allowed)}, not {value!r}", name)
        if value == default:
            query.echo.append((name, value))
        else:
            self.problem(query, name, f"{name}={value} is not supported: contained resources are never matches")

    def _sort(self, query: SearchQuery, value: str) -> list[tuple[str, bool]]:
        keys = []
        for raw in value.split(","):
            raw = raw.strip()
            if not raw:
                continue
            desc = raw.startswith("-")
            code = raw.lstrip("-")
            params = [self.registry.get(t, code) for t in query.types]
            if code not in ("_id", "_lastUpdated") and not all(p and p.type != "special" and p.indexed for p in params):
                raise FhirError(
                    400,
                    "invalid",
                    f"Cannot sort by {code!r}: not a search parameter of {', '.join(query.types)}",
                    "_sort",
                )
            keys.append((code, desc))
        return keys

    def _include(self, query: SearchQuery, name: str, value: str) -> list[Include]:
        reverse = name.startswith("_revinclude")
        modifier = name.split(":", 1)[1] if ":" in name else None
        if modifier not in (None, "iterate", "recurse"):
            raise FhirError(400, "invalid", f"{name}: unknown modifier :{modifier}", name)
        iterate = modifier is not None
        if value == "*":
            return [Include("*", "*", None, iterate, reverse)]
        parts = value.split(":")
        if len(parts) not in (2, 3):
            raise FhirError(400, "invalid", f"{name}={value}: expected SourceType:parameter[:TargetType]", name)
        source, code = parts[0], parts[1]
        target = parts[2] if len(parts) == 3 else None
        if source != "*" and not structure().is_resource_type(source):
            raise FhirError(400, "invalid", f"{name}={value}: unknown resource type {source}", name)
        if target and not structure().is_resource_type(target):
            raise FhirError(400, "invalid", f"{name}={value}: unknown resource type {target}", name)
        if code != "*" and source != "*":
            p = self.registry.get(source, code)
            if p is None or p.type != "reference":
                raise FhirError(
                    400, "invalid", f"{name}={value}: {code} is not a reference parameter of {source}", name
                )
        return [Include(source, code, target, iterate, reverse)]

    # -- filter parameters ------------------------------------------------------------------------

    def _list(self, query: SearchQuery, types: list[str], name: str, value: str) -> Clause:
        """`_list=id`: the resources that List/id names among its entries (R4 search.html#list), i.e.
        `_has:List:item:_id=id`, so the List itself must be one the caller may see. The functional
        lists of R4 list.html (`$current-problems`, `$current-allergies`, `$current-medications`) are
        the criteria in FUNCTIONAL_LISTS on their types; a resource of another type is on none."""
        if name != "_list":
            raise FhirError(400, "invalid", f"{name}: _list takes no modifier", name)
        ids = _split_or(value)
        if any(not i for i in ids):
            raise FhirError(400, "invalid", "_list has an empty value", name)
        functional = [unescape(i) for i in ids if i.startswith(("$", "\\$"))]
        stored = [i for i in ids if not i.startswith(("$", "\\$"))]
        parts: list[FilterNode | Clause] = []
        for fn in functional:
            if fn not in FUNCTIONAL_LISTS:
                known = ", ".join(sorted(FUNCTIONAL_LISTS))
                raise FhirError(400, "not-supported", f"_list: {fn} is not a functional list here ({known})", name)
            if len(types) != 1:
                raise FhirError(400, "not-supported", f"_list: {fn} needs a search of one resource type", name)
            criteria = FUNCTIONAL_LISTS[fn].get(types[0])
            if criteria is None:  # nothing of this type is on the list
                parts.append(Clause("_id", "_id", "token", None, []))
                continue
            made = [self._strict().clause(query, types, n, v) for n, v in criteria]
            parts.append(FilterNode("and", [c for c in made if c is not None]))
        if stored:
            inner = Clause("_id", "_id", "token", None, stored)
            parts.append(Clause(name, "_has", "special", None, [], None, has=HasLink("List", "item", inner)))
        if len(parts) == 1 and isinstance(parts[0], Clause):
            return parts[0]
        return Clause(name, "_list", "special", None, [], None, filter=FilterNode("or", parts))

    def _strict(self) -> QueryParser:
        """This parser under strict handling: criteria the hub builds (a _filter's comparisons, a
        functional list's) must not be skipped as unknown."""
        return self if self.strict else QueryParser(self.registry, True, self.default_count, self.max_count)

    def _filter(self, query: SearchQuery, types: list[str], name: str, value: str) -> list[Clause]:
        """`_filter=expression`: its comparisons as clauses (hub.search.filter). Strict whatever the
        handling: a comparison skipped as unknown would change what the rest of the expression means."""
        from hub.search import filter as search_filter

        if name != "_filter":
            raise FhirError(400, "invalid", f"{name}: _filter takes no modifier", name)
        strict = self._strict()
        tree = search_filter.parse(value)
        return search_filter.build(tree, value, lambda n, v: strict.clause(query, types, n, v))

    def clause(self, query: SearchQuery, types: list[str], name: str, value: str) -> Clause | None:
        if name.startswith("_has:"):
            return self._has(query, types, name, value)
        head, dot, rest = name.partition(".")
        code, _, modifier = head.partition(":")
        modifier_or_none = modifier or None
        if code in ("_id", "_lastUpdated"):
            kind = "token" if code == "_id" else "date"
            allowed = ("not", "missing") if code == "_id" else ("missing",)  # R4: _id is a token, _lastUpdated a date
            if modifier_or_none and modifier_or_none not in allowed:
                raise FhirError(400, "invalid", f"{name}: the modifier :{modifier} does not apply to {code}", name)
            if modifier_or_none == "missing" and value not in ("true", "false"):
                raise FhirError(400, "invalid", f"{name} must be true or false", name)
            values = _split_or(value)
            if any(v == "" for v in values):
                raise FhirError(400, "invalid", f"{name} has an empty value", name)
            return Clause(name, code, kind, modifier_or_none, values)
        if code == "_content":  # every text of the resource (hub.search.planner Planner._content)
            if modifier_or_none or dot:
                raise FhirError(400, "invalid", f"{name}: _content takes no modifier", name)
            values = _split_or(value)
            if any(not v.strip() for v in values):
                raise FhirError(400, "invalid", f"{name} has an empty value", name)
            return Clause(name, code, "special", None, values)
        params = [self.registry.get(t, code) for t in types]
        if not all(params):
            missing = [t for t, p in zip(types, params, strict=True) if p is None]
            self.problem(query, name, f"Unknown search parameter {code!r} for {', '.join(missing)}")
            return None
        param = params[0]
        if param.type == "special" and not param.indexed:  # Location `near` is indexed
            self.problem(query, name, f"The special search parameter {code} is not supported")
            return None
        if dot:  # chained: subject.name=x, subject:Patient.name=x
            return self._chain(query, types, name, code, modifier_or_none, param, rest, value)
        type_modifier = param.type == "reference" and structure().is_resource_type(modifier_or_none or "")
        if modifier_or_none and modifier_or_none not in MODIFIERS.get(param.type, set()) and not type_modifier:
            raise FhirError(
                400, "invalid", f"{name}: the modifier :{modifier} does not apply to {param.type} parameters", name
            )
        if modifier_or_none == "missing":
            if value not in ("true", "false"):
                raise FhirError(400, "invalid", f"{name} must be true or false", name)
            return Clause(name, code, param.type, "missing", [value], param)
        values = _split_or(value)
        if value == "" or any(v == "" for v in values):
            raise FhirError(400, "invalid", f"{name} has an empty value", name)
        return Clause(name, code, param.type, modifier_or_none, values, param)

    def _chain(
        self,
        query: SearchQuery,
        types: list[str],
        name: str,
        code: str,
        modifier: str | None,
        param: Any,
        rest: str,
        value: str,
    ) -> Clause | None:
        if param.type != "reference":
            raise FhirError(400, "invalid", f"{name}: only reference parameters can be chained", name)
        if modifier and not structure().is_resource_type(modifier):
            raise FhirError(400, "invalid", f"{name}: :{modifier} must name a resource type in a chain", name)
        next_code = rest.partition(".")[0].partition(":")[0]
        candidates = [modifier] if modifier else list(param.targets or [])
        targets = [t for t in candidates if next_code in ("_id", "_lastUpdated") or self.registry.get(t, next_code)]
        if not targets:
            self.problem(query, name, f"No target of {code} has a search parameter {next_code!r}")
            return None
        inner = self.clause(query, targets, rest, value)
        if inner is None:
            return None
        return Clause(name, code, "reference", modifier, [], param, chain=inner, chain_types=targets)

    def _has(self, query: SearchQuery, types: list[str], name: str, value: str) -> Clause | None:
        parts = name.split(":", 3)
        if len(parts) != 4 or not parts[3]:
            raise FhirError(400, "invalid", f"{name}: expected _has:Type:reference:parameter", name)
        _, source, ref_code, inner_name = parts
        if not structure().is_resource_type(source):
            raise FhirError(400, "invalid", f"{name}: unknown resource type {source}", name)
        ref = self.registry.get(source, ref_code)
        if ref is None or ref.type != "reference":
            raise FhirError(400, "invalid", f"{name}: {ref_code} is not a reference parameter of {source}", name)
        inner = self.clause(query, [source], inner_name, value)
        if inner is None:
            return None
        return Clause(name, "_has", "special", None, [], None, has=HasLink(source, ref_code, inner))
