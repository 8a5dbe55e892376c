"""Search-index rows for one resource, per index table (http://hl7.org/fhir/R4/search.html).

`extract(resource)` evaluates every indexed search parameter of the resource's type and converts the
typed values into rows for the idx_* tables (hub/store/tables.py); the caller adds `resource_pk`.
Everything is prepared once per resource type (a plan of compiled expressions and converters), so a
call does no parsing. Conventions the search side must share:

- string: `value` is `normalize_string()`d (accents removed, case folded, whitespace collapsed; at most
  MAX_STRING chars so it fits a btree index), `exact` is the original text.
- token: codes keep their case. Coding.display / CodeableConcept.text / Identifier.type.text go to
  `text`, normalised (a coding without display takes the CodeableConcept.text); a text that no
  coding row carries gets a row of its own (system and code NULL).
  ContactPoint: system = ContactPoint.system (`phone`, `email`, ...), code = its value. Booleans are
  "true" / "false".
- reference: relative `Type/id[/_history/v]` -> target_type/id/version with url NULL; an absolute URL
  is kept in `url` and, when it ends in `/Type/id[/_history/v]`, ALSO parsed into target_* (the
  search side decides whether its base is local); `urn:` and other references only in `url`;
  canonical `url|version` -> url + target_version; a contained `#x` reference -> url `#x` and the
  contained resource's type, no target_id (so `:missing` sees it; see _add_contained);
  Reference.identifier -> id_system/id_value. A parameter's `target` types are respected.
- date: [low, high] in ms since the epoch UTC, both inclusive, covering the stated precision
  ("2020" is the whole year, "...T10:00:00+01:00" that second: 09:00:00.000Z-09:00:00.999Z, ".5"
  a tenth of a second). Dates without a time zone are taken as UTC. Open Period ends are
  MIN_MS / MAX_MS. Timing covers its outer limits (events and repeat.boundsPeriod).
- number / quantity: value and the range its stated precision implies (100 -> [99.5, 100.5],
  1.50 -> [1.495, 1.505] when the decimal kept its text, as from XML; a JSON float 1.5 -> [1.45, 1.55]).
  Open ends (Range without low/high, Quantity.comparator `<`/`>`) are NUM_MIN / NUM_MAX (infinities).
  Money indexes currency as code with system urn:iso:std:iso:4217.
- composite: one row per element instance and combination of its component values; c1 from the
  first component (token; a reference as "Type/id"), c2 by the second component's type, c3 numeric.
  A number or quantity component stores its value in both c2_low and c2_high (c3 likewise): search
  compares the value against the search value's precision range, as plain number/quantity search does.
"""

from __future__ import annotations

import html
import logging
import re
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from itertools import product
from typing import Any

from hub.fhirmodel.structure import structure
from hub.search.fhirpath import ANY, Evaluator, FhirPathError, Node, compile_expression, parse_reference
from hub.search.registry import Registry, SearchParam, default_registry, implicit_systems

log = logging.getLogger(__name__)

MIN_MS = -62135596800000  # 0001-01-01T00:00:00.000Z: the low end of a Period without start
MAX_MS = 253402300799999  # 9999-12-31T23:59:59.999Z: the high end of a Period without end
NUM_MIN = float("-inf")
NUM_MAX = float("inf")
MAX_STRING = 500  # normalised string values are cut here: PostgreSQL btree entries must stay < 2704 bytes
MAX_TOKEN = 1000  # codes, systems, uris and urls longer than this are cut for the same reason
ISO4217 = "urn:iso:std:iso:4217"

COLUMNS: dict[str, tuple[str, ...]] = {
    "string": ("value", "exact"),
    "token": ("system", "code", "text", "type_system", "type_code"),
    "reference": ("target_type", "target_id", "target_version", "url", "id_system", "id_value"),
    "date": ("low", "high"),
    "number": ("value", "low", "high"),
    "quantity": ("system", "code", "unit", "value", "low", "high"),
    "uri": ("value",),
    "composite": (
        "c1_system",
        "c1_code",
        "c2_system",
        "c2_code",
        "c2_low",
        "c2_high",
        "c2_text",
        "c2_dlow",
        "c2_dhigh",
        "c3_low",
        "c3_high",
    ),
}

Row = tuple[Any, ...]  # the table's COLUMNS in order
Converter = Callable[[Any, "PlanEntry"], Iterable[Row]]


# ------------------------------------------------------------------------------------------ strings


def normalize_string(text: str, limit: int | None = MAX_STRING) -> str:
    """The form string search compares: accents removed, case folded, whitespace collapsed."""
    if text.isascii():
        return " ".join(text.lower().split())[:limit]
    decomposed = unicodedata.normalize("NFKD", text)
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    return " ".join(stripped.casefold().split())[:limit]


def _str_rows(values: Iterable[Any]) -> list[Row]:
    return [(normalize_string(v), v) for v in values if isinstance(v, str) and v.strip()]


def _string_primitive(value: Any, entry: PlanEntry) -> list[Row]:
    return _str_rows((value,))


_TAG = re.compile(r"<[^>]*>")


