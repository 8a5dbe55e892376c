"""Structural validation of R4 JSON resources against the base definitions (no profiles, no FHIRPath).

This runs on every write, so it walks the JSON once with per-type tables (JSON name -> slot) that are
built from `structure()` on first use, and builds path strings only for the issues it reports.

What it checks (http://hl7.org/fhir/R4/json.html and the base StructureDefinitions): resourceType,
unknown properties (including choice types that are not allowed), one type per choice element,
cardinality (required elements, arrays versus single values, no empty arrays or objects, no null
except where a primitive array pairs with its `_name` array), primitive values (JSON type, the type's
regex, 32-bit integers, calendar dates, base64, XHTML div), the `_name` companions of primitives,
contained resources (id, dom-2, dom-4), resources in Bundle.entry / Parameters.parameter, ext-1 and
ele-1. Invariants written in FHIRPath are left to the profile validator.

Issue.expression is FHIRPath:
- `Patient.name[0].given[1]`: element names and 0-based indices;
- a choice element by name and type: `Observation.value.ofType(Quantity)`;
- a resource inside a Resource-typed element: `Bundle.entry[2].resource.ofType(Observation).status`;
- the content of a `_name` object belongs to the primitive: `Patient.birthDate.extension[0].url`;
- a property that does not exist, as written: `Patient.deceasedString`, `Patient.contact[0].foo`;
- a missing element, by its own path: `Observation.status`, `MedicationRequest.medication`;
- the top-level resourceType: `resourceType`.

Issue codes: `structure` (unknown property, wrong JSON shape or JSON type, null, empty array or
object, two types of one choice element), `required` (missing element), `value` (a primitive's
content), `invalid` (unknown, abstract or unexpected resource type; the invariants ext-1, dom-2,
dom-4 and ele-1). Severity is `error`, except a whitespace-only string (the spec says SHOULD), which
is a `warning`: callers decide on `has_errors()`, not on an empty list.
"""

from __future__ import annotations

import calendar
import html.entities
import math
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from functools import lru_cache
from typing import Any

from lxml import etree

from hub.fhirmodel.structure import TypeInfo, structure
from hub.formats.outcome import Issue

__all__ = ["has_errors", "validate_resource"]

# A location is a chain (parent, segment), segment a name or an index; rendered only for an issue.
_Path = tuple[Any, str | int] | None

_STR, _BOOL, _INT, _NUM = "string", "boolean", "integer", "number"
_INT_MIN, _INT_MAX = -(2**31), 2**31 - 1
_MAX_STRING = 1024 * 1024  # "strings SHALL NOT exceed 1MB" (string and its specialisations)
_XHTML_NS = "http://www.w3.org/1999/xhtml"

_Problem = tuple[str, str, str]  # (severity, code, diagnostics)


# -- public API -------------------------------------------------------------------------------------


def validate_resource(resource: dict[str, Any], *, expected_type: str | None = None) -> list[Issue]:
    """All structural issues of `resource` against base R4 (valid when `has_errors()` is false).

    `expected_type`, when given, is the resource type the caller requires (e.g. from the URL).
    """
    out: list[Issue] = []
    if not isinstance(resource, dict):
        _add(out, "structure", "A resource must be a JSON object", (None, "resourceType"))
        return out
    try:
        rt = _resource_type(resource, (None, "resourceType"), expected_type, out)
        if rt is not None:
            _walk(resource, _table(rt), (None, rt), out)
    except RecursionError:
        out.append(Issue("error", "structure", "The resource is nested too deeply to validate"))
    return out


def has_errors(issues: list[Issue]) -> bool:
    """Whether any issue makes the resource invalid (warnings do not)."""
    return any(i.severity in ("error", "fatal") for i in issues)


# -- primitives -------------------------------------------------------------------------------------


@dataclass(slots=True, frozen=True)
class _Prim:
    name: str
    kind: str  # string | boolean | integer | number: the JSON representation
    ok: Callable[[Any], bool]  # fast test that passes nearly every valid value
    match: Callable[[str], Any] | None = None  # the type's regex, whole-string
    extra: Callable[[str], _Problem | None] | None = None  # checks past the regex
    low: int = _INT_MIN  # integer kinds
    max_len: int | None = None


