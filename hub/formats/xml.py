"""FHIR XML <-> the hub's JSON dict form (http://hl7.org/fhir/R4/xml.html, json.html).

The hub works on FHIR JSON dicts; XML is only a wire format. Conversion is driven by the R4 structure
(`hub.fhirmodel.structure`): per type we precompute a table keyed by Clark tag (`{ns}name`, what lxml
hands us) for parsing and by JSON key for writing, so the hot loops are dict lookups only.

Parsing is defensive: no DTDs (a DOCTYPE is rejected outright, which rules out XXE and entity
expansion), no network, no huge trees; comments and processing instructions are dropped. Writing
builds the text directly (faster than building an lxml tree) and escapes attribute values itself.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Callable
from decimal import Decimal
from functools import lru_cache
from operator import attrgetter
from typing import Any

from lxml import etree

from hub.fhirmodel.structure import structure
from hub.formats.outcome import FhirError

FHIR_NS = "http://hl7.org/fhir"
XHTML_NS = "http://www.w3.org/1999/xhtml"
_XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"
_F = "{" + FHIR_NS + "}"
_XHTML_DIV = "{" + XHTML_NS + "}div"
_XSI = "{" + _XSI_NS + "}"
_EXTENSION_TAG = _F + "extension"

# How an element is represented (decided once per element when the tables are built).
_PRIM, _COMPLEX, _RESOURCE, _XHTML = range(4)


class _Child:
    """One JSON property of a type, as the XML converter needs it."""

    __slots__ = ("conv", "ext_name", "fmt", "is_list", "kind", "name", "order", "slot", "table", "type_name")

    def __init__(self, name: str, slot: str, order: int, is_list: bool, kind: int, type_name: str) -> None:
        self.name = name
        self.ext_name = "_" + name  # the JSON companion of a primitive
        self.slot = slot  # base name: at most one choice variant may be present
        self.order = order
        self.is_list = is_list
        self.kind = kind
        self.type_name = type_name
        self.table: _Table | None = None  # complex/backbone: linked after all tables exist
        self.conv: Callable[[str], Any] = _conv_string  # primitives: XML text -> JSON value
        self.fmt: Callable[[Any], str] = _fmt_string  # primitives: JSON value -> XML text


class _Table:
    """Per type: children by Clark tag (parse), by JSON key (write), and the XML attributes."""

    __slots__ = ("attrs", "by_key", "by_tag", "is_resource", "name")

    def __init__(self, name: str, is_resource: bool) -> None:
        self.name = name
        self.is_resource = is_resource
        self.by_tag: dict[str, _Child] = {}
        self.by_key: dict[str, _Child] = {}  # "given" and "_given" both map to the same child
        self.attrs: dict[str, str] = {}  # XML attribute name -> JSON name (Element.id, Extension.url)


class _Tables:
    def __init__(self) -> None:
        st = structure()
        self.types: dict[str, _Table] = {}
        for name, info in st.types.items():
            if info.kind == "primitive" or info.abstract:
                continue
            table = _Table(name, info.kind == "resource")
            for el in info.elements.values():
                if el.xml_attr:
                    table.attrs[el.name] = el.name
                    continue
                child = _Child(el.name, el.base_name, el.order, el.is_list, _kind_of(el.type), el.type)
                if child.kind == _PRIM:
                    json_kind = st.types[el.type].json_kind
                    child.conv, child.fmt = _primitive_codec(el.type, json_kind)
                    table.by_key[child.ext_name] = child
                table.by_key[el.name] = child
                table.by_tag[_XHTML_DIV if child.kind == _XHTML else _F + el.name] = child
            self.types[name] = table
        for table in self.types.values():
            for child in table.by_key.values():
                if child.kind == _COMPLEX:
                    child.table = self.types[child.type_name]
        self.resources: dict[str, _Table] = {n: t for n, t in self.types.items() if t.is_resource}
        self.resource_tags: dict[str, _Table] = {_F + n: t for n, t in self.resources.items()}
        self.extension = self.types["Extension"]


def _kind_of(type_name: str) -> int:
    if type_name == "xhtml":
        return _XHTML
    info = structure()[type_name]
    if type_name == "Resource" or info.kind == "resource":
        # Bundle.entry.response.outcome is typed OperationOutcome in the data; R4 allows any resource
        return _RESOURCE
    return _PRIM if info.kind == "primitive" else _COMPLEX


@lru_cache(maxsize=1)
def _tables() -> _Tables:
    return _Tables()


# --- primitive values ------------------------------------------------------------------------------

_INT_RE = re.compile(r"-?[0-9]+")
_DECIMAL_RE = re.compile(r"-?[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?")
_INT_MIN, _INT_MAX = -(2**31), 2**31 - 1


def _conv_string(text: str) -> str:
    if not text:
        raise ValueError("the value attribute must not be empty")
    return text


def _conv_boolean(text: str) -> bool:
    if text == "true":
        return True
    if text == "false":
        return False
    raise ValueError(f"'{text}' is not a valid boolean (must be 'true' or 'false')")


def _int_conv(type_name: str, low: int) -> Callable[[str], int]:
    def conv(text: str) -> int:
        if not _INT_RE.fullmatch(text):
            raise ValueError(f"'{text}' is not a valid {type_name}")
        value = int(text)
        if not low <= value <= _INT_MAX:
            raise ValueError(f"{text} is out of range for {type_name}")
        return value

    return conv


def _conv_decimal(text: str) -> Decimal:
    # Decimal keeps the stated precision ("1.50"); jsonfmt.dumps writes it verbatim
    if not _DECIMAL_RE.fullmatch(text):
        raise ValueError(f"'{text}' is not a valid decimal")
    return Decimal(text)


def _fmt_string(value: Any) -> str:
    if type(value) is not str:
        raise ValueError(f"expected a string, got {_json_type(value)}")
    return _escape(value)


def _fmt_boolean(value: Any) -> str:
    if value is True:
        return "true"
    if value is False:
        return "false"
    raise ValueError(f"expected true or false, got {_json_type(value)}")


def _fmt_integer(value: Any) -> str:
    if type(value) is not int:
        raise ValueError(f"expected an integer, got {_json_type(value)}")
    return str(value)


def _fmt_decimal(value: Any) -> str:
    kind = type(value)
    if kind is Decimal:
        if not value.is_finite():
            raise ValueError(f"{value} is not a valid decimal")
        return str(value)
    if kind is float:
        if not math.isfinite(value):
            raise ValueError(f"{value} is not a valid decimal")
        return repr(value)
    if kind is int:
        return str(value)
    raise ValueError(f"expected a number, got {_json_type(value)}")


def _primitive_codec(type_name: str, json_kind: str) -> tuple[Callable[[str], Any], Callable[[Any], str]]:
    if json_kind == "boolean":
        return _conv_boolean, _fmt_boolean
    if json_kind == "integer":
        low = {"positiveInt": 1, "unsignedInt": 0}.get(type_name, _INT_MIN)
        return _int_conv(type_name, low), _fmt_integer
    if json_kind == "number":
        return _conv_decimal, _fmt_decimal
    return _conv_string, _fmt_string


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float, Decimal)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object" if isinstance(value, dict) else type(value).__name__


# Characters XML 1.0 cannot carry at all, and those an attribute value must escape.
_BAD_CHARS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")
_ATTR_SPECIAL = re.compile('[&<>"\n\r\t\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]')


def _escape(text: str) -> str:
    """Escape for a double-quoted attribute; \\n, \\r and \\t as character references so they survive."""
    if _ATTR_SPECIAL.search(text) is None:
        return text
    if _BAD_CHARS.search(text):
        raise ValueError("the text contains a character that XML cannot represent")
    return (
        text.replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace('"', "&quot;")
        .replace("\n", "&#10;")
        .replace("\r", "&#13;")
        .replace("\t", "&#9;")
    )


# --- parsing ---------------------------------------------------------------------------------------

_local = threading.local()  # lxml parsers serialise use with a lock: one per thread avoids contention


def _parser() -> etree.XMLParser:
    parser: etree.XMLParser | None = getattr(_local, "parser", None)
    if parser is None:
        parser = etree.XMLParser(
            resolve_entities=False,
            load_dtd=False,
            dtd_validation=False,
            no_network=True,
            huge_tree=False,
            remove_comments=True,
            remove_pis=True,
        )
        _local.parser = parser
    return parser


# "<!DOCTYPE" as bytes in the encodings an XML body may use (UTF-8 and compatible, UTF-16, UTF-32)
_DOCTYPE_WIDE = tuple("<!DOCTYPE".encode(enc) for enc in ("utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be"))


def _has_doctype(data: bytes) -> bool:
    if b"<!DOCTYPE" in data:
        return True
    # UTF-16/32 bodies have a NUL byte among the first four (BOM or "<"); only then look for wide forms
    return b"\x00" in data[:4] and any(pattern in data for pattern in _DOCTYPE_WIDE)


def _secure_parse(data: bytes, what: str) -> etree._Element:
    if _has_doctype(data):
        raise _doctype_error(what)
    try:
        root = etree.fromstring(data, _parser())
    except etree.XMLSyntaxError as exc:
        raise FhirError(400, "structure", f"{what} is not well-formed XML: {exc}") from None
    if root.getroottree().docinfo.doctype:  # e.g. a UTF-16 body the byte check above could not see
        raise _doctype_error(what)
    return root


def _doctype_error(what: str) -> FhirError:
    return FhirError(
        400, "security", f"{what} has a DOCTYPE declaration; DTDs and entities are not allowed in FHIR XML"
    )


class _ParseError(Exception):
    """Raised deep in the parser with the offending element; turned into a FhirError with its path."""

    def __init__(self, message: str, el: etree._Element) -> None:
        super().__init__(message)
        self.message = message
        self.el = el


def parse_xml(data: bytes) -> dict[str, Any]:
    """One FHIR resource (a Bundle included) in XML -> its FHIR JSON dict."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    root = _secure_parse(data, "The body")
    tag = root.tag
    if not tag.startswith(_F):
        ns = tag[1:].split("}", 1)[0] if tag.startswith("{") else "no namespace"
        raise FhirError(
            400,
            "structure",
            f"The root element '{etree.QName(tag).localname}' must be in the FHIR namespace {FHIR_NS} (found {ns})",
        )
    tables = _tables()
    table = tables.resource_tags.get(tag)
    name = tag[len(_F) :]
    if table is None:
        raise FhirError(
            400, "structure", f"Unknown resource type '{name}' (the root element must be an R4 resource)", name
        )
    try:
        return _parse_object(root, table, {"resourceType": name}, tables)
    except _ParseError as exc:
        path = _path_of(exc.el, tables)
        raise FhirError(400, "structure", f"{exc.message} (at {path})", path) from None