def _narrative(value: Any, entry: PlanEntry) -> list[Row]:
    """`_text`: the narrative's words, tags and entities removed. `value` (the search index) holds
    its start; `exact`, not indexed, the whole, which _text searches for its words."""
    if not isinstance(value, str):
        return []
    text = normalize_string(html.unescape(_TAG.sub(" ", value)), limit=None)
    return [(text[:MAX_STRING], text)] if text else []


def _position(value: Any, entry: PlanEntry) -> list[Row]:
    """Location `near`: latitude as component 2, longitude as component 3 (idx_composite)."""
    if not isinstance(value, dict):
        return []
    try:
        lat, long = float(value["latitude"]), float(value["longitude"])
    except (KeyError, TypeError, ValueError):
        return []
    return [(None, None, None, None, lat, lat, None, None, None, long, long)]


def _parts(value: dict[str, Any], single: tuple[str, ...], lists: tuple[str, ...]) -> list[Any]:
    out = [value.get(k) for k in single]
    for k in lists:
        out.extend(value.get(k) or ())
    return out


def _human_name(value: Any, entry: PlanEntry) -> list[Row]:
    return _str_rows(_parts(value, ("family", "text"), ("given", "prefix", "suffix")))


def _address(value: Any, entry: PlanEntry) -> list[Row]:
    keys = ("city", "district", "state", "postalCode", "country", "text")
    return _str_rows(_parts(value, keys, ("line",)))


# ------------------------------------------------------------------------------------------ tokens


def _cut(s: Any) -> str | None:
    return s[:MAX_TOKEN] if isinstance(s, str) and s else None


def _norm_or_none(s: Any) -> str | None:
    return normalize_string(s) or None if isinstance(s, str) else None


def _token_primitive(value: Any, entry: PlanEntry) -> list[Row]:
    if value is True or value is False:
        return [(None, "true" if value else "false", None, None, None)]
    code = _cut(value if isinstance(value, str) else str(value))
    return [(None, code, None, None, None)] if code else []


def _token_code(value: Any, entry: PlanEntry) -> list[Row]:
    """A `code` value of an element whose required binding implies its system (Patient.gender)."""
    code = _cut(value) if isinstance(value, str) else None
    return [(entry.implicit_system, code, None, None, None)] if code else []


def _coding_row(coding: Any, fallback_text: str | None = None) -> Row | None:
    if type(coding) is not dict:
        return None
    code = _cut(coding.get("code"))
    text = _norm_or_none(coding.get("display")) or fallback_text
    if code is None and text is None:
        return None
    return (_cut(coding.get("system")), code, text, None, None)


def _coding(value: Any, entry: PlanEntry) -> list[Row]:
    row = _coding_row(value)
    return [row] if row else []


def _codeable_concept(value: Any, entry: PlanEntry) -> list[Row]:
    text = _norm_or_none(value.get("text"))
    rows = [r for c in value.get("coding") or () if (r := _coding_row(c, text)) is not None]
    if text and all(r[2] != text for r in rows):
        rows.append((None, None, text, None, None))
    return rows


def _identifier(value: Any, entry: PlanEntry) -> list[Row]:
    system, code = _cut(value.get("system")), _cut(value.get("value"))
    if code is None and system is None:
        return []
    id_type = value.get("type") or {}
    text = _norm_or_none(id_type.get("text"))
    types = [(c.get("system"), c.get("code")) for c in id_type.get("coding") or () if type(c) is dict]
    if not types:
        return [(system, code, text, None, None)]
    return [(system, code, text, _cut(ts), _cut(tc)) for ts, tc in types]


def _contact_point(value: Any, entry: PlanEntry) -> list[Row]:
    code = _cut(value.get("value"))
    return [(_cut(value.get("system")), code, None, None, None)] if code else []


# ------------------------------------------------------------------------------------------ references


def _split_canonical(url: str) -> tuple[str, str | None]:
    base, sep, version = url.partition("|")
    return base, (version or None) if sep else None


def _literal_reference(ref: str) -> Row:
    """Row columns for the text of a literal reference (see the module docstring)."""
    parsed = parse_reference(ref)
    absolute = "://" in ref or ref.startswith("urn:")
    url = _cut(ref) if absolute or parsed is None else None
    if parsed is None:
        return (None, None, None, url, None, None)
    return (parsed[0], parsed[1], parsed[2], url, None, None)


def _reference(value: Any, entry: PlanEntry) -> list[Row]:
    ref = value.get("reference")
    ident = value.get("identifier")
    id_system = id_value = None
    if type(ident) is dict:
        id_system, id_value = _cut(ident.get("system")), _cut(ident.get("value"))
    if isinstance(ref, str) and ref and not ref.startswith("#"):
        row = _literal_reference(ref)
        target_type = row[0] or value.get("type")
    elif id_value is not None:
        row = (value.get("type"), None, None, None, None, None)
        target_type = value.get("type")
    else:
        return []  # contained, or only a display
    if entry.targets and target_type and target_type not in entry.targets:
        return []
    return [(*row[:4], id_system, id_value)]


def _canonical_ref(value: Any, entry: PlanEntry) -> list[Row]:
    if not isinstance(value, str) or not value or value.startswith("#"):
        return []
    url, version = _split_canonical(value)
    return [(None, None, _cut(version), _cut(url), None, None)]


