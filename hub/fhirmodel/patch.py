"""The two PATCH formats of FHIR R4 (http://hl7.org/fhir/R4/http.html#patch) as pure functions on resource JSON.

* `apply_json_patch(resource, operations)`: RFC 6902 JSON Patch, applied with the `jsonpatch` library.
* `apply_fhirpath_patch(resource, parameters)`: FHIRPath Patch (http://hl7.org/fhir/R4/fhirpatch.html), a
  Parameters resource with one `operation` parameter per change.

Both return a new dict and never touch their arguments. Failures are `FhirError`s:

* 400 (`structure` / `invalid`): the patch document itself is malformed (not a list of operation objects, not a
  Parameters resource, a missing or unknown part, an unknown operation type, a path that is not an expression).
* 422 (`processing`): a well-formed patch that cannot be applied here (no match, more than one match, an index out
  of range, a failing JSON Patch `test`); 422 (`invalid`) when the value does not fit the element (wrong type, a
  second value for a single-valued element) or the patch changes `resourceType` or `id`; 422 (`not-supported`) for a
  FHIRPath expression outside the subset below.

Operations are numbered from 0 in diagnostics, as in `Parameters.parameter[0]`.

FHIRPath subset. The patch needs *locations* (container and key or index), which a FHIRPath evaluator does not
give, so paths are walked here. An expression is a chain, starting with the resource type (or directly with an
element name, the resource being the context), of:

* `.name`: an element; a choice element by its name (`value`, matching whichever `value[x]` is present) or by its
  JSON name (`valueQuantity`); backticked names are allowed. Names are checked against the R4 definitions: an
  unknown name is an error rather than an empty result, so a typo cannot silently turn a delete into a no-op.
* `[n]`: the n-th item of the collection so far (FHIRPath semantics: over the whole collection, not per parent).
* `first()`, `last()`, `single()`, `ofType(Type)`, `extension('url')`.
* `where(criteria)`: the criteria is any FHIRPath expression, evaluated by fhirpathpy on each candidate (typed with
  the R4 model, `%resource` bound to the resource being patched).

Anything else (operators such as `|`, other functions, `resolve()`, `$this` / `%var` at the start) is refused.

Operations. `add`, `replace` and `move`'s list parent need exactly one match; `delete` accepts none (a no-op) but
not several. `add` appends to a repeating element and refuses a single-valued one that is already present (any
variant of a choice counts). `insert` and `move` name the list itself (the path ends with the repeating element's
name, e.g. `Patient.name[0].given`) and its parent must match exactly one element; `insert` into an absent list at
index 0 creates it; `move` removes the item at `source` and then inserts it at `destination`. A value given as
parts builds any complex or backbone type (children named by element name, a choice by its base name with a typed
value[x]). Primitive values may be given as any primitive with the same JSON form (valueString for a date or
code); their lexical form is left to the caller's validation of the result.

Primitive companions (`_name`). A primitive element is its value plus its `_name` object (id, extensions) taken
together, as FHIRPath sees it: a node exists when either is present; `delete` removes both (for a repeating
primitive, both array items, so `given` and `_given` stay aligned); `replace` replaces both, taking the companion
from the value part's `_valueX` when given; `.extension` / `.id` under a primitive navigate into the companion, and
`add` there creates it. After every operation empty objects, empty arrays, null single values and items that are
null in both `name` and `_name` are pruned, so the result stays FHIR JSON without empty content.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import fhirpathpy
import jsonpatch
import jsonpointer

from hub.fhirmodel.structure import Element, TypeInfo, structure
from hub.formats.outcome import FhirError

__all__ = ["apply_fhirpath_patch", "apply_json_patch"]


# --------------------------------------------------------------------------------------------- common


def _check_identity(before: dict[str, Any], after: Any) -> dict[str, Any]:
    """A patch edits a resource in place: it may not turn it into another resource or another id."""
    if not isinstance(after, dict):
        raise FhirError(422, "invalid", "The patch does not result in a resource (JSON object)")
    if after.get("resourceType") != before.get("resourceType"):
        raise FhirError(
            422,
            "invalid",
            f"The patch changes resourceType from {before.get('resourceType')!r} "
            f"to {after.get('resourceType')!r}; a patch cannot change the type of a resource",
        )
    if after.get("id") != before.get("id"):
        raise FhirError(
            422,
            "invalid",
            f"The patch changes the resource id from {before.get('id')!r} to "
            f"{after.get('id')!r}; a patch cannot change the id of a resource",
        )
    return after


def _require_resource(resource: Any) -> None:
    # The caller hands in a stored resource; anything else is a programming error, not a client error.
    if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
        raise TypeError("patch target must be a resource dict with a resourceType")


# ----------------------------------------------------------------------------------------- JSON Patch

_JSON_PATCH_OPS = {"add", "remove", "replace", "move", "copy", "test"}


def apply_json_patch(resource: dict[str, Any], operations: list[Any]) -> dict[str, Any]:
    """Apply an RFC 6902 JSON Patch document to a copy of `resource`."""
    _require_resource(resource)
    if not isinstance(operations, list):
        raise FhirError(400, "structure", "A JSON Patch document must be a JSON array of operation objects")
    for i, op in enumerate(operations):
        _check_json_patch_op(i, op)
    # Copy the operations too: jsonpatch inserts `value` objects as they are, which would alias the caller's data.
    doc: Any = copy.deepcopy(resource)
    for i, op in enumerate(copy.deepcopy(operations)):
        try:
            doc = jsonpatch.JsonPatch([op]).apply(doc, in_place=True)
        except jsonpatch.InvalidJsonPatch as exc:
            raise FhirError(400, "invalid", f"{_json_op_label(i, op)}: {exc}") from exc
        except jsonpatch.JsonPatchTestFailed as exc:
            raise FhirError(422, "processing", f"{_json_op_label(i, op)}: test failed: {_short(exc)}") from exc
        except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as exc:
            raise FhirError(422, "processing", f"{_json_op_label(i, op)}: cannot be applied: {_short(exc)}") from exc
    return _check_identity(resource, doc)


def _check_json_patch_op(i: int, op: Any) -> None:
    """Reject malformed operations up front (400), so that errors while applying are all 422."""
    if not isinstance(op, dict):
        raise FhirError(400, "structure", f"JSON Patch operation {i}: must be a JSON object, not {_kind(op)}")
    name = op.get("op")
    if not isinstance(name, str) or name not in _JSON_PATCH_OPS:
        raise FhirError(
            400,
            "invalid",
            f"JSON Patch operation {i}: 'op' must be one of {', '.join(sorted(_JSON_PATCH_OPS))}, not {name!r}",
        )
    members = ["path", "from"] if name in ("move", "copy") else ["path"]
    for member in members:
        pointer = op.get(member)
        if not isinstance(pointer, str):
            raise FhirError(400, "invalid", f"{_json_op_label(i, op)}: '{member}' must be a JSON Pointer string")
        try:
            jsonpointer.JsonPointer(pointer)
        except jsonpointer.JsonPointerException as exc:
            raise FhirError(
                400, "invalid", f"{_json_op_label(i, op)}: '{member}' is not a JSON Pointer: {exc}"
            ) from exc
    if name in ("add", "replace", "test") and "value" not in op:
        raise FhirError(400, "invalid", f"{_json_op_label(i, op)}: a '{name}' operation needs a 'value'")


def _json_op_label(i: int, op: dict[str, Any]) -> str:
    return f"JSON Patch operation {i} ({op.get('op')} {op.get('path')!r})"


def _short(exc: Exception) -> str:
    # jsonpatch/jsonpointer messages may embed the whole document; keep diagnostics readable.
    text = str(exc)
    cut = text.find(" in {")
    text = text[:cut] if cut >= 0 else text
    return text if len(text) <= 200 else text[:200] + "..."


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}.get(type(value), "a number")


# ------------------------------------------------------------------------------- FHIRPath Patch: input

_OPERATION_TYPES = ("add", "insert", "delete", "replace", "move")
_PART_NAMES = {"type", "path", "name", "value", "index", "source", "destination"}
_INTEGER_KEYS = ("valueInteger", "valueUnsignedInt", "valuePositiveInt")


class _Problem(Exception):
    """Raised while applying one operation; the loop adds which operation it was."""

    def __init__(self, message: str, code: str = "processing", status: int = 422) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status


@dataclass(slots=True)
class _Value:
    """The `value` of an operation: a typed value[x] / resource, or parts describing an element's children."""

    type: str | None  # FHIR type of value[x] or the resource's type; None when given as parts
    json: Any = None
    companion: Any = None  # the `_valueX` object of a primitive
    parts: list[tuple[str, _Value]] | None = None