def _parse_object(el: etree._Element, table: _Table, out: dict[str, Any], tables: _Tables) -> dict[str, Any]:
    """A resource, complex type or backbone element: attributes, then child elements in document order."""
    for key, value in el.items():
        json_name = table.attrs.get(key)
        if json_name is not None:
            out[json_name] = value
        elif not key.startswith(_XSI):  # xsi:schemaLocation and friends carry no FHIR content
            raise _ParseError(f"Unknown attribute '{etree.QName(key).localname}' on {table.name}", el)
    text = el.text
    if text and not text.isspace():
        raise _ParseError(f"Text content is not allowed in {table.name}", el)
    seen: set[str] = set()
    for child in el:
        tag = child.tag
        tail = child.tail
        if tail and not tail.isspace():
            raise _ParseError(f"Text content is not allowed in {table.name}", el)
        c = table.by_tag.get(tag)
        if c is None:
            raise _ParseError(_unknown_message(tag, table), child)
        kind = c.kind
        if kind == _PRIM:
            attrs = child.items()
            if len(attrs) == 1 and attrs[0][0] == "value" and not len(child) and not child.text:
                # the common case, inlined: `<x value="..."/>`
                ext = None
                try:
                    value = c.conv(attrs[0][1])
                except ValueError as exc:
                    raise _ParseError(f"Invalid value for {c.type_name} element '{c.name}': {exc}", child) from None
            else:
                value, ext = _parse_primitive(child, c, tables)
        elif kind == _COMPLEX:
            value = _parse_object(child, c.table, {}, tables)  # type: ignore[arg-type]
            if not value:
                raise _ParseError(f"Element '{c.name}' has no content", child)
        elif kind == _RESOURCE:
            value = _parse_contained(child, tables)
        else:
            value = _xhtml_text(child)
        if c.is_list:
            items = out.get(c.name)
            if items is None:
                items = out[c.name] = []
            items.append(value)
            if kind == _PRIM:
                _align_companion(out, c.ext_name, len(items), ext)
        else:
            if c.slot in seen:
                raise _ParseError(_duplicate_message(c, table), child)
            seen.add(c.slot)
            if value is not None:
                out[c.name] = value
            if kind == _PRIM and ext is not None:
                out[c.ext_name] = ext
    return out