def _xsd_regex(regex: str) -> str:
    """FHIR regexes follow XML Schema, where \\s is only space, tab, CR and LF (Python's is Unicode)."""
    out: list[str] = []
    in_class = False
    i = 0
    while i < len(regex):
        c = regex[i]
        if c == "\\" and i + 1 < len(regex):
            esc = regex[i + 1]
            if esc == "s":
                out.append(" \\t\\n\\r" if in_class else "[ \\t\\n\\r]")
            elif esc == "S":
                if in_class:
                    raise ValueError(f"cannot translate \\S inside a character class: {regex}")
                out.append("[^ \\t\\n\\r]")
            else:
                out.append(regex[i : i + 2])
            i += 2
            continue
        if c == "[" and not in_class:
            in_class = True
        elif c == "]" and in_class:
            in_class = False
        out.append(c)
        i += 1
    return "".join(out)


def _calendar_date(v: str) -> _Problem | None:
    """The regexes allow 2021-02-30; a date must exist."""
    if len(v) < 10 or v[8:10] < "29":
        return None
    year, month, day = int(v[0:4]), int(v[5:7]), int(v[8:10])
    last = calendar.monthrange(year, month)[1]  # the regex has checked year >= 1 and month 1..12
    if day > last:
        return "error", "value", f"{v!r} is not a valid date ({year:04d}-{month:02d} has {last} days)"
    return None


def _whitespace_only(v: str) -> _Problem | None:
    # datatypes.html: a whitespace-only string could be trimmed to nothing, so it SHOULD NOT occur
    if v.isspace():
        return "warning", "value", "A string SHOULD contain non-whitespace content"
    return None


_B64_PLAIN = re.compile(r"[A-Za-z0-9+/=]+").fullmatch
_B64_SPACED = re.compile(r"[A-Za-z0-9+/= \t\n\r]+").fullmatch


def _base64_ok(v: Any) -> bool:
    # Linear equivalent of the R4 regex (\s*([0-9a-zA-Z\+/=]){4}\s*)+ , which backtracks badly:
    # groups of four characters, whitespace only between groups
    if type(v) is not str or not v:
        return False
    if _B64_PLAIN(v) is not None:
        return len(v) % 4 == 0
    chunks = v.split()
    return bool(chunks) and _B64_SPACED(v) is not None and all(len(c) % 4 == 0 for c in chunks)


def _base64(v: str) -> _Problem | None:
    return None if _base64_ok(v) else ("error", "value", "Not valid base64 content")


_ENTITY = re.compile(r"&([A-Za-z][A-Za-z0-9]*);")
_XML_ENTITIES = frozenset({"lt", "gt", "amp", "quot", "apos"})


def _html_entity(m: re.Match[str]) -> str:
    # Narratives written as HTML use &nbsp; and friends; they are not XML but are harmless
    name = m.group(1)
    cp = html.entities.name2codepoint.get(name)
    return m.group(0) if name in _XML_ENTITIES or cp is None else f"&#{cp};"


def _xhtml(div: str) -> _Problem | None:
    """Narrative.div: a well-formed <div> in the XHTML namespace (the full txt-1/txt-2 checks come later)."""
    return _xhtml_cached(div) if len(div) <= 16384 else _xhtml_parse(div)


@lru_cache(maxsize=512)  # narratives repeat (generated text), parsing is the expensive part
def _xhtml_cached(div: str) -> _Problem | None:
    return _xhtml_parse(div)


def _xhtml_parse(div: str) -> _Problem | None:
    if not div.startswith("<div"):
        return "error", "value", "The narrative must be an XHTML <div> element"
    text = _ENTITY.sub(_html_entity, div) if "&" in div else div
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)  # one per call: not shared
    try:
        root = etree.fromstring(text, parser)
    except (etree.XMLSyntaxError, ValueError) as exc:
        return "error", "value", f"The narrative is not well-formed XHTML: {exc}"
    if root.tag != f"{{{_XHTML_NS}}}div":
        return "error", "value", f'The narrative <div> must declare xmlns="{_XHTML_NS}"'
    return None


def _xhtml_ok(v: Any) -> bool:
    return type(v) is str and _xhtml(v) is None


_DATE_TYPES = frozenset({"date", "dateTime", "instant"})
_STRING_TYPES = frozenset({"string", "code", "id", "markdown"})  # string and its specialisations in R4
_ANY_TEXT = frozenset({"string", "markdown"})  # regex [ \r\n\t\S]+ is "anything non-empty" in XML Schema


