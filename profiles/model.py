"""A snapshot compiled into a tree the validator walks: one Node per element, children by JSON name,
slices under the element they slice. Compiled once per StructureDefinition and cached."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from hub.fhirmodel.structure import structure
from profiles.registry import Registry
from profiles.snapshot import snapshot

SYSTEM_TYPE = "http://hl7.org/fhirpath/System."


_STRUCTURAL = frozenset({"ele-1", "ext-1", "dom-2", "dom-4"})  # checked by hub/fhirmodel/validate.py


@lru_cache(maxsize=1)
def _primitives() -> frozenset[str]:
    return frozenset(n for n, t in structure().types.items() if t.is_primitive)


@dataclass(frozen=True, slots=True)
class TypeRef:
    code: str  # "Quantity", "string", "Reference"; FHIRPath system types become "string" etc.
    profiles: tuple[str, ...] = ()
    targets: tuple[str, ...] = ()


@dataclass(eq=False, slots=True)
class Node:
    id: str
    path: str
    name: str  # the JSON name, or the stem of a choice ("value" for value[x])
    choice: bool
    min: int
    max: int | None  # None: unbounded
    types: tuple[TypeRef, ...]
    fixed: tuple[str, Any] | None = None  # (type suffix, value) from fixed[x]
    pattern: tuple[str, Any] | None = None
    binding: tuple[str, str] | None = None  # (strength, value set)
    constraints: tuple[tuple[str, str, str, str], ...] = ()  # (key, severity, human, expression)
    slicing: dict[str, Any] | None = None
    slice_name: str | None = None
    max_length: int | None = None
    content_ref: str | None = None
    children: dict[str, Node] = field(default_factory=dict)
    slices: list[Node] = field(default_factory=list)
    # Filled by `finish`: JSON property name -> (child, the type it names), required children.
    keys: dict[str, tuple[Node, TypeRef | None]] = field(default_factory=dict)
    required: tuple[Node, ...] = ()
    stems: tuple[str, ...] = ()  # choice stems, to recognise a choice with a type the profile drops
    own_checks: bool = True  # fixed, pattern, binding, maxLength, slices or an invariant of its own
    is_ext: bool = False

    def finish(self) -> None:
        self.is_ext = any(t.code == "Extension" for t in self.types)
        self.own_checks = bool(
            self.fixed or self.pattern or self.binding or self.max_length or self.children or self.slices
        ) or any(c[0] not in _STRUCTURAL for c in self.constraints)
        keys: dict[str, tuple[Node, TypeRef | None]] = {}
        for child in self.children.values():
            if child.choice:
                for t in child.types:
                    keys[child.name + t.code[:1].upper() + t.code[1:]] = (child, t)
            else:
                keys[child.name] = (child, child.types[0] if len(child.types) == 1 else None)
        self.keys = keys
        self.required = tuple(c for c in self.children.values() if c.min > 0)
        self.stems = tuple(c.name for c in self.children.values() if c.choice)

    def type_for(self, suffix: str) -> TypeRef | None:
        """The allowed type a choice's JSON suffix names (`Quantity` in valueQuantity)."""
        for t in self.types:
            if t.code[:1].upper() + t.code[1:] == suffix:
                return t
        return None

    def child_at(self, segments: list[str]) -> Node | None:
        node: Node | None = self
        for seg in segments:
            if node is None:
                return None
            node = node.children.get(seg)
        return node


@dataclass(slots=True)
class Compiled:
    url: str
    type: str  # the resource or data type constrained
    root: Node
    by_id: dict[str, Node]


def _type_code(t: dict[str, Any]) -> str:
    code: str = t.get("code", "")
    if code.startswith(SYSTEM_TYPE):
        for ext in t.get("extension", []):
            if ext.get("url", "").endswith("structuredefinition-fhir-type"):
                return str(ext.get("valueUrl") or ext.get("valueUri") or "string")
        return "string"
    return code


def _node(el: dict[str, Any]) -> Node:
    path: str = el["path"]
    last = path.rsplit(".", 1)[-1]
    choice = last.endswith("[x]")
    fixed = pattern = None
    for k, v in el.items():
        if k.startswith("fixed"):
            fixed = (k[5:], v)
        elif k.startswith("pattern"):
            pattern = (k[7:], v)
    binding = None
    b = el.get("binding")
    if b and b.get("valueSet") and b.get("strength") in ("required", "extensible"):
        binding = (b["strength"], b["valueSet"])
    mx = el.get("max", "*")
    return Node(
        id=el["id"],
        path=path,
        name=last[:-3] if choice else last,
        choice=choice,
        min=int(el.get("min", 0)),
        max=None if mx == "*" else int(mx),
        types=tuple(
            TypeRef(_type_code(t), tuple(t.get("profile", ())), tuple(t.get("targetProfile", ())))
            for t in el.get("type", ())
        ),
        fixed=fixed,
        pattern=pattern,
        binding=binding,
        constraints=tuple(
            (c["key"], c.get("severity", "error"), c.get("human", ""), c["expression"])
            for c in el.get("constraint", ())
            if c.get("expression")
        ),
        slicing=el.get("slicing"),
        slice_name=el.get("sliceName"),
        max_length=el.get("maxLength"),
        content_ref=el.get("contentReference"),
    )


def _parent_and_slice(elem_id: str) -> tuple[str, str | None]:
    """`Patient.name:official` -> (`Patient.name`, slice); `Patient.name.given` -> (`Patient.name`, None)."""
    head, _, last = elem_id.rpartition(".")
    if ":" in last:
        name, _, _slice = last.partition(":")
        return (f"{head}.{name}" if head else name), _slice
    return head, None


def compile_profile(registry: Registry, url: str) -> Compiled:
    return registry.cached(("compiled", url), lambda: _compile(registry, url))


def _compile(registry: Registry, url: str) -> Compiled:
    els = snapshot(registry, url)
    sd = registry.structure_definition(url) or {}
    root = _node(els[0])
    by_id: dict[str, Node] = {root.id: root}
    for el in els[1:]:
        node = _node(el)
        by_id[node.id] = node
        owner_id, slice_name = _parent_and_slice(node.id)
        owner = by_id.get(owner_id)
        if owner is None:
            continue
        if slice_name is not None:
            if "/" in slice_name:  # a reslice: attach to the slice it refines
                owner = by_id.get(f"{owner_id}:{slice_name.split('/')[0]}", owner)
            owner.slices.append(node)
        else:
            owner.children[node.name] = node
    # contentReference (`#Questionnaire.item`): the element has the children of the one it names.
    for node in by_id.values():
        if node.content_ref and not node.children:
            target = by_id.get(node.content_ref.lstrip("#"))
            if target is None:
                target = next((n for n in by_id.values() if n.path == node.content_ref.lstrip("#")), None)
            if target is not None:
                node.children = target.children
                if not node.types:
                    node.types = target.types
    for node in by_id.values():
        node.finish()
    return Compiled(url=url, type=str(sd.get("type") or root.path), root=root, by_id=by_id)
