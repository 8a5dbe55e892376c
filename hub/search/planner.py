"""SQL for FHIR search: a parsed query becomes one SELECT over `resource` and the index tables.

Each clause is a semi-join `resource.pk IN (SELECT resource_pk FROM idx_x WHERE res_type = ? AND
param = ? AND <value test>)`, which both SQLite and PostgreSQL turn into an index range scan on
(res_type, param, value) followed by a probe of the resource primary key. OR'ed values go into one
subquery; AND'ed clauses are separate semi-joins. Chains and _has nest the same construction.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Select,
    and_,
    exists,
    false,
    func,
    literal,
    not_,
    or_,
    select,
    true,
    tuple_,
    union_all,
)
from sqlalchemy.sql.elements import ColumnElement as Col
from sqlalchemy.sql.util import ClauseAdapter

from hub.formats.dates import parse_range
from hub.formats.outcome import FhirError
from hub.search.extract import contained_code, derived_references, row_scope
from hub.search.query import PREFIXES, Clause, FilterNode, split_unescaped, unescape
from hub.store.hints import by_resource
from hub.store.tables import (
    idx_composite,
    idx_date,
    idx_number,
    idx_quantity,
    idx_reference,
    idx_string,
    idx_token,
    idx_uri,
    resource,
)

EPOCH = datetime(1970, 1, 1)


def normalise(text: str) -> str:
    from hub.search.extract import normalize_string

    return normalize_string(text)


def to_ms(ts: datetime) -> int:
    """Naive UTC datetime -> ms since the epoch (floor), as the date index stores it."""
    delta = ts - EPOCH
    return delta.days * 86_400_000 + delta.seconds * 1000 + delta.microseconds // 1000


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def split_prefix(value: str) -> tuple[str, str]:
    if len(value) > 2 and value[:2] in PREFIXES and not value[2].isalpha():
        return value[:2], value[2:]
    return "eq", value


# -- value tests per index table ------------------------------------------------------------------


def _string(clause: Clause, value: str) -> Col[bool]:
    v = unescape(value)
    if clause.code == "_text":  # the narrative's words, wherever they stand (`exact` holds it whole)
        return _words(idx_string.c.exact, v, phrase=clause.modifier == "exact")
    if clause.modifier == "exact":
        return idx_string.c.exact == v
    if clause.op in ("eq", "ne"):  # _filter: the whole value, case- and accent-insensitive
        same = idx_string.c.value == normalise(v)
        return same if clause.op == "eq" else not_(same)
    norm = _like_escape(normalise(v))
    if clause.modifier == "contains":
        return idx_string.c.value.like(f"%{norm}%", escape="\\")
    if clause.op == "ew":
        return idx_string.c.value.like(f"%{norm}", escape="\\")
    return idx_string.c.value.like(f"{norm}%", escape="\\")


def _words(col: Any, text: str, phrase: bool = False) -> Col[bool]:
    """Each word of `text` (or the whole of it, `phrase`) somewhere in a normalised text column."""
    norm = normalise(text)
    words = [norm] if phrase else norm.split()
    if not words:
        return false()
    return and_(*(col.like(f"%{_like_escape(w)}%", escape="\\") for w in words))


def _token(clause: Clause, value: str, *, prefix: str = "") -> Col[bool]:
    if clause.op == "ne":  # _filter: a value of the parameter other than this one
        return not_(_token(Clause(clause.name, clause.code, clause.type, clause.modifier, [], clause.param), value))
    t = idx_token
    if clause.modifier == "text":
        return t.c.text.like(f"{_like_escape(normalise(unescape(value)))}%", escape="\\")
    if clause.modifier == "of-type":
        parts = [unescape(p) for p in split_unescaped(value, "|")]
        if len(parts) != 3 or not all(parts):
            raise FhirError(400, "invalid", f"{clause.name}={value}: :of-type takes system|code|value", clause.name)
        return and_(t.c.type_system == parts[0], t.c.type_code == parts[1], t.c.code == parts[2])
    parts = split_unescaped(value, "|", 1)
    if len(parts) == 1:
        return t.c.code == unescape(parts[0])
    system, code = unescape(parts[0]), unescape(parts[1])
    if system == "":
        return and_(t.c.code == code, t.c.system.is_(None))
    if code == "":
        return t.c.system == system
    return and_(t.c.code == code, t.c.system == system)


def _number_range(text: str, name: str) -> tuple[float, float, float]:
    """The value and the range its precision implies: 100 -> [99.5, 100.5], 1e2 likewise."""
    try:
        value = float(text)
    except ValueError:
        raise FhirError(400, "invalid", f"{name}: {text!r} is not a number", name) from None
    mantissa = text.lower().split("e")[0]
    exponent = int(text.lower().split("e")[1]) if "e" in text.lower() else 0
    decimals = len(mantissa.split(".")[1]) if "." in mantissa else 0
    half = 0.5 * 10 ** (exponent - decimals)
    return value, value - half, value + half


def _compare(col: Any, lo: Any, hi: Any, value: Any, prefix: str, name: str) -> Col[bool]:
    """Prefix semantics for a point value in `col` against a search range [lo, hi)."""
    if prefix == "eq":
        return and_(col >= lo, col < hi)
    if prefix == "ne":
        return or_(col < lo, col >= hi)
    if prefix in ("gt", "sa"):
        return col > value
    if prefix in ("lt", "eb"):
        return col < value
    if prefix == "ge":
        return col >= value
    if prefix == "le":
        return col <= value
    if prefix == "ap":
        margin = abs(value) * 0.1
        return and_(col >= value - margin, col <= value + margin)
    raise FhirError(400, "invalid", f"{name}: unknown prefix {prefix}", name)


def _number(clause: Clause, value: str) -> Col[bool]:
    prefix, text = split_prefix(value)
    v, lo, hi = _number_range(text, clause.name)
    if clause.op == "co":  # _filter: the stored value's precision includes this one
        return and_(idx_number.c.low <= v, idx_number.c.high > v)
    return _compare(idx_number.c.value, lo, hi, v, prefix, clause.name)


def _quantity(clause: Clause, value: str, cols: Any = None) -> Col[bool]:
    q = cols or idx_quantity.c
    parts = [unescape(p) for p in split_unescaped(value, "|")]
    if len(parts) not in (1, 3):
        raise FhirError(400, "invalid", f"{clause.name}={value}: expected [prefix]number|system|code", clause.name)
    prefix, text = split_prefix(parts[0])
    v, lo, hi = _number_range(text, clause.name)
    test = _compare(q.value, lo, hi, v, prefix, clause.name)
    if len(parts) == 3:
        system, code = parts[1], parts[2]
        if system:
            test = and_(test, q.system == system, q.code == code)
        elif code:
            test = and_(test, or_(q.code == code, q.unit == code))
    return test


def date_range(value: str, name: str) -> tuple[str, int, int]:
    prefix, text = split_prefix(value)
    start, end = parse_range(text, name)
    return prefix, to_ms(start), to_ms(end)


def _date_test(low: Any, high: Any, prefix: str, ps: int, pe: int) -> Col[bool]:
    """R4 search.html#prefix on ranges: the target [low, high] against the search [ps, pe]."""
    contained = and_(low >= ps, high <= pe)
    if prefix == "eq":
        return contained
    if prefix == "ne":
        return not_(contained)
    if prefix == "gt":
        return high > pe
    if prefix == "lt":
        return low < ps
    if prefix == "ge":
        return or_(high > pe, contained)
    if prefix == "le":
        return or_(low < ps, contained)
    if prefix == "sa":
        return low > pe
    if prefix == "eb":
        return high < ps
    # ap: overlaps the search range widened by 10% of its distance from now (at least a day)
    now = to_ms(datetime.now(UTC).replace(tzinfo=None))
    margin = max(int(abs(now - ps) * 0.1), 86_400_000)
    return and_(low <= pe + margin, high >= ps - margin)