def _uri_ref(value: Any, entry: PlanEntry) -> list[Row]:
    return [(None, None, None, _cut(value), None, None)] if isinstance(value, str) and value else []


def _attachment_ref(value: Any, entry: PlanEntry) -> list[Row]:
    return _uri_ref(value.get("url"), entry)


def _resource_ref(value: Any, entry: PlanEntry) -> list[Row]:
    """A resource in place of a reference (Bundle.entry[0].resource for Bundle `composition`)."""
    rt, rid = value.get("resourceType"), value.get("id")
    if not isinstance(rt, str) or not isinstance(rid, str):
        return []
    if entry.targets and rt not in entry.targets:
        return []
    return [(rt, rid, None, None, None, None)]


# ------------------------------------------------------------------------------------------ dates

_DATE_RE = re.compile(
    r"^(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d+))?)?(Z|[+-]\d{2}:\d{2})?)?)?)?$"
)
_DAY_MS = 86_400_000
_MONTH_DAYS = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def _days_from_civil(y: int, m: int, d: int) -> int:
    """Days since 1970-01-01 for a proleptic Gregorian date (Howard Hinnant's algorithm)."""
    y -= m <= 2
    era = (y if y >= 0 else y - 399) // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def _month_days(y: int, m: int) -> int:
    if m == 2 and y % 4 == 0 and (y % 100 != 0 or y % 400 == 0):
        return 29
    return _MONTH_DAYS[m - 1]


@lru_cache(maxsize=65536)
def date_range(text: str) -> tuple[int, int] | None:
    """[low, high] ms UTC covered by a FHIR date / dateTime / instant at its precision; None if invalid."""
    m = _DATE_RE.match(text.strip())
    if m is None:
        return None
    year, month, day, hour, minute, second, frac, tz = m.groups()
    y = int(year)
    mo = int(month) if month else 1
    d = int(day) if day else 1
    if not (1 <= mo <= 12 and 1 <= d <= _month_days(y, mo)):
        return None
    low = _days_from_civil(y, mo, d) * _DAY_MS
    if hour is None:
        if month is None:
            end = _days_from_civil(y + 1, 1, 1) * _DAY_MS
        elif day is None:
            end = _days_from_civil(y + (mo == 12), mo % 12 + 1, 1) * _DAY_MS
        else:
            end = low + _DAY_MS
        return low, end - 1
    h, mi, s = int(hour), int(minute), min(int(second or 0), 59)  # a leap second counts as :59
    if h > 23 or mi > 59:
        return None
    low += ((h * 60 + mi) * 60 + s) * 1000
    if tz and tz != "Z":
        sign = 1 if tz[0] == "+" else -1
        low -= sign * (int(tz[1:3]) * 60 + int(tz[4:6])) * 60_000
    if second is None:
        width = 60_000
    elif frac is None:
        width = 1000
    else:
        digits = frac[:3]
        low += int(digits.ljust(3, "0"))
        width = 10 ** (3 - len(digits))
    return low, low + width - 1


def _date_primitive(value: Any, entry: PlanEntry) -> list[Row]:
    r = date_range(value) if isinstance(value, str) else None
    return [r] if r else []


def _bound(text: Any, index: int, default: int) -> int | None:
    if text is None:
        return default
    r = date_range(text) if isinstance(text, str) else None
    return r[index] if r else None


def _period_range(value: Any) -> Row | None:
    start, end = value.get("start"), value.get("end")
    if start is None and end is None:
        return None
    low, high = _bound(start, 0, MIN_MS), _bound(end, 1, MAX_MS)
    if low is None or high is None:
        return None
    return (low, high)


def _period(value: Any, entry: PlanEntry) -> list[Row]:
    r = _period_range(value)
    return [r] if r else []


def _timing(value: Any, entry: PlanEntry) -> list[Row]:
    ranges = [r for e in value.get("event") or () if isinstance(e, str) and (r := date_range(e))]
    bounds = (value.get("repeat") or {}).get("boundsPeriod")
    if type(bounds) is dict and (b := _period_range(bounds)):
        ranges.append(b)
    if not ranges:
        return []
    return [(min(r[0] for r in ranges), max(r[1] for r in ranges))]


# ------------------------------------------------------------------------------------------ numbers


@lru_cache(maxsize=65536)
def _decimal_range(text: str) -> tuple[float, float, float] | None:
    try:
        d = Decimal(text)
    except InvalidOperation:
        return None
    exponent = d.as_tuple().exponent
    if not isinstance(exponent, int):  # NaN / Infinity
        return None
    half = Decimal(5).scaleb(exponent - 1)
    return float(d), float(d - half), float(d + half)


def number_range(value: Any) -> tuple[float, float, float] | None:
    """(value, low, high): the number and the interval its stated precision implies."""
    if type(value) is bool or not isinstance(value, (int, float, Decimal)):
        return None
    return _decimal_range(repr(value) if type(value) is float else str(value))


def _number_primitive(value: Any, entry: PlanEntry) -> list[Row]:
    r = number_range(value)
    return [r] if r else []