@dataclass(slots=True)
class _Operation:
    number: int
    type: str
    path: str
    name: str | None = None
    value: _Value | None = None
    index: int | None = None
    source: int | None = None
    destination: int | None = None

    @property
    def label(self) -> str:
        return f"FHIRPath Patch operation {self.number} ({self.type} {self.path!r})"


def _malformed(where: str, message: str, code: str = "invalid") -> FhirError:
    return FhirError(400, code, f"{where}: {message}", where)


def _parse_parameters(parameters: Any) -> list[_Operation]:
    if not isinstance(parameters, dict) or parameters.get("resourceType") != "Parameters":
        raise FhirError(400, "structure", "A FHIRPath Patch must be a Parameters resource")
    params = parameters.get("parameter", [])
    if not isinstance(params, list):
        raise _malformed("Parameters.parameter", "must be an array", "structure")
    return [_parse_operation(i, p) for i, p in enumerate(params)]


def _parse_operation(i: int, param: Any) -> _Operation:
    where = f"Parameters.parameter[{i}]"
    if not isinstance(param, dict):
        raise _malformed(where, "must be an object", "structure")
    if param.get("name") != "operation":
        raise _malformed(where, f"a FHIRPath Patch parameter must be named 'operation', not {param.get('name')!r}")
    parts = _named_parts(where, param.get("part"))
    op_type = _text_part(where, parts, "type")
    if op_type not in _OPERATION_TYPES:
        raise _malformed(where, f"unknown operation type {op_type!r}; expected one of {', '.join(_OPERATION_TYPES)}")
    op = _Operation(i, op_type, _text_part(where, parts, "path"))
    if op_type == "add":
        op.name = _text_part(where, parts, "name")
    if op_type in ("add", "insert", "replace"):
        if "value" not in parts:
            raise _malformed(where, f"a '{op_type}' operation needs a 'value' part")
        op.value = _parse_value(f"{where}.part[value]", parts["value"])
    if op_type == "insert":
        op.index = _integer_part(where, parts, "index")
    if op_type == "move":
        op.source = _integer_part(where, parts, "source")
        op.destination = _integer_part(where, parts, "destination")
    return op