def _date(clause: Clause, value: str) -> Col[bool]:
    prefix, ps, pe = date_range(value, clause.name)
    low, high = idx_date.c.low, idx_date.c.high
    if clause.op == "po":  # _filter: the stored period overlaps the value's
        return and_(low <= pe, high >= ps)
    if clause.op == "co":  # _filter: the stored period contains the value's
        return and_(low <= ps, high >= pe)
    return _date_test(low, high, prefix, ps, pe)


def _uri(clause: Clause, value: str) -> Col[bool]:
    v = unescape(value)
    if clause.modifier == "below":
        return idx_uri.c.value.like(f"{_like_escape(v)}%", escape="\\")
    if clause.modifier == "above":
        return literal(v).like(func.replace(func.replace(idx_uri.c.value, "%", "\\%"), "_", "\\_") + "%", escape="\\")
    return idx_uri.c.value == v


class ReferenceValues:
    """How a reference search value is matched: local type/id, a URL, or an identifier."""

    def __init__(self, base_url: str) -> None:
        self.base = base_url.rstrip("/") + "/"

    def local(self, r: Any) -> Col[bool]:
        """Index rows of relative references, or of absolute ones on this server's base.
        (An absolute reference elsewhere also carries a parsed type/id, but it is not ours.)"""
        return or_(r.url.is_(None), r.url.like(f"{_like_escape(self.base)}%", escape="\\"))

    def test(self, clause: Clause, value: str, types: list[str]) -> Col[bool]:
        r = idx_reference.c
        v = unescape(value)
        if clause.modifier == "identifier":
            parts = [unescape(p) for p in split_unescaped(value, "|", 1)]
            if len(parts) == 1:
                return r.id_value == parts[0]
            if parts[0] == "":
                return and_(r.id_value == parts[1], r.id_system.is_(None))
            if parts[1] == "":  # an identifier of this system: one with a value (the partial index's rows)
                return and_(r.id_system == parts[0], r.id_value.is_not(None))
            return and_(r.id_system == parts[0], r.id_value == parts[1])
        type_mod = clause.modifier if clause.modifier and clause.modifier[0].isupper() else None
        if v.startswith(self.base):
            v = v[len(self.base) :]
        if "://" in v or v.startswith("urn:"):
            url, _, version = v.partition("|")
            test = r.url == url
            return and_(test, r.target_version == version) if version else test
        segments = v.split("/")
        if len(segments) == 1:
            wanted = [type_mod] if type_mod else [t for t in types if t]
            test = and_(r.target_id == v, self.local(r))
            return and_(test, r.target_type.in_(wanted)) if wanted else test
        if len(segments) in (2, 4) and (len(segments) == 2 or segments[2] == "_history"):
            rt, rid = segments[0], segments[1]
            if type_mod and type_mod != rt:
                return false()
            test = and_(r.target_type == rt, r.target_id == rid, self.local(r))
            return and_(test, r.target_version == segments[3]) if len(segments) == 4 else test
        raise FhirError(
            400, "invalid", f"{clause.name}={value} is not a reference this server understands", clause.name
        )