def _range_bounds(value: Any) -> tuple[dict[str, Any], float, float, float] | None:
    """For a Range: (the quantity giving units, value, low, high); open ends are infinite."""
    low_q, high_q = value.get("low") or {}, value.get("high") or {}
    lo, hi = number_range(low_q.get("value")), number_range(high_q.get("value"))
    if lo is None and hi is None:
        return None
    unit_q = low_q if lo is not None else high_q
    v = lo[0] if lo is not None else hi[0]  # type: ignore[index]
    return unit_q, v, lo[1] if lo else NUM_MIN, hi[2] if hi else NUM_MAX


def _number_range_type(value: Any, entry: PlanEntry) -> list[Row]:
    b = _range_bounds(value)
    return [(b[1], b[2], b[3])] if b else []


def _quantity(value: Any, entry: PlanEntry) -> list[Row]:
    r = number_range(value.get("value"))
    if r is None:
        return []
    v, low, high = r
    comparator = value.get("comparator")
    if comparator in ("<", "<="):
        low = NUM_MIN
    elif comparator in (">", ">="):
        high = NUM_MAX
    return [(_cut(value.get("system")), _cut(value.get("code")), _cut(value.get("unit")), v, low, high)]


def _money(value: Any, entry: PlanEntry) -> list[Row]:
    r = number_range(value.get("value"))
    if r is None:
        return []
    currency = _cut(value.get("currency"))
    return [(ISO4217 if currency else None, currency, currency, *r)]


def _quantity_range(value: Any, entry: PlanEntry) -> list[Row]:
    b = _range_bounds(value)
    if b is None:
        return []
    q = b[0]
    return [(_cut(q.get("system")), _cut(q.get("code")), _cut(q.get("unit")), b[1], b[2], b[3])]


def _quantity_number(value: Any, entry: PlanEntry) -> list[Row]:
    r = number_range(value)
    return [(None, None, None, *r)] if r else []


# ------------------------------------------------------------------------------------------ uris


def _uri(value: Any, entry: PlanEntry) -> list[Row]:
    return [(_cut(value),)] if isinstance(value, str) and value else []


# ------------------------------------------------------------------------------------------ converters

_STRINGS = ("string", "markdown", "code", "id", "uri", "url", "canonical", "oid", "uuid")
_QUANTITIES = ("Quantity", "Age", "Duration", "Distance", "Count", "SimpleQuantity", "MoneyQuantity")
_NUMBERS = ("decimal", "integer", "positiveInt", "unsignedInt")

CONVERTERS: dict[str, dict[str, Converter]] = {
    "string": {
        **dict.fromkeys(_STRINGS, _string_primitive),
        "HumanName": _human_name,
        "Address": _address,
        "xhtml": _narrative,
    },
    "token": {
        **dict.fromkeys((*_STRINGS, "boolean", *_NUMBERS), _token_primitive),
        "Coding": _coding,
        "CodeableConcept": _codeable_concept,
        "Identifier": _identifier,
        "ContactPoint": _contact_point,
    },
    "reference": {
        **dict.fromkeys(sorted(structure().resource_types), _resource_ref),
        "Reference": _reference,
        "canonical": _canonical_ref,
        "uri": _uri_ref,
        "url": _uri_ref,
        "Attachment": _attachment_ref,
    },
    "date": {
        **dict.fromkeys(("date", "dateTime", "instant", "string"), _date_primitive),
        "Period": _period,
        "Timing": _timing,
    },
    "number": {**dict.fromkeys(_NUMBERS, _number_primitive), "Range": _number_range_type},
    "quantity": {
        **dict.fromkeys(_QUANTITIES, _quantity),
        **dict.fromkeys(_NUMBERS, _quantity_number),
        "Money": _money,
        "Range": _quantity_range,
    },
    "uri": dict.fromkeys(("uri", "url", "canonical", "oid", "uuid", "string"), _uri),
    "special": {"Location.position": _position},  # Location `near`, written to idx_composite
}


def indexable_types(search_type: str) -> frozenset[str]:
    """FHIR types a parameter of this search type can index (registry validation uses it)."""
    return frozenset(CONVERTERS.get(search_type, {}))


# ------------------------------------------------------------------------------------------ composites

_COMPOSITE_INDEX = {name: i for i, name in enumerate(COLUMNS["composite"])}
Parts = dict[str, Any]  # composite column name -> value, from one component value


def _c1(search_type: str) -> Callable[[Node, PlanEntry], list[Parts]]:
    """Columns from the first component: a token's system|code, or a reference as "Type/id" (or its url)."""

    def run(node: Node, entry: PlanEntry) -> list[Parts]:
        rows = _convert(search_type, node, entry)
        if search_type == "reference":
            return [{"c1_code": c} for r in rows if (c := _ref_code(r))]
        return [{"c1_system": r[0], "c1_code": r[1]} for r in rows if r[1] is not None]

    return run


def _ref_code(row: Row) -> str | None:
    return f"{row[0]}/{row[1]}" if row[0] and row[1] else row[3]