def _named_parts(where: str, parts: Any) -> dict[str, dict[str, Any]]:
    if not isinstance(parts, list) or not parts:
        raise _malformed(where, "an operation needs its parts (type, path, ...)", "structure")
    named: dict[str, dict[str, Any]] = {}
    for j, part in enumerate(parts):
        name = part.get("name") if isinstance(part, dict) else None
        if not isinstance(name, str):
            raise _malformed(f"{where}.part[{j}]", "a part must be an object with a name", "structure")
        if name not in _PART_NAMES:
            raise _malformed(f"{where}.part[{j}]", f"unknown part {name!r}; expected {', '.join(sorted(_PART_NAMES))}")
        if name in named:
            raise _malformed(f"{where}.part[{j}]", f"part {name!r} is given more than once")
        named[name] = part
    return named


def _text_part(where: str, parts: dict[str, dict[str, Any]], name: str) -> str:
    part = parts.get(name)
    if part is None:
        raise _malformed(where, f"the '{name}' part is missing")
    # type is a code and path/name are strings; accept either, as clients mix them up.
    text = part.get("valueCode", part.get("valueString"))
    if not isinstance(text, str) or not text.strip():
        raise _malformed(where, f"the '{name}' part needs a valueString or valueCode")
    return text.strip()


def _integer_part(where: str, parts: dict[str, dict[str, Any]], name: str) -> int:
    part = parts.get(name)
    if part is None:
        raise _malformed(where, f"the '{name}' part is missing")
    for key in _INTEGER_KEYS:
        number = part.get(key)
        if isinstance(number, int) and not isinstance(number, bool):
            return number
    raise _malformed(where, f"the '{name}' part needs a valueInteger")


def _parse_value(where: str, part: dict[str, Any]) -> _Value:
    """value[x], a resource, or nested parts; exactly one of them."""
    typed = sorted({k.lstrip("_") for k in part if k.lstrip("_").startswith("value") and k.lstrip("_") != "value"})
    sources = len(typed) + ("resource" in part) + ("part" in part)
    if sources != 1:
        problem = "has no value[x], resource or part" if sources == 0 else "has more than one value"
        raise _malformed(where, problem)
    if typed:
        key = typed[0]
        type_name = _value_type(key[len("value") :])
        if type_name is None:
            raise _malformed(where, f"{key} is not a FHIR data type")
        return _Value(type_name, part.get(key), part.get("_" + key))
    if "resource" in part:
        res = part["resource"]
        if not isinstance(res, dict) or not structure().is_resource_type(str(res.get("resourceType"))):
            raise _malformed(where, "resource must be a FHIR resource")
        return _Value(res["resourceType"], res)
    return _Value(None, parts=_parse_value_parts(where, part["part"]))


def _parse_value_parts(where: str, parts: Any) -> list[tuple[str, _Value]]:
    if not isinstance(parts, list) or not parts:
        raise _malformed(where, "'part' must be a non-empty array", "structure")
    out: list[tuple[str, _Value]] = []
    for j, sub in enumerate(parts):
        name = sub.get("name") if isinstance(sub, dict) else None
        if not isinstance(name, str) or not name:
            raise _malformed(f"{where}.part[{j}]", "a part must be an object with a name", "structure")
        out.append((name, _parse_value(f"{where}.part[{j}]", sub)))
    return out