def _make_prim(info: TypeInfo) -> _Prim:
    name = info.name
    if info.json_kind == "boolean":
        return _Prim(name, _BOOL, lambda v: v is True or v is False)
    if info.json_kind == "integer":
        low = {"positiveInt": 1, "unsignedInt": 0}.get(name, _INT_MIN)
        return _Prim(name, _INT, lambda v: type(v) is int and low <= v <= _INT_MAX, low=low)
    if info.json_kind == "number":
        return _Prim(name, _NUM, _decimal_ok)
    if name == "xhtml":
        return _Prim(name, _STR, _xhtml_ok, extra=_xhtml)
    if name == "base64Binary":
        return _Prim(name, _STR, _base64_ok, extra=_base64)
    max_len = _MAX_STRING if name in _STRING_TYPES else None
    if name in _ANY_TEXT:
        return _Prim(name, _STR, _text_ok, extra=_whitespace_only, max_len=max_len)
    match = re.compile(_xsd_regex(info.regex)).fullmatch if info.regex else None
    if name in _DATE_TYPES:
        assert match is not None
        return _Prim(name, _STR, _date_ok(match), match, _calendar_date)
    return _Prim(name, _STR, _pattern_ok(match, max_len), match, max_len=max_len)


def _decimal_ok(v: Any) -> bool:
    t = type(v)
    return t is int or (t is float and math.isfinite(v)) or (t is Decimal and v.is_finite())


def _text_ok(v: Any) -> bool:
    return type(v) is str and 0 < len(v) <= _MAX_STRING and not v.isspace()


def _date_ok(match: Callable[[str], Any]) -> Callable[[Any], bool]:
    return lambda v: type(v) is str and match(v) is not None and (len(v) < 10 or v[8:10] < "29")


def _pattern_ok(match: Callable[[str], Any] | None, max_len: int | None) -> Callable[[Any], bool]:
    limit = max_len or math.inf  # the uri family has no length limit
    if match is None:
        return lambda v: type(v) is str and 0 < len(v) <= limit
    return lambda v: type(v) is str and 0 < len(v) <= limit and match(v) is not None


def _primitive_problem(p: _Prim, v: Any) -> _Problem | None:
    """Why `v` is not a valid `p` (None if it is after all: `p.ok` is only a fast pre-test)."""
    if p.kind == _BOOL:
        return "error", "structure", f"A boolean must be JSON true or false, not {_show(v)}"
    if p.kind == _INT:
        if type(v) is not int:
            if type(v) in (float, Decimal):
                return "error", "value", f"{_an(p.name)} must be a whole number without decimal point, not {_show(v)}"
            return "error", "structure", f"{_an(p.name)} must be a JSON number, not {_show(v)}"
        if not p.low <= v <= _INT_MAX:
            return "error", "value", f"{v} is out of range for {p.name} ({p.low}..{_INT_MAX})"
        return None
    if p.kind == _NUM:
        if type(v) in (int, float, Decimal):
            return "error", "value", f"A decimal must be a finite number, not {v}"
        return "error", "structure", f"A decimal must be a JSON number, not {_show(v)}"
    if not isinstance(v, str):
        return "error", "structure", f"{_an(p.name)} must be a JSON string, not {_show(v)}"
    if not v:
        return "error", "value", "Empty strings are not allowed (leave the property out)"
    if p.max_len is not None and len(v) > p.max_len:
        return "error", "value", f"{_an(p.name)} must not exceed {p.max_len} characters"
    if p.match is not None and p.match(v) is None:
        return "error", "value", f"{_show(v)} is not a valid {p.name}"
    return p.extra(v) if p.extra is not None else None


def _an(name: str, article: str = "A") -> str:
    """'A code', 'An integer' (or lowercase with article="a")."""
    return f"{article}{'n' if name[:1] in 'AEIOUaeiou' else ''} {name}"


def _show(v: Any) -> str:
    if v is None:
        return "null"
    if v is True or v is False:
        return "true" if v else "false"
    if isinstance(v, dict):
        return "an object"
    if isinstance(v, list):
        return "an array"
    text = repr(v) if isinstance(v, str) else str(v)
    return text if len(text) <= 60 else text[:57] + "..."