def _c2(search_type: str) -> Callable[[Node, PlanEntry], list[Parts]]:
    """Columns from the second component, by its search type (a quantity's unit stands in for a missing code)."""

    def run(node: Node, entry: PlanEntry) -> list[Parts]:
        rows = _convert(search_type, node, entry)
        if search_type == "token":
            return [{"c2_system": r[0], "c2_code": r[1]} for r in rows if r[1] is not None]
        if search_type == "quantity":  # the value itself: search compares it as plain quantity search does
            return [{"c2_system": r[0], "c2_code": r[1] or r[2], "c2_low": r[3], "c2_high": r[3]} for r in rows]
        if search_type == "number":
            return [{"c2_low": r[0], "c2_high": r[0]} for r in rows]
        if search_type == "date":
            return [{"c2_dlow": r[0], "c2_dhigh": r[1]} for r in rows]
        if search_type == "string":
            return [{"c2_text": r[0]} for r in rows]
        if search_type == "reference":
            return [{"c2_code": c} for r in rows if (c := _ref_code(r))]
        if search_type == "uri":
            return [{"c2_code": r[0]} for r in rows]
        return []

    return run


def _c3(search_type: str) -> Callable[[Node, PlanEntry], list[Parts]]:
    """Columns from the third component: numbers only (MolecularSequence coordinates)."""

    def run(node: Node, entry: PlanEntry) -> list[Parts]:
        if search_type not in ("number", "quantity"):
            return []
        return [{"c3_low": r[-3], "c3_high": r[-3]} for r in _convert(search_type, node, entry)]  # the value

    return run


def _convert(search_type: str, node: Node, entry: PlanEntry) -> list[Row]:
    conv = CONVERTERS.get(search_type, {}).get(node[1])
    return list(conv(node[0], entry)) if conv is not None else []


def _composite(entry: PlanEntry, nodes: list[Node], root: Node) -> list[Row]:
    """One row per element instance and combination of its components' values; none if a component is empty."""
    rows: list[Row] = []
    for node in nodes:
        # Every component's nodes first: most instances lack one (an Observation has one kind of
        # value, so three of its four code-value-* composites end here), and converting the
        # others' values before finding that out was most of the composites' cost.
        found = [evaluator.on([node], root) for evaluator, _ in entry.components]
        if not all(found):
            continue
        parts: list[list[Parts]] = []
        for (_, conv), component_nodes in zip(entry.components, found, strict=True):
            values = [v for n in component_nodes for v in conv(n, entry)]
            if not values:
                break
            parts.append(values)
        else:
            for combo in product(*parts):
                row: list[Any] = [None] * len(_COMPOSITE_INDEX)
                for columns in combo:
                    for name, value in columns.items():
                        row[_COMPOSITE_INDEX[name]] = value
                rows.append(tuple(row))
    return rows


# ------------------------------------------------------------------------------------------ plans


@dataclass(slots=True)
class PlanEntry:
    """One indexed parameter of one resource type, ready to run."""

    code: str
    table: str
    evaluator: Evaluator
    converters: dict[str, Converter]
    targets: frozenset[str]
    components: tuple[tuple[Evaluator, Callable[[Node, PlanEntry], list[Parts]]], ...] = ()
    implicit_system: str | None = None  # token: the system of its `code` values (see implicit_system)
    prefix: tuple[str, str] = ("", "")  # (resource type, code): what every row of this entry starts with


def plan(resource_type: str, registry: Registry) -> list[PlanEntry]:
    """The precompiled indexing plan for a resource type (cached on the registry)."""
    cached = registry.plans.get(resource_type)
    if cached is None:
        cached = registry.plans[resource_type] = _build_plan(resource_type, registry)
    return cached


def _build_plan(resource_type: str, registry: Registry) -> list[PlanEntry]:
    entries: list[PlanEntry] = []
    derived = derived_params(resource_type, registry).keys() | derived_references(resource_type, registry).keys()
    for param in registry.for_type(resource_type):
        code = param.code
        if not param.indexed or code in derived:  # a derived one's rows would repeat its sources'
            continue
        evaluator = _evaluator(param, resource_type)
        if evaluator is None:
            continue
        components = _components(param, evaluator, resource_type, registry) if param.type == "composite" else ()
        if param.type == "composite" and not components:
            continue
        implicit = implicit_system(evaluator) if param.type == "token" else None
        converters = CONVERTERS.get(param.type, {})
        entries.append(
            PlanEntry(
                code=code,
                table="composite" if param.type == "special" else param.type,
                evaluator=evaluator,
                converters={**converters, "code": _token_code} if implicit else converters,
                targets=frozenset(param.targets),
                components=components,
                implicit_system=implicit,
                prefix=(resource_type, code),
            )
        )
    return entries


def _evaluator(param: SearchParam, resource_type: str) -> Evaluator | None:
    base = resource_type if resource_type in param.base else next(b for b in param.base if b != resource_type)
    try:
        return param.extractor(base)
    except FhirPathError as exc:
        log.warning("search parameter %s is not indexed for %s: %s", param.url, resource_type, exc)
        return None


# -- derived parameters ------------------------------------------------------------------------------


def sources(resource_type: str, code: str, registry: Registry) -> tuple[str, ...]:
    """The parameter codes whose index rows answer `code` on this resource type: `(code,)`, or for a
    derived parameter the parameters its expression unites (see derived_params)."""
    return derived_params(resource_type, registry).get(code, (code,))


