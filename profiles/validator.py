"""Validation of a resource against a profile (or the R4 base definition of its type).

The walk follows the compiled snapshot (profiles/model.py): at each element it checks fixed[x],
pattern[x], maxLength, the binding and reference targets (profiles/checks.py), the invariants
(profiles/invariants.py) and Dutch identifiers (profiles/dutch.py); then its
children by JSON name (cardinality, slices by discriminator, profiles/slicing.py). An element the
snapshot does not unfold is checked against its type: the type's profile when it names one, the
extension definition an extension's url names, or the base definition of the data type or
resource. Structure (unknown properties, JSON types, primitive formats) is the structural
validator's job (hub/fhirmodel/validate.py), which callers run first.

Issues are OperationOutcome issues with a FHIRPath expression in the style of the structural
validator: `Patient.identifier[0].value`, `Observation.value.ofType(Quantity)`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hub.fhirmodel.structure import structure
from hub.formats.outcome import Issue
from profiles import dutch, invariants
from profiles.checks import MAX_DEPTH, check_binding, check_reference
from profiles.model import Compiled, Node, TypeRef, _primitives, compile_profile
from profiles.registry import BASE_PREFIX, Registry
from profiles.slicing import UNRESOLVED, assign, equals, matches_pattern, slicing_of
from profiles.snapshot import SnapshotError

Resolver = Callable[[str], dict[str, Any] | None]


@dataclass(slots=True)
class Item:
    value: Any  # the JSON value (for a primitive: the scalar, or None when only `_name` is present)
    companion: dict[str, Any] | None  # a primitive's `_name` object
    path: str
    tcode: str | None  # its type ("Quantity", "string", a resource type), when known


def _is_primitive(tcode: str | None) -> bool:
    return tcode in _primitives()


def _upper(s: str) -> str:
    return s[:1].upper() + s[1:]


class Run:
    """One validation: the resource, where references resolve, and the issues found."""

    def __init__(self, registry: Registry, root: dict[str, Any], resolver: Resolver | None = None, depth: int = 0):
        self.registry = registry
        self.root = root
        self.resolver = resolver
        self.depth = depth
        self.issues: list[Issue] = []
        # (id of value, profile) -> (the value, its issues); the value is kept so its id stays its own
        self._conforms: dict[tuple[int, str], tuple[Any, list[Issue]]] = {}
        self.bundle: dict[str, dict[str, Any]] = {}
        if root.get("resourceType") == "Bundle":
            for e in root.get("entry", ()):
                if isinstance(e, dict) and isinstance(e.get("resource"), dict) and e.get("fullUrl"):
                    self.bundle[e["fullUrl"]] = e["resource"]

    # -- helpers used by slicing ----------------------------------------------------------------

    def compiled(self, url: str) -> Compiled | None:
        cache = self.registry.cache
        key = ("compiled?", url)
        if key in cache:
            return cache[key]
        found: Compiled | None = None
        if self.registry.structure_definition(url) is not None:
            try:
                found = compile_profile(self.registry, url)
            except SnapshotError:
                found = None
        cache[key] = found
        return found

    def profile_type(self, url: str) -> str | None:
        sd = self.registry.structure_definition(url)
        if sd is not None:
            return str(sd.get("type"))
        return url.rsplit("/", 1)[-1] if url.startswith(BASE_PREFIX) else None

    def conforms(self, value: Any, url: str, path: str = "") -> bool:
        """Whether `value` conforms to a profile; the issues are kept for `against` to reuse."""
        issues = self._against(value, url, path)
        return issues is not None and not any(i.severity in ("error", "fatal") for i in issues)

    def _against(self, value: Any, url: str, path: str) -> list[Issue] | None:
        key = (id(value), url)
        found = self._conforms.get(key)
        if found is None or found[0] is not value:
            compiled = self.compiled(url)
            if compiled is None:
                return None
            tcode = value.get("resourceType") if isinstance(value, dict) and "resourceType" in value else None
            scratch = Run(
                self.registry, value if tcode else self.root, self.resolver, self.depth
            )  # a resource is its own root
            scratch.bundle = self.bundle
            scratch._conforms = self._conforms
            scratch.element(
                compiled.root, Item(value, None, path, tcode or compiled.type), TypeRef(tcode or compiled.type)
            )
            self._conforms[key] = (value, scratch.issues)
        return self._conforms[key][1]

    def reference_type(self, ref: Any) -> str | None:
        if not isinstance(ref, dict):
            return None
        r = ref.get("reference")
        if isinstance(r, str) and not r.startswith(("#", "urn:")):
            parts = r.split("/_history/")[0].rstrip("/").split("/")
            if len(parts) >= 2 and structure().is_resource_type(parts[-2]):
                return parts[-2]
        target = self.resolve(ref)
        if target is not None:
            return str(target.get("resourceType"))
        t = ref.get("type")
        return t if isinstance(t, str) else None

    def resolve(self, ref: Any) -> dict[str, Any] | None:
        r = ref.get("reference") if isinstance(ref, dict) else None
        if not isinstance(r, str):
            return None
        if r.startswith("#"):
            return next(
                (c for c in self.root.get("contained", ()) if isinstance(c, dict) and c.get("id") == r[1:]), None
            )
        if r in self.bundle:
            return self.bundle[r]
        for full_url, res in self.bundle.items():
            if full_url.endswith("/" + r):
                return res
        return self.resolver(r) if self.resolver is not None else None

    # -- issues ---------------------------------------------------------------------------------

    def add(self, severity: str, code: str, text: str, path: str) -> None:
        self.issues.append(Issue(severity, code, text, [path] if path else []))

    # -- the walk -------------------------------------------------------------------------------

    def element(self, node: Node, item: Item, tref: TypeRef | None) -> None:
        v = item.value
        if node.fixed is not None and v is not None and not equals(v, node.fixed[1]):
            self.add("error", "value", f"Value is {_show(v)} but must be fixed to {_show(node.fixed[1])}", item.path)
        if node.pattern is not None and v is not None and not matches_pattern(v, node.pattern[1]):
            self.add(
                "error", "value", f"Value {_show(v)} does not match the pattern {_show(node.pattern[1])}", item.path
            )
        if node.binding is not None and v is not None:
            check_binding(self, node.binding, item)
        if node.max_length is not None and isinstance(v, str) and len(v) > node.max_length:
            self.add("error", "too-long", f"Value is longer than the maximum length {node.max_length}", item.path)
        for key, severity, human, expression in node.constraints:
            if key not in invariants.STRUCTURAL and isinstance(v, dict):
                type_path = node.path if item.tcode in ("BackboneElement", "Element", None) else item.tcode
                if invariants.holds(key, expression, v, self.root, type_path) is False:
                    self.add(severity, "invariant", f"Constraint failed: {key}: '{human}'", item.path)
        if item.tcode == "Identifier" and isinstance(v, dict) and v.get("system") in dutch.SYSTEMS:
            problem = dutch.identifier_problem(v["system"], v.get("value"))
            if problem:
                self.add("error", "value", problem, item.path + ".value")
        if tref is not None and tref.targets and isinstance(v, dict):
            check_reference(self, tref.targets, item)
        if node.children:
            if "." in node.path and isinstance(v, dict) and item.tcode and not _is_primitive(item.tcode):
                self.type_invariants(item)  # a type's root element carries them; unfolded ones do not
            self.walk(node, item)
        else:
            self.by_type(item, tref)

    def type_invariants(self, item: Item) -> None:
        """The data type's own invariants (per-1, qty-3, ...) for an element the profile unfolded."""
        base = self.compiled(item.tcode or "")
        if base is None or base.root.path == "Extension":
            return
        for key, severity, human, expression in base.root.constraints:
            if key in invariants.STRUCTURAL:
                continue
            if invariants.holds(key, expression, item.value, self.root, item.tcode) is False:
                self.add(severity, "invariant", f"Constraint failed: {key}: '{human}'", item.path)

    def walk(self, node: Node, item: Item) -> None:
        obj = item.value if isinstance(item.value, dict) else item.companion
        if not isinstance(obj, dict):
            obj = {}
        groups: dict[int, tuple[Node, list[Item], TypeRef | None]] = {}
        for key, val in obj.items():
            if key == "resourceType":
                continue
            if key.startswith("_"):
                if key[1:] in obj or key[1:] not in node.keys:
                    continue
                key, val = key[1:], None  # a primitive with only extensions
            hit = node.keys.get(key)
            if hit is None:
                for stem in node.stems:
                    if key.startswith(stem) and key[len(stem) : len(stem) + 1].isupper():
                        self.add(
                            "error",
                            "structure",
                            f"Type {key[len(stem) :]} is not allowed for {stem} by the profile",
                            f"{item.path}.{key}",
                        )
                continue
            child, tref = hit
            comp = obj.get("_" + key)
            where = (
                f"{item.path}.{child.name}.ofType({_upper(tref.code)})"
                if child.choice and tref
                else f"{item.path}.{key}"
            )
            tcode = tref.code if tref else None
            bucket = groups.setdefault(id(child), (child, [], tref))[1]
            if isinstance(val, list) or isinstance(comp, list):
                vals = val if isinstance(val, list) else []
                comps = comp if isinstance(comp, list) else []
                for i in range(max(len(vals), len(comps))):
                    x = vals[i] if i < len(vals) else None
                    c = comps[i] if i < len(comps) else None
                    bucket.append(Item(x, c if isinstance(c, dict) else None, f"{where}[{i}]", _tcode(tcode, x)))
            else:
                bucket.append(Item(val, comp if isinstance(comp, dict) else None, where, _tcode(tcode, val)))
        for child in node.required:
            if id(child) not in groups:
                self.add(
                    "error", "required", f"Minimum required = {child.min}, but only found 0", _missing(item.path, child)
                )
        for child, items, tref in groups.values():
            self.children(child, items, tref, item.path)

    def children(self, child: Node, items: list[Item], tref: TypeRef | None, parent_path: str) -> None:
        n = len(items)
        where = items[0].path.rsplit("[", 1)[0] if items else _missing(parent_path, child)
        if child.max == 0:
            self.add("error", "structure", f"{child.name} is not allowed by the profile (max 0)", where)
        elif child.min > n:
            self.add("error", "required", f"Minimum required = {child.min}, but only found {n}", where)
        elif child.max is not None and n > child.max:
            self.add("error", "structure", f"Maximum allowed = {child.max}, but found {n}", where)
        is_ext = child.is_ext
        if not child.slices:
            for it in items:
                if not child.own_checks and self.plain_item(it, tref or _tref(child, it)):
                    continue
                if is_ext:
                    self.extension(it)
                else:
                    self.element(child, it, tref or _tref(child, it))
            return
        chosen = assign(self, child, items)
        counts: dict[int, int] = {}
        for c in chosen:
            counts[id(c)] = counts.get(id(c), 0) + 1
        for sl in child.slices:
            count = counts.get(id(sl), 0)
            if sl.min > count and UNRESOLVED not in chosen:
                self.add(
                    "error",
                    "required",
                    f"Slice '{sl.slice_name}': minimum required = {sl.min}, but only found {count}",
                    where,
                )
            if sl.max is not None and count > sl.max:
                self.add(
                    "error",
                    "structure",
                    f"Slice '{sl.slice_name}': maximum allowed = {sl.max}, but found {count}",
                    where,
                )
        closed = slicing_of(child).get("rules") == "closed"
        for it, sl in zip(items, chosen, strict=True):
            if isinstance(sl, Node):
                self.element(sl, it, _tref(sl, it) or tref)
            elif sl is None and closed:
                self.add(
                    "error",
                    "structure",
                    f"This element does not match any known slice of {child.id} (closed slicing)",
                    it.path,
                )
            elif is_ext:
                self.extension(it)
            else:
                self.element(child, it, tref or _tref(child, it))

    def plain_item(self, item: Item, tref: TypeRef | None) -> bool:
        """Whether an item of an element without checks of its own has nothing to check inside."""
        if tref is None or tref.profiles or tref.targets or item.tcode is None:
            return False
        if item.tcode in _primitives():
            return item.companion is None
        return not self.type_needs_walk(item.tcode) and _plain(item.value)

    def type_needs_walk(self, tcode: str) -> bool:
        """Whether the base data type has anything to check below the structural validator's
        checks (bindings, invariants, Dutch identifiers, references); extensions are seen by
        `_plain` on the value instead. Cached per type."""
        key = ("needs-walk", tcode)
        cache = self.registry.cache
        if key not in cache:
            cache[key] = True  # in progress: a recursive type (Extension, Identifier) is assumed to need it
            base = self.compiled(tcode)
            cache[key] = tcode in ("Identifier", "Reference") or base is None or self._subtree_needs(base.root, set())
        return bool(cache[key])

    def _subtree_needs(self, node: Node, seen: set[int]) -> bool:
        if id(node) in seen:
            return False
        seen.add(id(node))
        if any(c[0] not in invariants.STRUCTURAL for c in node.constraints):
            return True
        for name, child in node.children.items():
            if name in ("extension", "modifierExtension"):
                continue
            if child.fixed or child.pattern or child.binding or child.max_length or child.slices:
                return True
            if child.children:
                if self._subtree_needs(child, seen):
                    return True
                continue
            for t in child.types:
                if t.profiles or t.targets:
                    return True
                if t.code not in _primitives() and t.code != "Extension" and self.type_needs_walk(t.code):
                    return True
        return False

    def by_type(self, item: Item, tref: TypeRef | None) -> None:
        tcode = item.tcode
        profiles = tref.profiles if tref is not None else ()
        if profiles:
            known = [c for c in (self.compiled(p) for p in profiles) if c is not None]
            if known:
                self.one_of(known, item)
                return
            self.add(
                "information",
                "not-supported",
                f"Profile {profiles[0]} is not known; checked against {tcode}",
                item.path,
            )
        if tcode is None:
            return
        if _is_primitive(tcode):
            if item.companion and item.companion.get("extension"):
                base = self.compiled("Extension")
                for i, ext in enumerate(item.companion["extension"]):
                    if base is not None:
                        self.extension(Item(ext, None, f"{item.path}.extension[{i}]", "Extension"))
            return
        if tcode == "Extension":
            self.extension(item)
            return
        if tcode in ("Resource", "DomainResource") or structure().is_resource_type(tcode):
            self.resource(item)
            return
        if not self.type_needs_walk(tcode) and _plain(item.value):
            return  # nothing below the structural validator's checks to look at
        base = self.compiled(tcode)
        if base is not None and base.root.children:
            self.element(base.root, item, TypeRef(tcode))

    def one_of(self, known: list[Compiled], item: Item) -> None:
        if len(known) == 1:
            found = self._conforms.get((id(item.value), known[0].url))
            if found is not None and found[0] is item.value and item.value is not None:
                self.issues.extend(found[1])  # already checked while matching slices
            else:
                self.element(known[0].root, item, TypeRef(item.tcode or known[0].type))
            return
        for c in known:
            if self.conforms(item.value, c.url, item.path):
                self.issues.extend(self._conforms[(id(item.value), c.url)][1])
                return
        urls = ", ".join(c.url for c in known)
        self.add("error", "structure", f"The value does not conform to any of the profiles {urls}", item.path)

    def extension(self, item: Item) -> None:
        """An extension checked against the definition its url names (or base Extension)."""
        url = item.value.get("url") if isinstance(item.value, dict) else None
        definition = self.compiled(url) if isinstance(url, str) and "/" in url else None
        if definition is None or definition.type != "Extension":
            if isinstance(url, str) and "/" in url and self.depth == 0:
                self.add(
                    "information", "not-supported", f"Unknown extension {url}; checked as a base Extension", item.path
                )
            definition = self.compiled("Extension")
        if definition is not None:
            self.element(definition.root, Item(item.value, None, item.path, "Extension"), TypeRef("Extension"))

    def resource(self, item: Item) -> None:
        res = item.value
        if not isinstance(res, dict) or not isinstance(res.get("resourceType"), str):
            return
        rt = res["resourceType"]
        path = f"{item.path}.ofType({rt})" if item.path else rt
        nested = Item(res, None, path, rt)
        base = self.compiled(rt)
        if base is not None:
            self.element(base.root, nested, TypeRef(rt))
        if self.depth < MAX_DEPTH:
            for url in (res.get("meta") or {}).get("profile", ()):
                compiled = self.compiled(url) if not self.registry.is_base(url) else None
                if compiled is not None and compiled.type == rt:
                    sub = Run(self.registry, res, self.resolver, self.depth + 1)
                    sub.bundle = self.bundle
                    sub.element(compiled.root, nested, TypeRef(rt))
                    self.issues.extend(sub.issues)