def _align_companion(out: dict[str, Any], key: str, count: int, ext: dict[str, Any] | None) -> None:
    """Keep `_given` aligned with `given` (null where an item has no id/extension); omit it if all null."""
    companion = out.get(key)
    if ext is not None:
        if companion is None:
            companion = out[key] = [None] * (count - 1)
        companion.append(ext)
    elif companion is not None:
        companion.append(None)


def _parse_primitive(el: etree._Element, c: _Child, tables: _Tables) -> tuple[Any, dict[str, Any] | None]:
    value: Any = None
    ext: dict[str, Any] | None = None
    for key, text in el.items():
        if key == "value":
            try:
                value = c.conv(text)
            except ValueError as exc:
                raise _ParseError(f"Invalid value for {c.type_name} element '{c.name}': {exc}", el) from None
        elif key == "id":
            ext = {"id": text}
        elif not key.startswith(_XSI):
            raise _ParseError(f"Unknown attribute '{etree.QName(key).localname}' on {c.type_name} '{c.name}'", el)
    text = el.text
    if text and not text.isspace():
        raise _ParseError(f"Text content is not allowed in '{c.name}': a primitive's value goes in @value", el)
    if len(el):
        extensions = []
        for child in el:
            tail = child.tail
            if tail and not tail.isspace():
                raise _ParseError(f"Text content is not allowed in '{c.name}'", el)
            if child.tag != _EXTENSION_TAG:
                raise _ParseError(
                    f"{_unknown_message(child.tag, None)}: a {c.type_name} may only hold extensions", child
                )
            extensions.append(_parse_object(child, tables.extension, {}, tables))
        if ext is None:
            ext = {}
        ext["extension"] = extensions
    if value is None and ext is None:
        raise _ParseError(f"Element '{c.name}' has neither a value nor extensions", el)
    return value, ext