def _value_type(suffix: str) -> str | None:
    """`Date` -> "date", `CodeableConcept` -> "CodeableConcept"; None when no such data type."""
    for candidate in (suffix, suffix[:1].lower() + suffix[1:]):
        info = structure().get(candidate)
        if info is not None and info.kind in ("primitive", "complex"):
            return candidate
    return None


# ------------------------------------------------------------------ FHIRPath Patch: path evaluation


@dataclass(slots=True)
class _Node:
    """A location in the resource: `owner[key]` or `owner[key][index]`."""

    owner: dict[str, Any]
    key: str
    index: int | None
    type: str  # FHIR type of the value; a resource's own resourceType for resources
    element: Element | None  # None for the resource itself
    owner_type: str  # the type `element` belongs to

    @property
    def value(self) -> Any:
        return _item(self.owner.get(self.key), self.index)

    @property
    def companion(self) -> Any:
        return _item(self.owner.get("_" + self.key), self.index)

    @property
    def is_primitive(self) -> bool:
        return _type_info(self.type).is_primitive


@dataclass(slots=True)
class _Step:
    kind: str  # name | index | function
    name: str = ""
    argument: str = ""
    index: int = 0


def _item(value: Any, index: int | None) -> Any:
    if index is None:
        return value
    return value[index] if isinstance(value, list) and index < len(value) else None


def _type_info(name: str) -> TypeInfo:
    info = structure().get(name)
    if info is None:
        raise _Problem(f"unknown FHIR type {name!r}", "invalid")
    return info


def _derives(type_name: str, base: str) -> bool:
    current: str | None = type_name
    while current is not None:
        if current == base:
            return True
        info = structure().get(current)
        current = info.base if info is not None else None
    return False


_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SUBSET = "supported: .name, [n], where(...), first(), last(), single(), ofType(T), extension('url')"


def _parse_path(text: str) -> list[_Step]:
    """Split a path into steps; refuse what is not a chain of the supported invocations."""
    steps: list[_Step] = []
    i, expect_name = 0, True
    while i < len(text):
        char = text[i]
        if char.isspace():
            i += 1
        elif expect_name:
            step, i = _read_invocation(text, i)
            steps.append(step)
            expect_name = False
        elif char == ".":
            i, expect_name = i + 1, True
        elif char == "[":
            end = _closing(text, i, "[", "]")
            inner = text[i + 1 : end].strip()
            if not re.fullmatch(r"\d+", inner):
                raise _Problem(f"indexer [{inner}] is not supported (only [integer]); {_SUBSET}", "not-supported")
            steps.append(_Step("index", index=int(inner)))
            i = end + 1
        else:
            raise _Problem(
                f"{text[i:]!r} is outside the FHIRPath subset this server can patch with; {_SUBSET}", "not-supported"
            )
    if expect_name:
        raise _Problem("the path is empty or ends with '.'", "invalid", 400)
    return steps


def _read_invocation(text: str, i: int) -> tuple[_Step, int]:
    if text[i] == "`":
        end = text.find("`", i + 1)
        if end < 0:
            raise _Problem("unterminated `name`", "invalid", 400)
        return _Step("name", text[i + 1 : end]), end + 1
    match = _IDENTIFIER.match(text, i)
    if match is None:
        raise _Problem(
            f"{text[i:]!r} is outside the FHIRPath subset this server can patch with; {_SUBSET}", "not-supported"
        )
    j = match.end()
    while j < len(text) and text[j].isspace():
        j += 1
    if j < len(text) and text[j] == "(":
        end = _closing(text, j, "(", ")")
        return _Step("function", match.group(), text[j + 1 : end].strip()), end + 1
    return _Step("name", match.group()), match.end()


def _closing(text: str, start: int, opening: str, closing: str) -> int:
    """Index of the bracket closing the one at `start`, skipping string literals."""
    depth, i = 0, start
    while i < len(text):
        char = text[i]
        if char in "'`\"":
            i = _after_quoted(text, i)
            continue
        depth += (char == opening) - (char == closing)
        if depth == 0:
            return i
        i += 1
    raise _Problem(f"unbalanced '{opening}' in path", "invalid", 400)


def _after_quoted(text: str, i: int) -> int:
    quote, i = text[i], i + 1
    while i < len(text):
        if text[i] == "\\":
            i += 2
        elif text[i] == quote:
            return i + 1
        else:
            i += 1
    raise _Problem("unterminated string literal in path", "invalid", 400)