# -- per-type tables --------------------------------------------------------------------------------


@dataclass(slots=True)
class _Slot:
    name: str  # JSON property name
    label: str  # path segment: "status", "value.ofType(Quantity)"
    is_list: bool
    prim: _Prim | None = None
    table: _Table | None = None  # complex types and backbone elements
    resource: str | None = None  # Resource-typed: "Resource" (any type) or the one allowed type
    contained: bool = False  # DomainResource.contained: the extra rules for contained resources
    choice: str | None = None  # base name of a choice element
    companion: bool = False  # may have a `_name` object (primitives, except XML attributes and xhtml)


@dataclass(slots=True)
class _Table:
    name: str
    is_resource: bool
    is_extension: bool
    slots: dict[str, _Slot] = field(default_factory=dict)
    companions: dict[str, _Slot] = field(default_factory=dict)  # "_given" -> the slot of "given"
    required: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (label, JSON names that satisfy it)
    choices: dict[str, tuple[str, ...]] = field(default_factory=dict)  # "value" -> allowed JSON names


_ready: dict[str, _Table] = {}
_prims: dict[str, _Prim] = {}
_lock = threading.Lock()


def _table(type_name: str) -> _Table:
    table = _ready.get(type_name)
    if table is None:
        with _lock:  # a table is published only once complete, with everything it refers to
            building: dict[str, _Table] = {}
            table = _build(type_name, building)
            _ready.update(building)
    return table


def _build(type_name: str, building: dict[str, _Table]) -> _Table:
    known = _ready.get(type_name) or building.get(type_name)
    if known is not None:
        return known
    s = structure()
    info = s[type_name]
    table = _Table(type_name, info.kind == "resource", type_name == "Extension")
    building[type_name] = table  # registered before its slots: types refer to themselves
    required: list[tuple[str, tuple[str, ...]]] = []
    for base, elements in info.by_base_name.items():
        slots = [_slot(el.name, el.type, el.is_list, el.is_choice, el.xml_attr, info, building) for el in elements]
        for slot in slots:
            table.slots[slot.name] = slot
            if slot.companion:
                table.companions["_" + slot.name] = slot
        if elements[0].is_choice:
            table.choices[base] = tuple(sl.name for sl in slots)
        if elements[0].min >= 1:
            names = [sl.name for sl in slots] + ["_" + sl.name for sl in slots if sl.companion]
            required.append((base, tuple(names)))
    table.required = tuple(required)
    return table


def _slot(
    name: str, type_name: str, is_list: bool, choice: bool, xml_attr: bool, owner: TypeInfo, b: dict[str, _Table]
) -> _Slot:
    s = structure()
    tinfo = s[type_name]
    base = name[: -len(type_name)] if choice else name
    slot = _Slot(name, f"{base}.ofType({type_name})" if choice else name, is_list, choice=base if choice else None)
    if tinfo.kind == "primitive":
        prim = _prims.get(type_name)
        if prim is None:
            prim = _prims[type_name] = _make_prim(tinfo)
        slot.prim = prim
        slot.companion = not xml_attr and type_name != "xhtml"  # xhtml.extension is 0..0
    elif tinfo.kind == "resource":
        slot.resource = type_name
        slot.contained = name == "contained" and owner.kind == "resource"
    else:
        slot.table = _build(type_name, b)
    return slot


# -- the walk ---------------------------------------------------------------------------------------


def _render(path: _Path) -> str:
    parts: list[str] = []
    while path is not None:
        path, seg = path
        parts.append(f"[{seg}]" if type(seg) is int else f".{seg}")
    text = "".join(reversed(parts))
    return text[1:] if text.startswith(".") else text


def _add(out: list[Issue], code: str, diagnostics: str, path: _Path, severity: str = "error") -> None:
    out.append(Issue(severity, code, diagnostics, [_render(path)]))