def _parse_contained(el: etree._Element, tables: _Tables) -> dict[str, Any]:
    """`<contained><Medication>...</Medication></contained>` -> {"resourceType": "Medication", ...}."""
    if len(el.attrib):
        raise _ParseError(f"'{etree.QName(el).localname}' wraps a resource and takes no attributes", el)
    inner = None
    for child in el:
        if inner is not None:
            raise _ParseError(f"'{etree.QName(el).localname}' must hold exactly one resource", child)
        inner = child
    text = el.text
    if inner is None or (text and not text.isspace()) or (inner.tail and not inner.tail.isspace()):
        raise _ParseError(f"'{etree.QName(el).localname}' must hold exactly one resource element", el)
    table = tables.resource_tags.get(inner.tag)
    if table is None:
        raise _ParseError(f"'{etree.QName(inner).localname}' is not a FHIR resource type", inner)
    return _parse_object(inner, table, {"resourceType": table.name}, tables)


def _xhtml_text(el: etree._Element) -> str:
    """The narrative div as the JSON string form: `<div xmlns="http://www.w3.org/1999/xhtml">...</div>`."""
    if el.prefix is not None or el.nsmap != {None: XHTML_NS}:
        # lxml would copy the ancestors' namespace declarations (and a prefix) into the string
        el = _rebuild_xhtml(el)
    return etree.tostring(el, encoding="unicode", with_tail=False)