class _Evaluator:
    """Evaluates supported paths on the working copy of the resource, yielding locations."""

    def __init__(self, resource: dict[str, Any]) -> None:
        self.holder = {"resource": resource}  # gives the resource itself a location
        self.resource = resource
        self.root = _Node(self.holder, "resource", None, resource["resourceType"], None, "")

    def steps(self, path: str) -> list[_Step]:
        """The steps after the starting resource type (FHIRPath also allows starting with an element name)."""
        steps = _parse_path(path)
        first = steps[0]
        if first.kind != "name":
            raise _Problem(f"a path must start with the resource type or an element name; {_SUBSET}", "not-supported")
        info = structure().get(first.name)
        if info is not None and info.kind == "resource":
            if not _derives(self.root.type, first.name):
                raise _Problem(f"the path is for {first.name}, but the resource is a {self.root.type}")
            return steps[1:]
        return steps

    def select(self, steps: list[_Step]) -> list[_Node]:
        nodes = [self.root]
        for step in steps:
            nodes = self._step(nodes, step)
        return nodes

    def _step(self, nodes: list[_Node], step: _Step) -> list[_Node]:
        if step.kind == "index":
            return nodes[step.index : step.index + 1]
        if step.kind == "name":
            return [child for node in nodes for child in self.children(node, step.name)]
        function = _FUNCTIONS.get(step.name)
        if function is None:
            raise _Problem(f"function {step.name}() is not supported in a patch path; {_SUBSET}", "not-supported")
        return function(self, nodes, step.argument)

    def children(self, node: _Node, name: str) -> list[_Node]:
        if node.is_primitive and name not in ("id", "extension"):
            raise _Problem(f"a primitive ({node.type}) has no element {name!r}", "invalid")
        container, container_type = _container(node, create=False)
        if container is None:
            return []
        out: list[_Node] = []
        for element in _elements_named(container_type, name, container):
            out.extend(_property_nodes(container, container_type, element))
        return out

    def matches(self, node: _Node, criteria: str) -> bool:
        if node.value is None:
            return False  # a primitive with only extensions has no value to test
        try:
            found = fhirpathpy.evaluate(
                node.value,
                {"base": node.type, "expression": f"where({criteria})"},
                {"resource": self.resource, "rootResource": self.resource},
                _r4_model(),
            )
        except Exception as exc:  # fhirpathpy raises plain Exception for syntax and evaluation errors alike
            raise _Problem(f"cannot evaluate where({criteria}): {exc}", "invalid") from exc
        return bool(found)


@lru_cache(maxsize=1)
def _r4_model() -> dict[str, Any]:
    from fhirpathpy.models import models  # loads every model's JSON: only when a where() needs it

    return dict(models["r4"])


def _elements_named(type_name: str, name: str, container: dict[str, Any]) -> list[Element]:
    """The element(s) `name` means on `type_name`: itself, or the present variant(s) of a choice."""
    info = _type_info(type_name)
    element = info.elements.get(name)
    if element is not None:
        return [element]
    variants = info.by_base_name.get(name)
    if variants and variants[0].is_choice:
        return [v for v in variants if v.name in container or "_" + v.name in container]
    raise _Problem(f"{type_name} has no element {name!r}", "invalid")


def _property_nodes(owner: dict[str, Any], owner_type: str, element: Element) -> list[_Node]:
    key = element.name
    value, companion = owner.get(key), owner.get("_" + key)
    if value is None and companion is None:
        return []
    if not element.is_list:
        return [_Node(owner, key, None, _actual_type(element, value), element, owner_type)]
    size = max(len(value) if isinstance(value, list) else 0, len(companion) if isinstance(companion, list) else 0)
    nodes = [_Node(owner, key, i, _actual_type(element, _item(value, i)), element, owner_type) for i in range(size)]
    return [n for n in nodes if n.value is not None or n.companion is not None]


def _actual_type(element: Element, value: Any) -> str:
    # A contained / entry resource is typed by its own resourceType, not the abstract "Resource".
    if element.type == "Resource" and isinstance(value, dict) and isinstance(value.get("resourceType"), str):
        return str(value["resourceType"])
    return element.type


def _container(node: _Node, create: bool) -> tuple[dict[str, Any] | None, str]:
    """The object holding `node`'s children: the value itself, or a primitive's `_name` companion."""
    if not node.is_primitive:
        value = node.value
        return (value if isinstance(value, dict) else None), node.type
    companion = node.companion
    if companion is None and create:
        companion = {}
        _store(node.owner, "_" + node.key, node.index, companion)
    return (companion if isinstance(companion, dict) else None), "Element"


def _store(owner: dict[str, Any], key: str, index: int | None, value: Any) -> None:
    if index is None:
        owner[key] = value
        return
    items = owner.get(key)
    items = items if isinstance(items, list) else []
    items.extend([None] * (index + 1 - len(items)))
    items[index] = value
    owner[key] = items


