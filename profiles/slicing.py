"""Slicing: which slice an element of a sliced list belongs to, by the slicing's discriminators.

http://hl7.org/fhir/R4/profiling.html#discriminator. Discriminator types `value` and `pattern` compare
the element at the path with the slice's fixed[x] / pattern[x] there (or its required binding);
`type` compares the element's type; `profile` asks whether the element (or, through `resolve()`,
the resource it refers to) conforms to the slice's profile; `exists` whether the path is present.
The slice's element at the path may live in the slice's type profile (an extension's `url`, the
`use` of a HumanName profile): the lookup follows type profiles. An extension slice whose
definition is not loaded is recognised by its profile URL (the extension's canonical), or for a
sub-extension by its slice name (R4 convention: the url of a nested extension is its slice name).
A `resolve()` discriminator on a reference that cannot be resolved leaves the element unassigned
(UNRESOLVED): neither a slice match nor a closed-slicing error.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from profiles.model import Node
from profiles.terminology import OUT, expansion, member

if TYPE_CHECKING:
    from profiles.validator import Item, Run

UNRESOLVED = object()
_EXT_CALL = re.compile(r"^extension\(\s*(?:url\s*=\s*)?'([^']*)'\s*\)$")
_DEFAULT_EXTENSION_SLICING = {"discriminator": [{"type": "value", "path": "url"}], "rules": "open"}


def slicing_of(node: Node) -> dict[str, Any]:
    return node.slicing or _DEFAULT_EXTENSION_SLICING


@lru_cache(maxsize=4096)
def _segments(path: str) -> list[str]:
    if path in ("$this", ""):
        return []
    out: list[str] = []
    for part in re.split(r"\.(?![^(]*\))", path):
        out.append(part)
    return out[1:] if out and out[0] == "$this" else out


# -- values ----------------------------------------------------------------------------------------


def equals(value: Any, fixed: Any) -> bool:
    if isinstance(fixed, dict):
        if not isinstance(value, dict) or set(value) - {"id", "extension"} != set(fixed) - {"id", "extension"}:
            return False
        return all(equals(value.get(k), v) for k, v in fixed.items() if k not in ("id", "extension"))
    if isinstance(fixed, list):
        return isinstance(value, list) and len(value) == len(fixed) and all(map(equals, value, fixed))
    return bool(value == fixed)


def matches_pattern(value: Any, pattern: Any) -> bool:
    """Pattern semantics: every property the pattern has, the value has (lists: each pattern item
    matches some value item); the value may have more."""
    if isinstance(pattern, dict):
        if not isinstance(value, dict):
            return False
        return all(matches_pattern(value.get(k), v) for k, v in pattern.items())
    if isinstance(pattern, list):
        items = value if isinstance(value, list) else [value] if value is not None else []
        return all(any(matches_pattern(v, p) for v in items) for p in pattern)
    return bool(value == pattern)


def values_at(value: Any, segs: list[str]) -> list[Any]:
    """The JSON values at a simple FHIRPath (names, `extension('url')`), lists flattened."""
    current = [value]
    for seg in segs:
        nxt: list[Any] = []
        m = _EXT_CALL.match(seg)
        for v in current:
            if not isinstance(v, dict):
                continue
            if m:
                nxt.extend(e for e in v.get("extension", ()) if isinstance(e, dict) and e.get("url") == m.group(1))
                continue
            found = v.get(seg)
            if found is None:  # a choice element named by its stem: valueQuantity for "value"
                found = next(
                    (x for k, x in v.items() if k.startswith(seg) and k[len(seg) : len(seg) + 1].isupper()), None
                )
            if isinstance(found, list):
                nxt.extend(found)
            elif found is not None:
                nxt.append(found)
        current = nxt
    return current


# -- the slice's side ------------------------------------------------------------------------------


def extension_url(run: Run, node: Node) -> str | None:
    """The url an extension slice (or element) stands for."""
    url_node = node_at(run, node, ["url"])
    if url_node is not None and url_node.fixed is not None:
        return str(url_node.fixed[1])
    for t in node.types:
        if t.profiles:
            return t.profiles[0]
    return node.slice_name


def node_at(run: Run, node: Node, segs: list[str]) -> Node | None:
    cur: Node | None = node
    for seg in segs:
        if cur is None:
            return None
        m = _EXT_CALL.match(seg)
        if m:
            ext = _child(run, cur, "extension")
            cur = next((s for s in (ext.slices if ext else ()) if extension_url(run, s) == m.group(1)), None)
            continue
        cur = _child(run, cur, seg)
    return cur


def _child(run: Run, node: Node, name: str) -> Node | None:
    found = node.children.get(name)
    if found is None and not node.children:
        for t in node.types:
            for p in t.profiles:
                compiled = run.compiled(p)
                if compiled is not None:
                    found = compiled.root.children.get(name)
                    if found is not None:
                        return found
    return found


# -- matching --------------------------------------------------------------------------------------


def _plan(run: Run, node: Node) -> tuple[list[str], dict[Any, Node]] | None:
    """When slices differ by one fixed primitive value at one path (extensions by url, codings by
    system), a lookup table from that value to the slice; None when matching must be general."""
    key = ("slice-plan", id(node))
    cache = run.registry.cache
    if key in cache:
        return cache[key]
    plan: tuple[list[str], dict[Any, Node]] | None = None
    discs = slicing_of(node).get("discriminator", [])
    if len(discs) == 1 and discs[0].get("type", "value") in ("value", "pattern"):
        segs = _segments(str(discs[0].get("path", "$this")))
        table: dict[Any, Node] = {}
        for sl in node.slices:
            if segs == ["url"] and _is_extension(sl):
                expected: Any = extension_url(run, sl)
            else:
                target = node_at(run, sl, segs) if segs else None
                fixed = target.fixed or target.pattern if target is not None else None
                expected = fixed[1] if fixed is not None else None
            if not isinstance(expected, str):
                table = {}
                break
            table.setdefault(expected, sl)
        if table:
            plan = (segs, table)
    cache[key] = plan
    return plan


def assign(run: Run, node: Node, items: list[Item]) -> list[Any]:
    """For each item, the slice it belongs to, None (no slice), or UNRESOLVED."""
    plan = _plan(run, node)
    if plan is not None:
        segs, table = plan
        order = {id(sl): i for i, sl in enumerate(node.slices)}
        picked: list[Any] = []
        for item in items:
            hits = [table[v] for v in values_at(item.value, segs) if isinstance(v, str) and v in table]
            picked.append(min(hits, key=lambda sl: order[id(sl)]) if hits else None)
        return picked
    discs = slicing_of(node).get("discriminator", [])
    out: list[Any] = []
    for item in items:
        chosen: Any = None
        for sl in node.slices:
            verdict = _matches(run, sl, discs, item)
            if verdict is UNRESOLVED:
                chosen = UNRESOLVED
                break
            if verdict:
                chosen = sl
                break
        out.append(chosen)
    return out


def _matches(run: Run, sl: Node, discs: list[dict[str, Any]], item: Item) -> Any:
    if not discs:
        return False
    for d in discs:
        verdict = _one(run, sl, d.get("type", "value"), str(d.get("path", "$this")), item)
        if verdict is UNRESOLVED or not verdict:
            return verdict
    return True


def _one(run: Run, sl: Node, kind: str, path: str, item: Item) -> Any:
    segs = _segments(path)
    if segs and segs[0] == "resolve()":
        return _via_reference(run, sl, kind, segs[1:], item)
    if kind == "type":
        if not segs:
            return item.tcode is not None and any(t.code == item.tcode for t in sl.types)
        target = node_at(run, sl, segs)
        found = values_at(item.value, segs)
        return target is None or bool(found)
    if kind == "profile":
        profiles = [p for t in sl.types for p in t.profiles] if not segs else []
        if segs:
            target = node_at(run, sl, segs)
            profiles = [p for t in (target.types if target else ()) for p in t.profiles]
        values = [item.value] if not segs else values_at(item.value, segs)
        return any(run.conforms(v, p, item.path) for v in values for p in profiles)
    if kind == "exists":
        target = node_at(run, sl, segs)
        want = target is not None and target.min >= 1
        if target is not None and target.max == 0:
            want = False
        return bool(values_at(item.value, segs)) == want
    # value / pattern
    values = values_at(item.value, segs)
    if segs == ["url"] and _is_extension(sl):
        return any(v == extension_url(run, sl) for v in values)
    target = node_at(run, sl, segs)
    if target is None:
        return False
    if target.fixed is not None:
        return any(equals(v, target.fixed[1]) for v in values)
    if target.pattern is not None:
        return any(matches_pattern(v, target.pattern[1]) for v in values)
    if target.binding is not None and target.binding[0] == "required":
        exp = expansion(run.registry, target.binding[1])
        if exp is None:
            return False
        return any(_in_value_set(exp, v) for v in values)
    return False


def _in_value_set(exp: Any, v: Any) -> bool:
    if isinstance(v, str):
        return member(exp, None, v) != OUT
    codings = v.get("coding", []) if isinstance(v, dict) and "coding" in v else [v] if isinstance(v, dict) else []
    return any(
        isinstance(c, dict) and isinstance(c.get("code"), str) and member(exp, c.get("system"), c["code"]) != OUT
        for c in codings
    )


def _is_extension(node: Node) -> bool:
    return any(t.code == "Extension" for t in node.types)


def _via_reference(run: Run, sl: Node, kind: str, segs: list[str], item: Item) -> Any:
    targets = [p for t in sl.types for p in t.targets]
    target = run.resolve(item.value)
    if target is None:
        if kind == "type":
            ref_type = run.reference_type(item.value)
            types = {run.profile_type(p) for p in targets}
            return ref_type is not None and ref_type in types
        return UNRESOLVED
    if kind == "profile":
        return any(run.conforms(target, p) for p in targets)
    if kind == "type":
        return target.get("resourceType") in {run.profile_type(p) for p in targets}
    return bool(values_at(target, segs))