def _walk(obj: dict[str, Any], table: _Table, path: _Path, out: list[Issue]) -> None:
    """Check one JSON object against its type's table; `path` is the object's own location."""
    slots = table.slots
    seen: dict[str, set[str]] | None = None  # choice base name -> the JSON names present
    for key, v in obj.items():
        slot = slots.get(key)
        if slot is None:
            slot = table.companions.get(key)
            if slot is None:
                if key != "resourceType" or not table.is_resource:
                    _unknown(table, key, path, out)
                continue
            _companion(obj, v, slot, path, out)
        elif slot.is_list:
            if not isinstance(v, list):
                _add(out, "structure", f"'{key}' repeats: it must be a JSON array, not {_show(v)}", (path, slot.label))
            elif not v:
                _add(out, "structure", f"'{key}' is an empty array (leave the property out)", (path, slot.label))
            elif slot.prim is not None:
                _primitive_list(obj, v, slot, path, out)
            else:
                lp = (path, slot.label)
                for i, item in enumerate(v):
                    _complex(item, slot, (lp, i), out)
        elif slot.prim is not None:
            if slot.prim.ok(v):
                pass
            elif isinstance(v, list):
                _add(out, "structure", f"'{key}' does not repeat: it must not be a JSON array", (path, slot.label))
            else:
                _primitive(v, slot, (path, slot.label), out)
        elif isinstance(v, list):
            _add(out, "structure", f"'{key}' does not repeat: it must not be a JSON array", (path, slot.label))
        else:
            _complex(v, slot, (path, slot.label), out)
        if slot.choice is not None:
            if seen is None:
                seen = {}
            seen.setdefault(slot.choice, set()).add(slot.name)
    for label, names in table.required:
        for n in names:
            if n in obj:
                break
        else:
            _add(out, "required", f"'{label}' is required", (path, label))
    if seen is not None:
        for base, present in seen.items():
            if len(present) > 1:
                diag = f"Only one type of {base}[x] is allowed, found {', '.join(sorted(present))}"
                _add(out, "structure", diag, (path, base))
    if table.is_extension and ("extension" in obj) == (seen is not None and "value" in seen):
        _add(out, "invalid", "ext-1: an extension has a value[x] or nested extensions (not both, not neither)", path)


def _primitive(v: Any, slot: _Slot, path: _Path, out: list[Issue]) -> None:
    if v is None:
        _add(out, "structure", f"'{slot.name}' is null (leave the property out)", path)
        return
    assert slot.prim is not None
    problem = _primitive_problem(slot.prim, v)
    if problem is not None:
        severity, code, diagnostics = problem
        _add(out, code, diagnostics, path, severity)


def _primitive_list(obj: dict[str, Any], values: list[Any], slot: _Slot, path: _Path, out: list[Issue]) -> None:
    """A primitive array; null is allowed where the `_name` array has the id/extension instead."""
    assert slot.prim is not None
    ok = slot.prim.ok
    ext = obj.get("_" + slot.name) if slot.companion else None
    ext = ext if isinstance(ext, list) else None
    lp = (path, slot.label)
    for i, item in enumerate(values):
        if item is None:
            if ext is None or i >= len(ext) or ext[i] is None:
                _add(out, "structure", f"'{slot.name}[{i}]' is null without an entry in '_{slot.name}'", (lp, i))
        elif not ok(item):
            _primitive(item, slot, (lp, i), out)
    if ext is not None and len(ext) != len(values):
        diag = f"'{slot.name}' has {len(values)} items but '_{slot.name}' has {len(ext)}: they must be equally long"
        _add(out, "structure", diag, lp)


def _companion(obj: dict[str, Any], v: Any, slot: _Slot, path: _Path, out: list[Issue]) -> None:
    """`_name`: the id and extensions of primitive `name` (an array of objects or nulls if it repeats)."""
    own = (path, slot.label)
    value = obj.get(slot.name)
    if not slot.is_list:
        if isinstance(v, list):
            _add(out, "structure", f"'_{slot.name}' does not repeat: it must not be a JSON array", own)
        else:
            _primitive_extras(v, value is not None, slot, own, out)
        return
    if not isinstance(v, list):
        _add(out, "structure", f"'_{slot.name}' repeats: it must be a JSON array, not {_show(v)}", own)
        return
    if not v:
        _add(out, "structure", f"'_{slot.name}' is an empty array (leave the property out)", own)
        return
    values = value if isinstance(value, list) else None
    for i, item in enumerate(v):
        if item is None:
            if values is None:  # otherwise _primitive_list reports it, once
                _add(out, "structure", f"'_{slot.name}[{i}]' is null and there is no value", (own, i))
            continue
        has_value = values is not None and i < len(values) and values[i] is not None
        _primitive_extras(item, has_value, slot, (own, i), out)