# -- the planner ----------------------------------------------------------------------------------

_BROAD = frozenset({"missing", "not", "not-in", "text", "contains", "above", "below", "in"})
_RANKS = {"token": 2, "uri": 2, "composite": 2, "string": 3, "number": 3, "quantity": 3, "date": 4}


def rank(c: Clause) -> int:
    """How few resources a clause usually matches: 0 (an id, an identifier: a handful) to 5."""
    if c.modifier in _BROAD or c.filter is not None or c.op == "ne":
        return 5
    if c.code == "_id" or (c.type == "token" and c.code == "identifier"):
        return 0
    if c.type == "reference":
        return 1  # one target (a patient, an encounter), or the targets a chain's identifier finds
    if c.code == "_lastUpdated":
        return 4
    if c.type == "string" and c.modifier == "exact":
        return 2
    return _RANKS.get(c.type, 3)  # _has ("special") included


def narrowest_first(clauses: list[Clause]) -> list[Clause]:
    """The clauses in the order of how few resources each usually matches, the client's order kept
    among equals. SQLite has no statistics and drives a search from its first `pk IN (...)`: for
    `Observation?code=8867-4&patient=p5` at 600 patients that read the 10,246 heart-rate rows to find
    a patient's 11 (61 ms; 22 ms from the patient's rows). PostgreSQL plans by cost either way."""
    return sorted(clauses, key=rank)


# The token rows that drive a page (token_driver): their own alias, so a statement can also test
# the same parameter again through `pk IN (...)`.
DRIVER = idx_token.alias("driver")


def token_driver(clauses: list[Clause], types: list[str], registry: Any) -> Clause | None:
    """The clause whose token index rows can drive a first page in write order, if any: the
    narrowest clause, one `system|code` value of a token parameter of one type. The index on
    (type, param, code, system, resource_pk) gives those rows in resource_pk order, so a page joined
    from them stops after `_count` matches. As `pk IN (...)` SQLite built the list of every match
    first (16k rows for a common code at 1,200 patients) and the first page grew with it; PostgreSQL
    hashed it and walked the pk index against the hash (72 ms p50 at 1,079 patients; 6.4 ms driven)."""
    if not clauses or len(types) != 1:
        return None
    first = narrowest_first(clauses)[0]
    if first.type != "token" or first.modifier or first.op or first.chain or first.has or first.code == "_id":
        return None
    if len(first.values) != 1:  # code=a,b: two ranges of the index, no longer in pk order
        return None
    parts = split_unescaped(first.values[0], "|", 1)
    if len(parts) != 2 or not parts[0] or not parts[1]:  # the system pins the order too
        return None
    codes, target_type = row_scope(types[0], first.code, registry)
    return first if len(codes) == 1 and target_type is None else None


_TABLES = {
    "string": idx_string,
    "token": idx_token,
    "reference": idx_reference,
    "date": idx_date,
    "number": idx_number,
    "quantity": idx_quantity,
    "uri": idx_uri,
    "composite": idx_composite,
    "special": idx_composite,  # Location `near`: latitude and longitude (hub.search.extract _position)
}
KM_PER_DEGREE_LATITUDE = 110.574
KM_PER_DEGREE_LONGITUDE_AT_EQUATOR = 111.320
DISTANCE_UNITS = {"km": 1.0, "m": 0.001, "mi": 1.609344, "[mi_i]": 1.609344, "[mi_us]": 1.609347}
DEFAULT_NEAR_KM = 5.0  # R4 leaves "near" without a distance to the server


def _near(clause: Clause, value: str) -> Col[bool]:
    """`near=latitude|longitude|distance|units`: a Location whose position lies within the distance
    (km unless said; 5 km when not given). The distance is that of a flat map around the search
    point (longitude degrees shrunk by cos(latitude)): at Dutch latitudes within 0.6 % of the great
    circle up to 100 km and 1 % up to 200 km, and nothing but arithmetic in SQL."""
    parts = [unescape(p) for p in split_unescaped(value, "|")]
    try:
        lat, long = float(parts[0]), float(parts[1])
        distance = float(parts[2]) if len(parts) > 2 and parts[2] else DEFAULT_NEAR_KM
    except (ValueError, IndexError):
        raise FhirError(
            400, "invalid", f"{clause.name}={value}: expected latitude|longitude[|distance[|units]]", clause.name
        ) from None
    units = parts[3] if len(parts) > 3 and parts[3] else "km"
    if units not in DISTANCE_UNITS or len(parts) > 4 or not (-90 <= lat <= 90 and -180 <= long <= 180) or distance < 0:
        raise FhirError(
            400,
            "invalid",
            f"{clause.name}={value}: latitude, longitude, distance or units ({', '.join(DISTANCE_UNITS)}) out of range",
            clause.name,
        )
    km = distance * DISTANCE_UNITS[units]
    c = idx_composite.c
    dy = (c.c2_low - lat) * KM_PER_DEGREE_LATITUDE
    dx = (c.c3_low - long) * (KM_PER_DEGREE_LONGITUDE_AT_EQUATOR * math.cos(math.radians(lat)))
    box = km / KM_PER_DEGREE_LATITUDE  # a latitude band first: the square below is then tested on few rows
    return and_(c.c2_low.between(lat - box, lat + box), dx * dx + dy * dy <= km * km)