def _plain(value: Any) -> bool:
    """No extensions anywhere inside (they may name definitions to check)."""
    if isinstance(value, dict):
        for k, v in value.items():
            if k in ("extension", "modifierExtension") or k[:1] == "_":
                return False
            if isinstance(v, (dict, list)) and not _plain(v):
                return False
        return True
    if isinstance(value, list):
        return all(_plain(v) for v in value)
    return True


def _tcode(tcode: str | None, value: Any) -> str | None:
    if tcode in ("Resource", "DomainResource") and isinstance(value, dict):
        return value.get("resourceType") or tcode
    return tcode


def _tref(node: Node, item: Item) -> TypeRef | None:
    if len(node.types) == 1:
        return node.types[0]
    return next((t for t in node.types if t.code == item.tcode), None)


def _missing(parent: str, child: Node) -> str:
    return f"{parent}.{child.name}" if parent else child.name


def _show(v: Any) -> str:
    text = repr(v) if not isinstance(v, str) else f"'{v}'"
    return text if len(text) <= 200 else text[:197] + "..."


def validate_against(
    registry: Registry, resource: dict[str, Any], url: str, resolver: Resolver | None = None
) -> list[Issue]:
    """The issues of `resource` against one profile (a base type name or URL is fine)."""
    run = Run(registry, resource, resolver)
    rt = resource.get("resourceType")
    compiled = run.compiled(url)
    if compiled is None:
        return [Issue("error", "not-found", f"Profile {url} is not known to the hub")]
    if compiled.type != rt:
        return [Issue("error", "invalid", f"Profile {url} is for {compiled.type}, not {rt}", [str(rt)])]
    token = invariants.TERMINOLOGY.set(registry)
    try:
        run.element(compiled.root, Item(resource, None, str(rt), str(rt)), TypeRef(str(rt)))
    finally:
        invariants.TERMINOLOGY.reset(token)
    return run.issues