def _primitive_extras(v: Any, has_value: bool, slot: _Slot, path: _Path, out: list[Issue]) -> None:
    if not isinstance(v, dict):
        _add(out, "structure", f"'_{slot.name}' must be an object with id and/or extension, not {_show(v)}", path)
        return
    if not v:
        _add(out, "structure", f"'_{slot.name}' is an empty object (leave the property out)", path)
        return
    _walk(v, _table("Element"), path, out)
    if not has_value and "extension" not in v:
        _add(out, "invalid", f"ele-1: '{slot.name}' has neither a value nor extensions", path)


def _complex(v: Any, slot: _Slot, path: _Path, out: list[Issue]) -> None:
    if not isinstance(v, dict):
        _add(out, "structure", f"'{slot.name}' must be a JSON object, not {_show(v)}", path)
    elif slot.table is not None:
        if not v:
            _add(out, "structure", f"'{slot.name}' is an empty object (leave the property out)", path)
            return
        _walk(v, slot.table, path, out)
        if len(v) == 1 and "id" in v:
            _add(out, "invalid", f"ele-1: '{slot.name}' has no content besides its id", path)
    else:
        _nested_resource(v, slot, path, out)


def _nested_resource(v: dict[str, Any], slot: _Slot, path: _Path, out: list[Issue]) -> None:
    expected = None if slot.resource == "Resource" else slot.resource
    rt = _resource_type(v, (path, "resourceType"), expected, out)
    if rt is None:
        return
    node = (path, f"ofType({rt})")
    if slot.contained:
        _contained_rules(v, node, out)
    _walk(v, _table(rt), node, out)


def _contained_rules(v: dict[str, Any], node: _Path, out: list[Issue]) -> None:
    if "id" not in v:
        _add(out, "required", "A contained resource must have an id", (node, "id"))
    if "contained" in v:
        _add(out, "invalid", "dom-2: a contained resource must not contain resources", (node, "contained"))
    meta = v.get("meta")
    if isinstance(meta, dict):
        for name in ("versionId", "lastUpdated"):
            if name in meta:
                _add(out, "invalid", f"dom-4: a contained resource must not have meta.{name}", ((node, "meta"), name))


def _resource_type(v: dict[str, Any], where: _Path, expected: str | None, out: list[Issue]) -> str | None:
    """The resource type to validate `v` as, or None (reported) if there is none."""
    rt = v.get("resourceType")
    if rt is None:
        _add(out, "required", "The resource has no resourceType", where)
        return None
    if not isinstance(rt, str):
        _add(out, "structure", f"resourceType must be a JSON string, not {_show(rt)}", where)
        return None
    s = structure()
    info = s.get(rt)
    if info is None or info.kind != "resource":
        _add(out, "invalid", f"Unknown resource type {rt!r}", where)
        return None
    if not s.is_resource_type(rt):
        _add(out, "invalid", f"{rt} is an abstract type, not a resource type", where)
        return None
    if expected is not None and rt != expected:
        _add(out, "invalid", f"Expected {_an(expected, 'a')} resource, found {rt}", where)
    return rt


def _unknown(table: _Table, key: str, path: _Path, out: list[Issue]) -> None:
    where = (path, key)
    if key in table.choices:
        allowed = ", ".join(table.choices[key])
        _add(out, "structure", f"'{key}' needs a type suffix ({allowed})", where)
        return
    for base, names in table.choices.items():
        suffix = key[len(base) :]
        if key.startswith(base) and suffix[:1].isupper():
            allowed = ", ".join(n[len(base) :] for n in names)
            _add(out, "structure", f"{suffix} is not an allowed type for {base}[x] (allowed: {allowed})", where)
            return
    own = table.slots.get(key[1:]) if key.startswith("_") else None
    if own is not None and own.prim is not None:
        _add(out, "structure", f"'{key}' is not allowed: '{own.name}' cannot have an id or extensions", where)
    elif own is not None:
        _add(out, "structure", f"'{key}': only primitive elements have a '_' companion", where)
    elif table.name == "Element":
        _add(out, "structure", f"Unknown property '{key}': a primitive's '_' object holds only id and extension", where)
    else:
        _add(out, "structure", f"Unknown element '{key}' in {table.name}", where)