def _fn_first(ev: _Evaluator, nodes: list[_Node], arg: str) -> list[_Node]:
    _no_argument("first", arg)
    return nodes[:1]


def _fn_last(ev: _Evaluator, nodes: list[_Node], arg: str) -> list[_Node]:
    _no_argument("last", arg)
    return nodes[-1:]


def _fn_single(ev: _Evaluator, nodes: list[_Node], arg: str) -> list[_Node]:
    _no_argument("single", arg)
    if len(nodes) > 1:
        raise _Problem(f"single() found {len(nodes)} elements")
    return nodes


def _fn_where(ev: _Evaluator, nodes: list[_Node], arg: str) -> list[_Node]:
    if not arg:
        raise _Problem("where() needs criteria", "invalid", 400)
    return [node for node in nodes if ev.matches(node, arg)]


def _fn_of_type(ev: _Evaluator, nodes: list[_Node], arg: str) -> list[_Node]:
    type_name = arg.strip("`").removeprefix("FHIR.")
    if not _IDENTIFIER.fullmatch(type_name) or structure().get(type_name) is None:
        raise _Problem(f"ofType({arg}): not a FHIR type", "invalid")
    return [node for node in nodes if _derives(node.type, type_name)]


def _fn_extension(ev: _Evaluator, nodes: list[_Node], arg: str) -> list[_Node]:
    match = re.fullmatch(r"'((?:[^'\\]|\\.)*)'", arg)
    if match is None:
        raise _Problem("extension() needs a url string literal, e.g. extension('http://...')", "not-supported")
    url = match.group(1).replace("\\'", "'")
    found = [child for node in nodes for child in ev.children(node, "extension")]
    return [node for node in found if isinstance(node.value, dict) and node.value.get("url") == url]


def _no_argument(name: str, arg: str) -> None:
    if arg:
        raise _Problem(f"{name}() takes no arguments", "invalid", 400)


_FUNCTIONS: dict[str, Callable[[_Evaluator, list[_Node], str], list[_Node]]] = {
    "first": _fn_first,
    "last": _fn_last,
    "single": _fn_single,
    "where": _fn_where,
    "ofType": _fn_of_type,
    "extension": _fn_extension,
}


# ------------------------------------------------------------------ FHIRPath Patch: operations


def apply_fhirpath_patch(resource: dict[str, Any], parameters: dict[str, Any]) -> dict[str, Any]:
    """Apply a FHIRPath Patch (a Parameters resource) to a copy of `resource`, operations in order."""
    _require_resource(resource)
    operations = _parse_parameters(parameters)
    work = copy.deepcopy(resource)
    for op in operations:
        try:
            _APPLY[op.type](_Evaluator(work), op)
        except _Problem as problem:
            raise FhirError(
                problem.status, problem.code, f"{op.label}: {problem.message}", f"Parameters.parameter[{op.number}]"
            ) from problem
        _prune(work)
    return _check_identity(resource, work)


def _one(nodes: list[_Node], what: str, purpose: str) -> _Node:
    """`what` describes the path for the message, e.g. "'Patient.name'"."""
    if not nodes:
        raise _Problem(f"no element matches {what} ({purpose} needs exactly one)")
    if len(nodes) > 1:
        raise _Problem(f"{len(nodes)} elements match {what} ({purpose} needs exactly one)")
    return nodes[0]


def _op_add(ev: _Evaluator, op: _Operation) -> None:
    assert op.name is not None and op.value is not None  # guaranteed by _parse_operation
    target = _one(ev.select(ev.steps(op.path)), repr(op.path), "add")
    container, container_type = _container(target, create=True)
    if container is None:
        raise _Problem(f"cannot add to {op.path!r}: it is not an element with children", "invalid")
    element = _resolve_element(container_type, op.name, op.value)
    json_value, companion = _build(element, op.value)
    if element.is_list:
        _insert_item(container, element.name, None, json_value, companion)
        return
    present = [v.name for v in _variants(container_type, element) if v.name in container or "_" + v.name in container]
    if present:
        raise _Problem(
            f"{container_type}.{present[0]} already has a value and is not repeating; use replace", "invalid"
        )
    _set_single(container, element.name, json_value, companion)


def _op_insert(ev: _Evaluator, op: _Operation) -> None:
    assert op.value is not None and op.index is not None
    container, _, element = _list_location(ev, op)
    json_value, companion = _build(element, op.value)
    size = _list_size(container, element.name)
    if not 0 <= op.index <= size:
        raise _Problem(f"index {op.index} is out of range: the list has {size} item(s), so 0..{size} is allowed")
    _insert_item(container, element.name, op.index, json_value, companion)