def _rebuild_xhtml(el: etree._Element) -> etree._Element:
    """A copy of the div with XHTML as the default namespace and no inherited declarations."""
    root = etree.Element(el.tag, dict(el.attrib), nsmap={None: XHTML_NS})
    root.text = el.text
    _copy_children(el, root)
    return root


def _copy_children(src: etree._Element, dst: etree._Element) -> None:
    for child in src:
        copy = etree.SubElement(dst, child.tag, dict(child.attrib))
        copy.text = child.text
        copy.tail = child.tail
        _copy_children(child, copy)


def _unknown_message(tag: str, table: _Table | None) -> str:
    qname = etree.QName(tag)
    where = f" in {table.name}" if table is not None else ""
    if qname.localname == "div" and table is not None and table.name == "Narrative":
        return f"The narrative div must be in the XHTML namespace {XHTML_NS}"
    if qname.namespace != FHIR_NS:
        return f"Element '{qname.localname}'{where} is not in the FHIR namespace {FHIR_NS} (found {qname.namespace})"
    return f"Unknown element '{qname.localname}'{where}"


def _duplicate_message(c: _Child, table: _Table) -> str:
    if c.name != c.slot:
        return f"Element '{c.slot}[x]' of {table.name} may appear only once ('{c.name}' is another one)"
    return f"Element '{c.name}' of {table.name} is not repeating but appears more than once"


def _path_of(el: etree._Element, tables: _Tables) -> str:
    """A FHIRPath-like location for error messages, computed only when something went wrong."""
    parts: list[str] = []
    node: etree._Element | None = el
    while node is not None:
        parent = node.getparent()
        tag = node.tag if isinstance(node.tag, str) else ""
        name = etree.QName(tag).localname if tag else "?"
        if parent is None:
            parts.append(name)
        elif not (tag in tables.resource_tags and parent.tag not in tables.resource_tags and len(parent) == 1):
            same = [s for s in parent if s.tag == tag]
            parts.append(f"{name}[{same.index(node)}]" if len(same) > 1 else name)
        node = parent
    return ".".join(reversed(parts))


# --- writing ---------------------------------------------------------------------------------------