class Planner:
    def __init__(
        self,
        registry: Any,
        base_url: str,
        constraints: Sequence[Any] = (),
        terminology: Any = None,
        *,
        dialect: str,  # the database the SQL is for: `sqlite` or `postgresql`
        probe: Callable[[Select[Any]], Sequence[Any]] | None = None,
        probed: dict[Any, dict[str, bool]] | None = None,
    ) -> None:
        self.registry = registry
        self.dialect = dialect
        # Runs a one-row statement (the engine's connection): a chain looks into contained resources
        # only where a container of the types holds one its parameter names, so searches over data
        # without contained resources keep their plans. None: never (plans built without a database).
        # `probed` keeps the answers (the planners of one search share it).
        self.probe = probe
        self._probed: dict[Any, dict[str, bool]] = {} if probed is None else probed
        self.refs = ReferenceValues(base_url)
        self.terminology = terminology  # hub.terminology TerminologySession, for :in / :not-in / :above / :below
        # Access constraints (scopes, patient compartment, consent): callables (types, row) -> SQL
        # condition, applied to the rows a chain or _has looks into as well, so they reveal nothing hidden.
        self.constraints = tuple(constraints)

    def condition(self, clause: Clause, types: list[str], r: Any = resource, per_row: bool = False) -> Col[bool]:
        """A boolean SQL expression over the resource row `r` that holds when the clause matches.

        `per_row`: test the row's own index rows (EXISTS through the index by resource) rather than
        `pk IN (every match)`, for a clause that does not drive the search on SQLite: SQLite builds
        an IN list in full, so `Observation?patient=p5&code=x` read every row of the code to find
        a patient's few (hub.search.engine _filtered)."""
        if clause.code in ("_id", "_lastUpdated") and clause.modifier == "missing":
            return true() if clause.values == ["false"] else false()  # every resource has both
        if clause.code == "_id":
            wanted = [i for i in (_id_value(v) for v in clause.values) if i is not None]
            test = r.c.res_id.in_(wanted) if wanted else false()
            return not_(test) if clause.modifier == "not" else test
        if clause.code == "_lastUpdated":
            return or_(*(self._last_updated(clause, v, r) for v in clause.values))
        if clause.filter is not None:
            return self._filter(clause.filter, types, r, per_row)
        if clause.code == "_content":
            return self._content(clause, types, r, per_row)
        if clause.has is not None:
            return self._has(clause, types, r, per_row)
        if clause.chain is not None:
            return self._chain(clause, types, r, per_row)
        table = _TABLES[clause.type]
        scope = self.param_scope(table, types, clause.code)
        if clause.modifier == "missing":
            present = _on_the_row(table, r, scope) if per_row else r.c.pk.in_(select(table.c.resource_pk).where(scope))
            return not_(present) if clause.values == ["true"] else present
        terminology = clause.modifier in ("in", "not-in", "above", "below") and clause.type == "token"
        test = self._value_tests(clause, types)
        if per_row and not terminology:  # a terminology test may hold subqueries of its own
            found = _on_the_row(table, r, and_(scope, test))
        else:
            found = r.c.pk.in_(select(table.c.resource_pk).where(scope, test))
        return not_(found) if clause.modifier in ("not", "not-in") else found

    def _value_tests(self, clause: Clause, types: list[str]) -> Col[bool]:
        """The clause's values (OR'd) as a test on its index table's columns."""
        if clause.modifier in ("in", "not-in", "above", "below") and clause.type == "token":
            return or_(*(self._terminology_test(clause, v, types) for v in clause.values))
        return or_(*(self.value_test(clause, v, types) for v in clause.values))

    def _row_test(self, clause: Clause, types: list[str]) -> tuple[Any, Col[bool]] | None:
        """(index table, test on its rows) for a clause that is a plain list of rows passing a test
        (`pk IN (SELECT resource_pk FROM table WHERE test)`); None for the others."""
        if clause.code in ("_id", "_lastUpdated", "_content") or clause.filter is not None or clause.has is not None:
            return None
        if clause.chain is not None or clause.modifier in ("not", "not-in", "missing"):
            return None
        table = _TABLES[clause.type]
        return table, and_(self.param_scope(table, types, clause.code), self._value_tests(clause, types))

    def _matching(self, clause: Clause, types: list[str]) -> Select[Any] | None:
        """The list of resource_pks a clause matches, where its condition is `pk IN (that list)` (rows
        of an index table, a chain, an id); None for the others (a negation, `:missing`,
        `_lastUpdated`, `_has`, `_content`, a _filter node)."""
        rows = self._row_test(clause, types)
        if rows is not None:
            return select(rows[0].c.resource_pk).where(rows[1])
        if clause.modifier in ("not", "not-in", "missing") or clause.filter is not None:
            return None
        if clause.chain is not None:
            return None if self._contained(clause, types) else self._chain_rows(clause, types)
        if clause.code == "_id":
            row = resource.alias()
            wanted = [i for i in (_id_value(v) for v in clause.values) if i is not None]
            return select(row.c.pk).where(_one_of(row.c.res_type, types), row.c.res_id.in_(wanted), row.c.is_current)
        return None

    def driven(self, clause: Clause, types: list[str], postgres: bool = False) -> Select[Any]:
        """base_select joined to the token rows of `clause` (token_driver) and grouped by their
        resource_pk, which orders the page: a resource with the code twice (two displays) is one
        match, also to a window count. PostgreSQL also groups by resource.pk, the column selected
        (the two are equal, so its index still gives the order); SQLite then sorts every match."""
        d = DRIVER
        keys = (d.c.resource_pk, resource.c.pk) if postgres else (d.c.resource_pk,)
        return (
            base_select(types)
            .join_from(resource, d, d.c.resource_pk == resource.c.pk)
            .where(self.param_scope(d, types, clause.code), _token_cols(clause, clause.values[0], d.c.system, d.c.code))
            .group_by(*keys)
        )

    def value_test(self, clause: Clause, value: str, types: list[str]) -> Col[bool]:
        t = clause.type
        if t == "string":
            return _string(clause, value)
        if t == "token":
            return _token(clause, value)
        if t == "reference":
            return self.refs.test(clause, value, list(clause.param.targets or []) if clause.param else [])
        if t == "date":
            return _date(clause, value)
        if t == "number":
            return _number(clause, value)
        if t == "quantity":
            return _quantity(clause, value)
        if t == "uri":
            return _uri(clause, value)
        if t == "composite":
            return self._composite(clause, value)
        if t == "special":
            return _near(clause, value)
        raise FhirError(400, "not-supported", f"{clause.name}: {t} parameters are not supported", clause.name)

    def _terminology_test(self, clause: Clause, value: str, types: list[str]) -> Col[bool]:
        """Token rows whose system|code is in a stored ValueSet (:in, :not-in negates the semi-join),
        or subsumed by / subsuming a code of a stored CodeSystem (:below / :above, the code included)."""
        if self.terminology is None:
            raise FhirError(400, "not-supported", f"{clause.name}: no terminology here", clause.name)
        t = idx_token.c
        if clause.modifier in ("in", "not-in"):
            expansion = self.terminology.expansion(unescape(value), clause.name)
            tests = [and_(t.system == s, t.code.in_(sorted(codes))) for s, codes in expansion.codes.items() if codes]
            for s, excluded in expansion.open.items():
                tests.append(and_(t.system == s, t.code.not_in(sorted(excluded))) if excluded else t.system == s)
            # A `code` element without an implicit system (no required binding to one code system; see
            # extract.implicit_system) is indexed without one: such a code counts when some system of
            # the expansion has it. (Not a Coding without a system: that one is in no value set.)
            listed = sorted({c for codes in expansion.codes.values() for c in codes})
            if listed and _yields_code(clause.param, types):
                tests.append(and_(t.system.is_(None), t.code.in_(listed)))
            return or_(*tests) if tests else false()
        parts = [unescape(p) for p in split_unescaped(value, "|", 1)]
        if len(parts) != 2 or not all(parts):
            raise FhirError(400, "invalid", f"{clause.name}={value}: :{clause.modifier} takes system|code", clause.name)
        system, code = parts
        cs = self.terminology.code_system(system)
        if cs is None:
            raise FhirError(
                400,
                "not-supported",
                f"{clause.name}: the hub holds no CodeSystem {system} to know its hierarchy",
                clause.name,
            )
        if code not in cs:
            raise FhirError(400, "invalid", f"{clause.name}: {code} is not a code of CodeSystem {system}", clause.name)
        codes = cs.descendants(code) if clause.modifier == "below" else cs.ancestors(code)
        return and_(t.system == system, t.code.in_(sorted(codes)))

    def _last_updated(self, clause: Clause, value: str, r: Any) -> Col[bool]:
        prefix, text = split_prefix(value)
        start, end = parse_range(text, clause.name)
        col = r.c.last_updated
        # A stored instant is a point: [t, t].
        if clause.op == "po":  # _filter: the point lies in the value's period
            return and_(col >= start, col <= end)
        if clause.op == "co":  # _filter: the point contains the value's period only if it is one
            return and_(col <= start, col >= end)
        return _date_test(col, col, prefix, start, end)  # type: ignore[arg-type]

    def _composite(self, clause: Clause, value: str) -> Col[bool]:
        parts = split_unescaped(value, "$")
        components = clause.param.components
        if len(parts) != len(components):
            raise FhirError(
                400, "invalid", f"{clause.name}={value}: expected {len(components)} components joined by $", clause.name
            )
        c = idx_composite.c
        tests: list[ColumnElement[bool]] = []
        for n, (part, comp) in enumerate(zip(parts, components, strict=True), 1):
            ctype = self.registry.component_type(comp)
            sub = Clause(clause.name, clause.code, ctype, None, [part], None)
            if n == 1:
                if ctype == "reference":
                    tests.append(c.c1_code == unescape(part))
                else:
                    tests.append(_token_cols(sub, part, c.c1_system, c.c1_code))
            elif n == 2:
                tests.append(self._component2(sub, part, ctype))
            else:
                prefix, text = split_prefix(part)
                v, lo, hi = _number_range(text, clause.name)
                tests.append(_compare(c.c3_low, lo, hi, v, prefix, clause.name))
        return and_(*tests)

    def _component2(self, sub: Clause, part: str, ctype: str) -> Col[bool]:
        c = idx_composite.c
        if ctype == "token":
            return _token_cols(sub, part, c.c2_system, c.c2_code)
        if ctype in ("quantity", "number"):
            pieces = [unescape(p) for p in split_unescaped(part, "|")]
            prefix, text = split_prefix(pieces[0])
            v, lo, hi = _number_range(text, sub.name)
            test = _compare(c.c2_low, lo, hi, v, prefix, sub.name)
            if len(pieces) == 3 and pieces[2]:
                test = and_(test, c.c2_code == pieces[2])
                if pieces[1]:
                    test = and_(test, c.c2_system == pieces[1])
            return test
        if ctype == "date":
            prefix, ps, pe = date_range(part, sub.name)
            return _date_test(c.c2_dlow, c.c2_dhigh, prefix, ps, pe)
        if ctype == "string":
            return c.c2_text.like(f"{_like_escape(normalise(unescape(part)))}%", escape="\\")
        raise FhirError(400, "not-supported", f"{sub.name}: composite component of type {ctype}", sub.name)

    def _chain(self, clause: Clause, types: list[str], r: Any, per_row: bool = False) -> Col[bool]:
        """subject:Patient.name=x -> the reference points at a Patient that has name x.

        `per_row` (a chain after the clause that enumerates, on SQLite): the row's own references of
        the parameter are read, and each target tested on its own index rows, rather than listing
        every resource that refers to any Patient named x (half of all Observations for
        `patient.gender=male`)."""
        assert clause.chain is not None
        contained = self._contained(clause, types)
        if per_row:
            inside = [r.c.pk.in_(rows) for rows in contained]  # containers only: short lists
            own = by_resource(idx_reference)
            tests = []
            for t in clause.chain_types:
                target = resource.alias()
                found = select(literal(1)).where(
                    target.c.res_id == own.c.target_id, *self._visible_matches(t, clause.chain, target, True)
                )
                tests.append(and_(own.c.target_type == t, exists(found)))
            referred = exists(
                select(literal(1))
                .select_from(own)
                .where(
                    own.c.resource_pk == r.c.pk,
                    self.param_scope(own, types, clause.code),
                    or_(*tests),
                    self.refs.local(own.c),
                )
            )
            return or_(referred, *inside) if inside else referred
        rows = self._chain_rows(clause, types)
        if contained:
            return r.c.pk.in_(union_all(rows, *contained))
        return r.c.pk.in_(rows)

    def _chain_rows(self, clause: Clause, types: list[str], scope: Col[bool] | None = None) -> Select[Any]:
        """The resource_pks whose references of the chain's parameter (or the rows of `scope`) point
        at a matching target."""
        assert clause.chain is not None
        ref = idx_reference
        target = resource.alias()
        options = []
        for t in clause.chain_types:
            inner = select(target.c.res_id).where(*self._visible_matches(t, clause.chain, target, False))
            options.append(and_(ref.c.target_type == t, ref.c.target_id.in_(inner)))
        return select(ref.c.resource_pk).where(
            self.param_scope(ref, types, clause.code) if scope is None else scope,
            or_(*options),
            self.refs.local(ref.c),  # another server's Patient/p1 is not our Patient/p1
        )

    def _contained(self, clause: Clause, types: list[str]) -> list[Select[Any]]:
        """The containers (resource_pks) whose contained resource, named by the chain's parameter,
        meets the chain's criterion, one list per contained type the chain reaches: read from the
        rows a container keeps for it (hub.search.extract._add_contained). Only where some container
        of the types holds such a resource (self.probe). A negation or `:missing=true` holds for a
        container whose contained resources of the type have none of the rows: with two contained
        Practitioners as performers, one named x, `performer.name:not=x` misses the container (the
        rows do not say which contained resource they came from). `_has`, `_lastUpdated` and
        `_content` find none (nothing refers to a contained resource from outside; it has no meta)."""
        inner = clause.chain
        assert inner is not None
        if self.probe is None:
            return []
        held = {
            t: scope
            for t in clause.chain_types
            if (scope := contained_scope(self.registry, idx_token, types, clause.code, t, "_id")) is not None
        }
        key = (tuple(types), clause.code, tuple(held))
        if key not in self._probed:  # one statement: does a container of the types hold a `t`, for each t
            tests: list[Any] = [exists().where(scope) for scope in held.values()]
            found = self.probe(select(*tests)) if held else ()
            self._probed[key] = {t: bool(f) for t, f in zip(held, found, strict=True)}
        out = []
        for t, held_scope in held.items():
            if not self._probed[key][t]:
                continue
            rows = self._contained_rows(clause, types, t, held_scope)
            if rows is None:
                continue
            if inner.modifier in ("not", "not-in") or (inner.modifier == "missing" and inner.values == ["true"]):
                rows = select(idx_token.c.resource_pk).where(held_scope, idx_token.c.resource_pk.not_in(rows))
            out.append(rows)
        return out

    def _contained_rows(self, clause: Clause, types: list[str], t: str, held: Col[bool]) -> Select[Any] | None:
        """The containers whose contained `t` has the rows the chain's criterion asks for (for a
        negation, the rows it must not have; for `:missing`, any row of the parameter); `held`: the
        `_id` rows of the contained `t`s. None where a contained resource cannot meet it."""
        inner = clause.chain
        assert inner is not None
        if inner.code == "_id":
            wanted = [i for i in (_id_value(v) for v in inner.values) if i is not None]
            test = held if inner.modifier == "missing" else and_(held, idx_token.c.code.in_(wanted))
            return select(idx_token.c.resource_pk).where(test)
        if inner.chain is not None:  # a reference of the contained resource, chained on
            scope = contained_scope(self.registry, idx_reference, types, clause.code, t, inner.code)
            return self._chain_rows(inner, [t], scope) if scope is not None else None
        if inner.code in ("_lastUpdated", "_content") or inner.filter is not None or inner.has is not None:
            return None
        table = _TABLES[inner.type]
        scope = contained_scope(self.registry, table, types, clause.code, t, inner.code)
        if scope is None:
            return None
        test = scope if inner.modifier == "missing" else and_(scope, self._value_tests(inner, [t]))
        return select(table.c.resource_pk).where(test)

    def _has(self, clause: Clause, types: list[str], r: Any, per_row: bool = False) -> Col[bool]:
        """_has:Observation:patient:code=x -> an Observation with code x refers to this resource.

        `per_row` (the engine asks only where a handful of candidates come first): the candidate's
        referring rows are looked up by its id and each source tested on its own rows, rather than
        listing every Observation with code x and the targets they refer to."""
        link = clause.has
        assert link is not None
        source = resource.alias()
        if per_row and len(types) == 1:
            ref = idx_reference.alias()
            passes = select(literal(1)).where(
                source.c.pk == ref.c.resource_pk, *self._visible_matches(link.source_type, link.inner, source, True)
            )
            return exists(
                select(literal(1)).where(
                    ref.c.target_id == r.c.res_id,
                    ref.c.target_type == types[0],
                    self.param_scope(ref, [link.source_type], link.reference_code),
                    self.refs.local(ref.c),
                    exists(passes),
                )
            )
        ref = idx_reference
        matching = select(source.c.pk).where(*self._visible_matches(link.source_type, link.inner, source, False))
        ids = select(ref.c.target_id).where(
            self.param_scope(ref, [link.source_type], link.reference_code),
            _one_of(ref.c.target_type, types),
            ref.c.resource_pk.in_(matching),
            self.refs.local(ref.c),
        )
        if len(types) > 1:  # system search: Group/g1 must not match a Patient/g1
            return tuple_(r.c.res_type, r.c.res_id).in_(ids.with_only_columns(ref.c.target_type, ref.c.target_id))
        return r.c.res_id.in_(ids)

    def _content(self, clause: Clause, types: list[str], r: Any, per_row: bool) -> Col[bool]:
        """`_content=words`: each word somewhere in the resource's texts: its string parameters'
        values, its narrative (`_text`), the display texts of its codes. The hub's reading of
        "search on the entire content": what its search parameters index, not the JSON's keys."""
        s, t = idx_string, idx_token

        def found(table: Any, test: Col[bool]) -> Col[bool]:
            if per_row:
                return _on_the_row(table, r, test)
            return r.c.pk.in_(select(table.c.resource_pk).where(_one_of(table.c.res_type, types), test))

        options = []
        for value in clause.values:
            words = normalise(unescape(value)).split()
            options.append(
                and_(
                    *(
                        or_(
                            found(s, or_(_words(s.c.value, w), and_(s.c.param == "_text", _words(s.c.exact, w)))),
                            found(t, _words(t.c.text, w)),
                        )
                        for w in words
                    )
                )
                if words
                else false()
            )
        return or_(*options)

    def _filter(self, node: FilterNode, types: list[str], r: Any, per_row: bool) -> Col[bool]:
        """A _filter expression's `and` / `or` / `not` over its clauses' conditions. The parts of an
        `or` that are lists of matches (`_matching`) become one list: as separate `pk IN` tests SQLite
        tested every resource of the type against each (`code eq a or code eq b` on SQLite, 120
        patients: 31 ms; 4 ms as one)."""
        parts: list[FilterNode | Clause] = list(node.parts)
        conds: list[Col[bool]] = []
        if node.op == "or" and not per_row:
            # Parts on one index table share one list, as `code=a,b` does. Lists of several tables are
            # a UNION on SQLite; PostgreSQL tests each with a hash, as its generic plan for a UNION
            # rescanned it for every candidate (two codes' lists: p50 145 ms, 5 ms as one list).
            by_table: dict[Any, list[Col[bool]]] = {}
            lists: list[Select[Any]] = []
            rest: list[FilterNode | Clause] = []
            for p in parts:
                rows = self._row_test(p, types) if isinstance(p, Clause) else None
                listed = self._matching(p, types) if isinstance(p, Clause) and rows is None else None
                if rows is not None:
                    by_table.setdefault(rows[0], []).append(rows[1])
                elif listed is not None:
                    lists.append(listed)
                else:
                    rest.append(p)
            lists += [select(t.c.resource_pk).where(or_(*tests)) for t, tests in by_table.items()]
            if len(lists) == 1 and len(parts) - len(rest) > 1:  # parts on one table: one list
                conds.append(r.c.pk.in_(lists[0]))
                parts = rest
            elif len(lists) > 1 and self.dialect == "sqlite":  # lists of several tables: a UNION
                conds.append(r.c.pk.in_(union_all(*lists)))
                parts = rest
            elif lists and len(parts) - len(rest) > len(lists):  # PostgreSQL: one list per table
                conds += [r.c.pk.in_(sel) for sel in lists]
                parts = rest
        conds += [
            self._filter(p, types, r, per_row) if isinstance(p, FilterNode) else self.condition(p, types, r, per_row)
            for p in parts
        ]
        if node.op == "not":
            return not_(conds[0])
        return and_(*conds) if node.op == "and" else or_(*conds)

    def _visible_matches(self, t: str, inner: Clause, row: Any, per_row: bool) -> list[Col[bool]]:
        """The resource row `row` (an alias) that a chain's target or a _has's referring resource must
        be: current, of type `t`, meeting the inner criterion and the access constraints, so neither
        reveals what is hidden."""
        return [
            row.c.res_type == t,
            row.c.is_current,
            not_(row.c.deleted),
            self.condition(inner, [t], row, per_row=per_row),
            *(c([t], row) for c in self.constraints),
        ]

    # -- sorting --------------------------------------------------------------------------------

    def sort_key(self, code: str, desc: bool, types: list[str], r: Any = resource) -> Any:
        if code == "_id":
            return r.c.res_id
        if code == "_lastUpdated":
            return r.c.last_updated
        param = self.registry.get(types[0], code)
        table = _TABLES[param.type]
        # R4 search.html#sort: a resource with several values sorts by its lowest ascending and by its
        # highest descending (for a date range: its start ascending, its end descending).
        pick = func.max if desc else func.min
        if param.type == "date":
            col = pick(table.c.high if desc else table.c.low)
        elif param.type == "token":
            col = pick(table.c.code)
        elif param.type == "reference":
            col = pick(table.c.target_id)
        elif param.type == "composite":
            col = pick(table.c.c1_code)
        else:
            col = pick(table.c.value)
        return select(col).where(table.c.resource_pk == r.c.pk, self.param_scope(table, types, code)).scalar_subquery()

    def param_scope(self, table: Any, types: list[str], code: str) -> Col[bool]:
        return param_scope(self.registry, table, types, code)