def _op_move(ev: _Evaluator, op: _Operation) -> None:
    assert op.source is not None and op.destination is not None
    container, _, element = _list_location(ev, op)
    size = _list_size(container, element.name)
    for what, position in (("source", op.source), ("destination", op.destination)):
        if not 0 <= position < size:
            raise _Problem(f"{what} {position} is out of range: the list has {size} item(s)")
    for key in (element.name, "_" + element.name):
        items = container.get(key)
        if isinstance(items, list):
            items.extend([None] * (size - len(items)))  # keep a shorter `_name` array aligned
            items.insert(op.destination, items.pop(op.source))


def _op_replace(ev: _Evaluator, op: _Operation) -> None:
    assert op.value is not None
    node = _one(ev.select(ev.steps(op.path)), repr(op.path), "replace")
    if node.element is None:
        raise _Problem("cannot replace the resource itself; use PUT (update)", "invalid")
    element = node.element
    if element.is_choice:  # the new value may be another variant: valueString replacing valueQuantity
        element = _resolve_element(node.owner_type, element.base_name, op.value)
    json_value, companion = _build(element, op.value)
    if node.index is None:
        if element.name != node.key:  # another choice variant: drop the old one
            node.owner.pop(node.key, None)
            node.owner.pop("_" + node.key, None)
        _assign(node.owner, element.name, json_value)
        _assign(node.owner, "_" + element.name, companion)
        return
    _store(node.owner, node.key, node.index, json_value)
    if companion is not None or isinstance(node.owner.get("_" + node.key), list):
        _store(node.owner, "_" + node.key, node.index, copy.deepcopy(companion))


def _op_delete(ev: _Evaluator, op: _Operation) -> None:
    nodes = ev.select(ev.steps(op.path))
    if not nodes:
        return  # the spec: delete the element "if found"
    node = _one(nodes, repr(op.path), "delete")
    if node.element is None:
        raise _Problem("cannot delete the resource itself; use DELETE", "invalid")
    if node.index is None:
        node.owner.pop(node.key, None)
        node.owner.pop("_" + node.key, None)
        return
    for key in (node.key, "_" + node.key):
        items = node.owner.get(key)
        if isinstance(items, list) and node.index < len(items):
            del items[node.index]


_APPLY: dict[str, Callable[[_Evaluator, _Operation], None]] = {
    "add": _op_add,
    "insert": _op_insert,
    "delete": _op_delete,
    "replace": _op_replace,
    "move": _op_move,
}


def _list_location(ev: _Evaluator, op: _Operation) -> tuple[dict[str, Any], str, Element]:
    """insert/move name a list: the path must end in a repeating element's name, under exactly one parent."""
    steps = ev.steps(op.path)
    if not steps or steps[-1].kind != "name":
        raise _Problem(
            f"{op.type} needs the path of a list, ending with the element name (e.g. Patient.identifier)", "invalid"
        )
    parent = _one(ev.select(steps[:-1]), f"the parent of the list {op.path!r}", op.type)
    container, container_type = _container(parent, create=op.type == "insert")
    info = _type_info(container_type)
    element = info.elements.get(steps[-1].name)
    if element is None or not element.is_list:
        what = "is not a repeating element" if element is not None else "is not an element"
        raise _Problem(f"{container_type}.{steps[-1].name} {what}; {op.type} works on lists", "invalid")
    if container is None:
        raise _Problem(f"no element matches {op.path!r}")
    return container, container_type, element


def _list_size(container: dict[str, Any], key: str) -> int:
    values, companions = container.get(key), container.get("_" + key)
    return max(len(values) if isinstance(values, list) else 0, len(companions) if isinstance(companions, list) else 0)


def _insert_item(container: dict[str, Any], key: str, index: int | None, value: Any, companion: Any) -> None:
    """Insert (or append, index None) into `key`, keeping a `_key` companion array aligned."""
    size = _list_size(container, key)
    position = size if index is None else index
    for name, item in ((key, value), ("_" + key, companion)):
        items = container.get(name)
        if items is None and item is None:
            continue
        if items is not None and not isinstance(items, list):
            raise _Problem(f"the resource has a non-array value for repeating element {name!r}", "invalid")
        items = list(items or [])
        items.extend([None] * (size - len(items)))
        items.insert(position, item)
        container[name] = items


def _set_single(container: dict[str, Any], key: str, value: Any, companion: Any) -> None:
    if value is not None:
        container[key] = value
    if companion is not None:
        container["_" + key] = companion


# ------------------------------------------------------------------ FHIRPath Patch: values


def _variants(type_name: str, element: Element) -> list[Element]:
    if not element.is_choice:
        return [element]
    return _type_info(type_name).by_base_name.get(element.base_name, [element])