class _WriteError(Exception):
    """Raised deep in the writer; each level on the way out prepends its step to the path."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        self.path: list[str] = []


_ORDER = attrgetter("order")
_ROOT_NS = f' xmlns="{FHIR_NS}"'


def to_xml(resource: dict[str, Any], pretty: bool = False) -> bytes:
    """A FHIR JSON dict -> FHIR XML (UTF-8 with an XML declaration); `pretty` indents by 2 spaces."""
    tables = _tables()
    rt = resource.get("resourceType") if isinstance(resource, dict) else None
    table = tables.resources.get(rt) if isinstance(rt, str) else None
    if table is None:
        raise FhirError(400, "structure", f"Not a FHIR resource: unknown resourceType {rt!r}", "resourceType")
    writer = _Writer(tables, pretty)
    writer.parts.append('<?xml version="1.0" encoding="UTF-8"?>' + writer.nl)
    try:
        writer.write_object(resource, table, table.name, _ROOT_NS, "")
    except _WriteError as exc:
        path = _join_path(table.name, exc.path)
        raise FhirError(400, "structure", f"{exc.message} (at {path})", path) from None
    except RecursionError:
        raise FhirError(400, "structure", "The resource is nested too deeply to write as XML") from None
    return "".join(writer.parts).encode("utf-8")


def _join_path(root: str, steps: list[str]) -> str:
    """`steps` were collected innermost first; index steps ("[0]") attach to the name before them."""
    path = root
    for step in reversed(steps):
        path += step if step[0] == "[" else "." + step
    return path


class _Writer:
    __slots__ = ("nl", "parts", "step", "tables")

    def __init__(self, tables: _Tables, pretty: bool) -> None:
        self.tables = tables
        self.parts: list[str] = []
        self.step = "  " if pretty else ""
        self.nl = "\n" if pretty else ""

    def write_object(self, obj: Any, table: _Table, tag: str, attrs: str, ind: str) -> None:
        if type(obj) is not dict:
            raise _WriteError(f"expected an object for {table.name}, got {_json_type(obj)}")
        kids: list[_Child] = []
        by_key = table.by_key
        for key, value in obj.items():
            c = by_key.get(key)
            if c is not None:
                # a primitive's value and its `_` companion are written together, once
                if key[0] != "_" or c.name not in obj:
                    kids.append(c)
            elif key in table.attrs:
                attrs += f' {key}="{self.attr_text(value, key)}"'
            elif not (key == "resourceType" and table.is_resource):
                err = _WriteError(f"Unknown property '{key}' in {table.name}")
                err.path.append(key)
                raise err
        parts = self.parts
        if not kids:
            parts.append(f"{ind}<{tag}{attrs}/>{self.nl}")
            return
        parts.append(f"{ind}<{tag}{attrs}>{self.nl}")
        if len(kids) > 1:
            kids.sort(key=_ORDER)  # XML wants definition order; JSON key order is arbitrary
        inner = ind + self.step
        prev_slot = ""
        for c in kids:
            if c.slot == prev_slot:
                err = _WriteError(f"Only one '{c.slot}[x]' may be present in {table.name}")
                err.path.append(c.name)
                raise err
            prev_slot = c.slot
            try:
                value = obj.get(c.name)
                if c.kind == _PRIM and not c.is_list and value is not None and c.ext_name not in obj:
                    # the common case, inlined: a single primitive with only a value
                    parts.append(f'{inner}<{c.name} value="{c.fmt(value)}"/>{self.nl}')
                elif c.kind == _COMPLEX and not c.is_list:
                    self.write_object(value, c.table, c.name, "", inner)  # type: ignore[arg-type]
                else:
                    self.write_child(obj, c, inner)
            except ValueError as exc:
                err = _WriteError(f"Invalid {c.type_name} value for '{c.name}': {exc}")
                err.path.append(c.name)
                raise err from None
            except _WriteError as exc:
                exc.path.append(c.name)
                raise
        parts.append(f"{ind}</{tag}>{self.nl}")

    def write_child(self, obj: dict[str, Any], c: _Child, ind: str) -> None:
        value = obj.get(c.name)
        if c.kind == _PRIM:
            if c.is_list:
                self.write_primitive_list(c, value, obj.get(c.ext_name), ind)
            else:
                self.write_primitive(c, value, obj.get(c.ext_name), ind)
            return
        items = self.as_items(c, value)
        for i, item in enumerate(items):
            try:
                if c.kind == _COMPLEX:
                    self.write_object(item, c.table, c.name, "", ind)  # type: ignore[arg-type]
                elif c.kind == _RESOURCE:
                    self.write_contained(c.name, item, ind)
                else:
                    self.write_xhtml(item, ind)
            except _WriteError as exc:
                if c.is_list:
                    exc.path.append(f"[{i}]")
                raise

    def as_items(self, c: _Child, value: Any) -> list[Any]:
        if c.is_list:
            if type(value) is not list or not value:
                raise _WriteError(f"'{c.name}' must be a non-empty array, got {_json_type(value)}")
            return value
        if type(value) is list:
            raise _WriteError(f"'{c.name}' is not repeating, but got an array")
        return [value]

    def write_primitive_list(self, c: _Child, values: Any, companions: Any, ind: str) -> None:
        if values is None:
            values = [None] * len(companions) if type(companions) is list else companions
        if type(values) is not list or not values:
            raise _WriteError(f"'{c.name}' must be a non-empty array, got {_json_type(values)}")
        if companions is None:
            companions = [None] * len(values)
        elif type(companions) is not list or len(companions) != len(values):
            raise _WriteError(f"'{c.ext_name}' must be an array as long as '{c.name}'")
        for i, (value, ext) in enumerate(zip(values, companions, strict=True)):
            try:
                self.write_primitive(c, value, ext, ind)
            except _WriteError as exc:
                exc.path.append(f"[{i}]")
                raise

    def write_primitive(self, c: _Child, value: Any, ext: Any, ind: str) -> None:
        attrs = ""
        extensions = None
        if ext is not None:
            if type(ext) is not dict:
                raise _WriteError(f"'{c.ext_name}' must be an object, got {_json_type(ext)}")
            for key, item in ext.items():
                if key == "id":
                    attrs = f' id="{self.attr_text(item, c.ext_name + ".id")}"'
                elif key == "extension":
                    if type(item) is not list or not item:
                        raise _WriteError(f"'{c.ext_name}.extension' must be a non-empty array")
                    extensions = item
                else:
                    raise _WriteError(f"Unknown property '{key}' in '{c.ext_name}' (only id and extension)")
        if value is not None:
            try:
                attrs += f' value="{c.fmt(value)}"'
            except ValueError as exc:
                raise _WriteError(f"Invalid {c.type_name} value for '{c.name}': {exc}") from None
        elif ext is None:
            raise _WriteError(f"'{c.name}' is null and has no '{c.ext_name}'")
        if extensions is None:
            self.parts.append(f"{ind}<{c.name}{attrs}/>{self.nl}")
            return
        self.parts.append(f"{ind}<{c.name}{attrs}>{self.nl}")
        inner = ind + self.step
        for i, x in enumerate(extensions):
            try:
                self.write_object(x, self.tables.extension, "extension", "", inner)
            except _WriteError as exc:
                exc.path.append(f"extension[{i}]")
                raise
        self.parts.append(f"{ind}</{c.name}>{self.nl}")

    def write_contained(self, tag: str, resource: Any, ind: str) -> None:
        rt = resource.get("resourceType") if type(resource) is dict else None
        table = self.tables.resources.get(rt) if isinstance(rt, str) else None
        if table is None:
            raise _WriteError(f"'{tag}' must hold a resource with a known resourceType, got {rt!r}")
        self.parts.append(f"{ind}<{tag}>{self.nl}")
        self.write_object(resource, table, table.name, "", ind + self.step)
        self.parts.append(f"{ind}</{tag}>{self.nl}")

    def write_xhtml(self, div: Any, ind: str) -> None:
        if type(div) is not str:
            raise _WriteError(f"the narrative div must be a string, got {_json_type(div)}")
        try:
            el = _secure_parse(div.encode("utf-8"), "The narrative div")
        except FhirError as exc:
            raise _WriteError(exc.diagnostics) from None
        if el.tag != _XHTML_DIV:
            raise _WriteError(f"the narrative must be a <div> in the XHTML namespace {XHTML_NS}")
        self.parts.append(f"{ind}{etree.tostring(el, encoding='unicode')}{self.nl}")

    def attr_text(self, value: Any, name: str) -> str:
        if type(value) is not str or not value:
            raise _WriteError(f"'{name}' must be a non-empty string, got {_json_type(value)}")
        try:
            return _escape(value)
        except ValueError as exc:
            raise _WriteError(f"'{name}': {exc}") from None