def param_scope(registry: Any, table: Any, types: list[str], code: str) -> Col[bool]:
    """The index rows of parameter `code` on these types: its own, or for a derived parameter
    (Observation combo-code, Observation patient) its sources' (hub.search.extract.row_scope)."""
    groups: dict[tuple[tuple[str, ...], str | None], list[str]] = {}
    for t in types:
        groups.setdefault(row_scope(t, code, registry), []).append(t)
    terms = []
    for (codes, target_type), ts in groups.items():
        term = [
            _one_of(table.c.res_type, ts),
            _one_of(table.c.param, codes),
        ]
        if target_type is not None:
            term.append(table.c.target_type == target_type)
        terms.append(and_(*term))
    return terms[0] if len(terms) == 1 else or_(*terms)


def contained_scope(registry: Any, table: Any, types: list[str], code: str, t: str, inner: str) -> Col[bool] | None:
    """The rows the containers of `types` keep for contained resources of type `t` that their
    reference parameter `code` names, for the contained resource's parameter `inner`
    (hub.search.extract.contained_code). A derived reference parameter (Observation `patient`) reads
    its source's rows (`subject:Patient.*`) when `t` is its type. None: `code` cannot name a `t`."""
    terms = []
    codes, target_type = row_scope(t, inner, registry)
    for rt in types:
        source, kind = derived_references(rt, registry).get(code, (code, None))
        if kind is not None and kind != t:
            continue
        term = [table.c.res_type == rt, _one_of(table.c.param, [contained_code(source, t, c) for c in codes])]
        if target_type is not None:
            term.append(table.c.target_type == target_type)
        terms.append(and_(*term))
    if not terms:
        return None
    return terms[0] if len(terms) == 1 else or_(*terms)