def _resolve_element(type_name: str, name: str, value: _Value) -> Element:
    """The element `name` names on `type_name`; for a choice (`value`), the variant that fits the value's type."""
    info = _type_info(type_name)
    element = info.elements.get(name)
    if element is not None:
        return element
    variants = info.by_base_name.get(name)
    if not variants or not variants[0].is_choice:
        raise _Problem(f"{type_name} has no element {name!r}", "invalid")
    allowed = ", ".join(v.type for v in variants)
    if value.type is None:
        raise _Problem(
            f"{type_name}.{name}[x] is a choice ({allowed}): give the value as value[x], "
            f"or name the variant (e.g. {variants[0].name})",
            "invalid",
        )
    exact = [v for v in variants if v.type == value.type]
    fitting = exact or [v for v in variants if not _type_info(v.type).is_primitive and _compatible(v.type, value.type)]
    if len(fitting) != 1:
        raise _Problem(f"a {value.type} does not fit {type_name}.{name}[x] (allowed: {allowed})", "invalid")
    return fitting[0]


def _compatible(target: str, given: str) -> bool:
    """May a value of type `given` be stored where `target` is defined? Lenient where JSON cannot tell apart."""
    if target == given:
        return True
    target_info, given_info = structure().get(target), structure().get(given)
    if target_info is None or given_info is None:
        return False
    if target == "Resource":
        return given_info.kind == "resource"
    if target_info.is_primitive and given_info.is_primitive:
        # valueString for a date/code/uri: same JSON form; the caller's validation checks the lexical form.
        kinds = (target_info.json_kind, given_info.json_kind)
        return kinds[0] == kinds[1] or kinds == ("number", "integer")
    if target_info.is_primitive or given_info.is_primitive:
        return False
    return _derives(given, target) or _derives(target, given)  # Age for Quantity, Quantity for a Duration


def _build(element: Element, value: _Value) -> tuple[Any, Any]:
    """The JSON (and primitive companion) to store for `value` at `element`."""
    if value.parts is not None:
        target = element.type
        if target == "Resource" or _type_info(target).is_primitive:
            raise _Problem(f"{element.name} ({target}) cannot be given as parts; use value[x] or resource", "invalid")
        return _build_from_parts(target, value.parts), None
    assert value.type is not None
    if not _compatible(element.type, value.type):
        raise _Problem(f"a {value.type} value does not fit {element.name}, which is a {element.type}", "invalid")
    return copy.deepcopy(value.json), copy.deepcopy(value.companion)


def _build_from_parts(type_name: str, parts: list[tuple[str, _Value]]) -> dict[str, Any]:
    """An element of `type_name` (e.g. Patient.contact, HumanName) from parts naming its children."""
    obj: dict[str, Any] = {}
    for name, value in parts:
        element = _resolve_element(type_name, name, value)
        json_value, companion = _build(element, value)
        if element.is_list:
            _insert_item(obj, element.name, None, json_value, companion)
            continue
        if any(v.name in obj or "_" + v.name in obj for v in _variants(type_name, element)):
            raise _Problem(f"{type_name}.{element.base_name} is not repeating but is given more than once", "invalid")
        _set_single(obj, element.name, json_value, companion)
    return obj


# ------------------------------------------------------------------ pruning


def _prune(obj: dict[str, Any]) -> None:
    """Drop empty objects/arrays and nulls, keeping primitive arrays aligned with their `_name` companions."""
    for name in {key.removeprefix("_") for key in obj}:
        value, companion = obj.get(name), obj.get("_" + name)
        if isinstance(value, list) or isinstance(companion, list):
            _prune_array(obj, name)
            continue
        for key, item in ((name, value), ("_" + name, companion)):
            if isinstance(item, dict):
                _prune(item)
            if key in obj and (item is None or item == {}):
                del obj[key]


def _prune_array(obj: dict[str, Any], name: str) -> None:
    values, companions = obj.get(name), obj.get("_" + name)
    if not isinstance(values, list | None) or not isinstance(companions, list | None):
        return  # malformed (array beside an object): leave it to validation
    values, companions = values or [], companions or []
    kept: list[tuple[Any, Any]] = []
    for i in range(max(len(values), len(companions))):
        value, companion = _item(values, i), _item(companions, i)
        for item in (value, companion):
            if isinstance(item, dict):
                _prune(item)
        value = None if value == {} else value
        companion = None if companion == {} else companion
        if value is not None or companion is not None:
            kept.append((value, companion))
    # Assign in place rather than pop and re-add, so the properties keep their order.
    _assign(obj, name, [v for v, _ in kept] if kept else None)
    _assign(obj, "_" + name, [c for _, c in kept] if any(c is not None for _, c in kept) else None)


def _assign(obj: dict[str, Any], key: str, value: Any) -> None:
    if value is None:
        obj.pop(key, None)
    else:
        obj[key] = value