def row_scope(resource_type: str, code: str, registry: Registry) -> tuple[tuple[str, ...], str | None]:
    """Which index rows answer `code` on this type: the parameter codes (see `sources`) and, for a
    reference parameter derived from another by its target type (see derived_references), that type,
    which the rows' `target_type` must have. Every query over index rows by parameter goes through this
    (hub.search.planner.param_scope)."""
    ref = derived_references(resource_type, registry).get(code)
    if ref is not None:
        return (ref[0],), ref[1]
    return sources(resource_type, code, registry), None


def derived_references(resource_type: str, registry: Registry) -> dict[str, tuple[str, str]]:
    """Standard reference parameters that are another reference parameter restricted to one target
    type, code -> (source code, type): Observation `patient` is `subject.where(resolve() is Patient)`,
    Encounter `practitioner` is `participant.where(resolve() is Practitioner)`. Their rows would repeat
    the source's rows of that type (7 % of the Synthea set's index rows), so writes skip them and
    searches read the source's rows with `target_type` = the type.

    One difference, on purpose: a reference that names its type only in `Reference.type` (a logical
    reference by identifier, e.g. a BSN) counts as one of that type, so `patient:identifier=...` finds
    it; FHIRPath's resolve() cannot tell its type from the reference text. Cached on the registry."""
    cached = registry.derived_refs.get(resource_type)
    if cached is None:
        cached = registry.derived_refs[resource_type] = _derive_references(resource_type, registry)
    return cached


_WHERE_RESOLVE_IS = re.compile(r"^(.+)\.where\(\(?resolve\(\) is ([A-Z][A-Za-z]*)\)?\)$")


def _derive_references(resource_type: str, registry: Registry) -> dict[str, tuple[str, str]]:
    refs: dict[str, tuple[frozenset[str], SearchParam]] = {}
    for param in registry.for_type(resource_type):
        if not param.indexed or param.custom or param.type != "reference":
            continue
        evaluator = _evaluator(param, resource_type)
        branches = _branches(evaluator.text or evaluator.expression) if evaluator and not evaluator.fallback else None
        if branches:
            refs[param.code] = (branches, param)
    out: dict[str, tuple[str, str]] = {}
    for code, (branches, param) in refs.items():
        matches = [_WHERE_RESOLVE_IS.match(b) for b in branches]
        if not all(matches):
            continue
        kinds = {m.group(2) for m in matches if m}
        inner = frozenset(" ".join(m.group(1).split()) for m in matches if m)
        if len(kinds) != 1:
            continue
        kind = kinds.pop()
        if param.targets and param.targets != (kind,):
            continue
        for source, (source_branches, source_param) in sorted(refs.items()):
            takes_kind = not source_param.targets or kind in source_param.targets
            if source != code and source_branches == inner and takes_kind:
                out[code] = (source, kind)
                break
    return out


def derived_params(resource_type: str, registry: Registry) -> dict[str, tuple[str, ...]]:
    """Standard parameters whose expression on this type is the union of other standard parameters'
    of the same search type and conversion, e.g. Observation `combo-code` = `code` | `component-code`:
    their rows would repeat the sources' rows (12 % of the Synthea set's index rows), so writes skip
    them and searches read the sources' rows (`param IN (...)`): matching, :missing, :not and _sort
    (lowest / highest over all values) give the same answers. Reference parameters derive another
    way (derived_references). Cached on the registry."""
    cached = registry.derived.get(resource_type)
    if cached is None:
        cached = registry.derived[resource_type] = _derive(resource_type, registry)
    return cached


def _derive(resource_type: str, registry: Registry) -> dict[str, tuple[str, ...]]:
    shapes: dict[str, tuple[Any, frozenset[str]]] = {}
    for param in registry.for_type(resource_type):
        if not param.indexed or param.custom or param.type in ("reference", "special"):
            continue
        evaluator = _evaluator(param, resource_type)
        branches = _branches(evaluator.text or evaluator.expression) if evaluator and not evaluator.fallback else None
        if evaluator is None or not branches:
            continue
        components = tuple((expr, registry.component_type((url, expr))) for url, expr in param.components)
        implicit = implicit_system(evaluator) if param.type == "token" else None
        shapes[param.code] = ((param.type, implicit, components), branches)
    out: dict[str, tuple[str, ...]] = {}
    for code, (shape, branches) in shapes.items():
        parts = sorted(
            ((c, b) for c, (s, b) in shapes.items() if s == shape and b < branches), key=lambda cb: (-len(cb[1]), cb[0])
        )
        covered: set[str] = set()
        chosen: list[str] = []
        for c, b in parts:
            if not b <= covered:
                chosen.append(c)
                covered |= b
        if covered == branches:
            out[code] = tuple(sorted(chosen))

    # a source that is itself derived stands for its own sources (proper subsets: no cycles)
    def flat(code: str) -> tuple[str, ...]:
        return tuple(sorted({leaf for c in out[code] for leaf in (flat(c) if c in out else (c,))}))

    return {code: flat(code) for code in out}