def _one_of(col: Any, values: Sequence[str]) -> Col[bool]:
    """`col = value` for one value (an equality the indexes serve best), `col IN (...)` for several."""
    return col.in_(values) if len(values) > 1 else col == values[0]


def _on_the_row(table: Any, r: Any, test: Col[bool]) -> Col[bool]:
    """EXISTS an index row of `table` for the resource row `r` that passes `test` (written on the
    table's own columns), read through the table's index by resource (hub.store.hints)."""
    own = by_resource(table)
    on_own = ClauseAdapter(own).traverse(test)
    return exists(select(literal(1)).select_from(own).where(own.c.resource_pk == r.c.pk, on_own))


def _yields_code(param: Any, types: list[str]) -> bool:
    """Whether the parameter's expression gives plain `code` values on (one of) these types."""
    if param is None:
        return False
    for t in types:
        ev = param.extractor(t if t in param.base else param.base[0])
        if ev is not None and "code" in ev.types:
            return True
    return False


def _id_value(value: str) -> str | None:
    """_id is a token without a system: `m1` and `|m1` name m1; `system|m1` names nothing."""
    parts = split_unescaped(value, "|", 1)
    if len(parts) == 1:
        return unescape(parts[0])
    return unescape(parts[1]) if parts[0] == "" and parts[1] else None


def base_select(types: list[str], r: Any = resource) -> Select[Any]:
    type_test = _one_of(r.c.res_type, types)
    return select(r.c.pk).where(type_test, r.c.is_current, not_(r.c.deleted))


def _token_cols(clause: Clause, value: str, system_col: Any, code_col: Any) -> Col[bool]:
    parts = split_unescaped(value, "|", 1)
    if len(parts) == 1:
        return code_col == unescape(parts[0])
    system, code = unescape(parts[0]), unescape(parts[1])
    if system == "":
        return and_(code_col == code, system_col.is_(None))
    if code == "":
        return system_col == system
    return and_(code_col == code, system_col == system)