def _branches(text: str) -> frozenset[str] | None:
    """The union branches of an expression, nested parenthesised unions flattened; None if the
    parentheses do not balance."""
    out: set[str] = set()
    parts: list[str] = []
    depth, start = 0, 0
    for i, ch in enumerate(text):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                return None
        elif ch == "|" and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    if depth != 0:
        return None
    parts.append(text[start:])
    for part in (p.strip() for p in parts):
        if not part:
            return None
        if part.startswith("(") and _closes_at_end(part):
            inner = _branches(part[1:-1])
            if inner is None:
                return None
            out |= inner
        else:
            out.add(" ".join(part.split()))
    return frozenset(out)


def _closes_at_end(part: str) -> bool:
    """Whether the parenthesis opening `part` is the one that closes it at its end."""
    depth = 0
    for i, ch in enumerate(part):
        depth += ch == "("
        depth -= ch == ")"
        if depth == 0:
            return i == len(part) - 1
    return False


_SIMPLE_PATH = re.compile(r"^\(?([A-Z][A-Za-z]*(?:\.[a-z][A-Za-z]*)+)\)?$")


def implicit_system(evaluator: Evaluator) -> str | None:
    """The token system a parameter's `code` values imply (R4 search.html#token): when every union
    branch of its expression is a plain path to a `code` element bound (required) to a value set of
    one code system, and all name the same one. Otherwise None: codes are indexed without a system."""
    if "code" not in evaluator.types:
        return None
    systems = set()
    for branch in (evaluator.text or evaluator.expression).split("|"):
        m = _SIMPLE_PATH.match(branch.strip())
        system = implicit_systems().get(m.group(1)) if m else None
        if system is None:
            return None
        systems.add(system)
    return systems.pop() if len(systems) == 1 else None


def _components(
    param: SearchParam, evaluator: Evaluator, resource_type: str, registry: Registry
) -> tuple[tuple[Evaluator, Callable[[Node, PlanEntry], list[Parts]]], ...]:
    out: list[tuple[Evaluator, Callable[[Node, PlanEntry], list[Parts]]]] = []
    context = evaluator.types - {ANY} or {resource_type}
    for i, (definition, expression) in enumerate(param.components[:3]):
        component = registry.by_url(definition)
        if component is None:
            log.warning("composite %s: unknown component %s", param.url, definition)
            return ()
        try:
            ev = compile_expression(expression, context, root_type=resource_type)
        except FhirPathError as exc:
            log.warning("composite %s: component %r: %s", param.url, expression, exc)
            return ()
        conv = (_c1, _c2, _c3)[i](_component_type(component.type, ev.types))
        out.append((ev, conv))
    return tuple(out)


def _component_type(declared: str, value_types: frozenset[str]) -> str:
    """The declared search type of a component, unless it cannot index what the expression gives.

    R4's DocumentReference `relationship` names its definitions the wrong way round (relatesto, a
    reference, for `code`; relation, a token, for `target`): there the values' own type decides.
    """
    if ANY in value_types or value_types & indexable_types(declared):
        return declared
    for kind in ("token", "reference", "quantity", "date", "number", "string", "uri"):
        if value_types & indexable_types(kind):
            return kind
    return declared


# ------------------------------------------------------------------------------------------ extract


def extract_tuples(
    resource: dict[str, Any], registry: Registry | None = None, codes: frozenset[str] | None = None
) -> dict[str, list[tuple[Any, ...]]]:
    """Index rows for `resource` by table name, each a tuple (res_type, param, *COLUMNS[table]).

    The write path inserts these as they are; identical rows of one parameter appear once. With the
    resource's own rows come those it keeps for its contained resources (_add_contained). `codes`
    limits extraction to some parameters of the resource itself (re-indexing after a new
    SearchParameter; hub.search.custom adds the contained resources' rows with contained_tuples).
    """
    reg = registry or default_registry()
    rt = resource["resourceType"]
    root: Node = (resource, rt)
    focus = [root]
    out: dict[str, list[tuple[Any, ...]]] = {}
    for entry in _applicable(rt, reg, tuple(resource)):
        if codes is not None and entry.code not in codes:
            continue
        try:
            nodes = entry.evaluator.fn(focus, root)
            if not nodes:
                continue
            rows = _rows(entry, nodes, root)
        except (FhirPathError, AttributeError, TypeError) as exc:
            # Malformed content must not fail the write; the parameter just finds nothing for it.
            log.warning("%s/%s: cannot index %s: %s", rt, resource.get("id"), entry.code, exc)
            continue
        if not rows:
            continue
        bucket = out.get(entry.table)
        if bucket is None:
            bucket = out[entry.table] = []
        prefix = entry.prefix
        if len(rows) == 1:
            bucket.append(prefix + rows[0])
        else:
            bucket += [prefix + row for row in dict.fromkeys(rows)]
    if codes is None and resource.get("contained"):
        _add_contained(resource, reg, out)
    return out


def contained_tuples(
    resource: dict[str, Any],
    registry: Registry | None = None,
    *,
    references: frozenset[str] | None = None,
    inner: tuple[str, frozenset[str]] | None = None,
) -> dict[str, list[tuple[Any, ...]]]:
    """Only the rows extract_tuples keeps for the resource's contained resources (migration 0020),
    or some of them (re-indexing for a new SearchParameter): those under the reference parameters
    `references`, or only the contained resources of type inner[0] for their parameters inner[1]."""
    out: dict[str, list[tuple[Any, ...]]] = {}
    if resource.get("contained"):
        _add_contained(resource, registry or default_registry(), out, references, inner)
    return out


def contained_code(reference_code: str, contained_type: str, code: str) -> str:
    """The parameter code under which a container keeps the rows of a contained resource of type
    `contained_type` that its reference parameter `reference_code` names: `subject:Patient.name`.
    No search parameter's code has a `:` or a `.`, so ordinary searches never read these rows."""
    return f"{reference_code}:{contained_type}.{code}"


MAX_PARAM = 100  # the index tables' `param` column


def _add_contained(
    resource: dict[str, Any],
    registry: Registry,
    out: dict[str, list[tuple[Any, ...]]],
    references: frozenset[str] | None = None,
    inner_only: tuple[str, frozenset[str]] | None = None,
) -> None:
    """Chained search looks inside contained resources (R4 search.html#contained): for each reference
    parameter value `#id` that names a contained resource, that resource's index rows, and an `_id`
    token row with its local id, are kept under the container (its type and resource_pk) with the
    parameter code `contained_code(reference, type, code)`, as HAPI FHIR's contained indexing does;
    the reference itself gets a row with url `#id` (no target_id: searches by target never see it).
    A contained resource reached by two references gets rows under both; one that no reference
    parameter names (only an extension, say) gets none. Contained resources contain nothing (dom-2).
    `references` / `inner_only`: see contained_tuples."""
    contained = {
        c["id"]: c
        for c in resource["contained"]
        if type(c) is dict and isinstance(c.get("id"), str) and isinstance(c.get("resourceType"), str)
    }
    if not contained:
        return
    rt = resource["resourceType"]
    root: Node = (resource, rt)
    done: set[tuple[str, str]] = set()
    for entry in _applicable(rt, registry, tuple(resource)):
        if entry.table != "reference" or entry.components or (references is not None and entry.code not in references):
            continue
        try:
            nodes = entry.evaluator.fn([root], root)
        except (FhirPathError, AttributeError, TypeError):
            continue  # extract_tuples has logged it
        for value, typ in nodes:
            ref = value.get("reference") if typ == "Reference" and type(value) is dict else None
            if not isinstance(ref, str) or not ref.startswith("#"):
                continue
            inner = contained.get(ref[1:])
            if inner is None or (entry.code, ref) in done:
                continue
            done.add((entry.code, ref))
            ct = inner["resourceType"]
            if (entry.targets and ct not in entry.targets) or (inner_only is not None and ct != inner_only[0]):
                continue
            bare = {k: v for k, v in inner.items() if k != "contained"}
            if inner_only is not None:  # the reference's own rows exist already
                own = extract_tuples(bare, registry, inner_only[1])
            else:
                ident = value.get("identifier")
                id_system, id_value = (
                    (_cut(ident.get("system")), _cut(ident.get("value"))) if type(ident) is dict else (None, None)
                )
                ref_row = (rt, entry.code, ct, None, None, _cut(ref), id_system, id_value)
                out.setdefault("reference", []).append(ref_row)
                own = extract_tuples(bare, registry)
                own.setdefault("token", []).append((ct, "_id", None, inner["id"], None, None, None))
            for table, rows in own.items():
                bucket = out.setdefault(table, [])
                for row in rows:
                    code = contained_code(entry.code, ct, row[1])
                    if len(code) <= MAX_PARAM:
                        bucket.append((rt, code, *row[2:]))


_SHAPES = 4096  # key sets remembered per registry; beyond this the memo starts again


def _applicable(rt: str, registry: Registry, keys: tuple[str, ...]) -> list[PlanEntry]:
    """The plan entries whose expression may find something in a resource with these top-level keys:
    most parameters of a type read keys that most of its resources lack. Resources of one source
    come in few shapes (all of Synthea: 59, at most 9 for one type), so the answer is memoised per
    (type, keys)."""
    memo = registry.shapes
    found = memo.get((rt, keys))
    if found is None:
        present = frozenset(keys)
        found = [
            e for e in plan(rt, registry) if e.evaluator.reads is None or not present.isdisjoint(e.evaluator.reads)
        ]
        if len(memo) >= _SHAPES:
            memo.clear()
        memo[(rt, keys)] = found
    return found


def extract(resource: dict[str, Any], registry: Registry | None = None) -> dict[str, list[dict[str, Any]]]:
    """The same rows as dicts with res_type, param and the table's named columns (for tests and tools)."""
    return {
        table: [dict(zip(("res_type", "param", *COLUMNS[table]), row, strict=True)) for row in rows]
        for table, rows in extract_tuples(resource, registry).items()
    }


def _rows(entry: PlanEntry, nodes: list[Node], root: Node) -> list[Row]:
    if entry.components:
        return _composite(entry, nodes, root)
    rows: list[Row] = []
    converters = entry.converters
    for value, typ in nodes:
        conv = converters.get(typ)
        if conv is not None:
            rows.extend(conv(value, entry))
    return rows
