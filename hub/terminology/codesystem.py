"""A CodeSystem's concepts and subsumption hierarchy, and the ValueSet filters evaluated over it.

The hierarchy comes from nested `concept` elements (unless `hierarchyMeaning` is `grouped-by`, which
is not subsumption) and from the `parent` / `child` concept properties (R4 concept-properties).
A code may have several parents; cycles in bad data do not loop.
"""

from __future__ import annotations

import re
from typing import Any

PARENT = ("parent", "http://hl7.org/fhir/concept-properties#parent")
CHILD = ("child", "http://hl7.org/fhir/concept-properties#child")


class FilterError(ValueError):
    """A ValueSet filter this module cannot evaluate (unknown op or property)."""


def _property_value(p: dict[str, Any]) -> str | None:
    for key in ("valueCode", "valueString", "valueInteger", "valueDecimal", "valueDateTime"):
        if key in p:
            return str(p[key])
    if "valueBoolean" in p:
        return "true" if p["valueBoolean"] else "false"
    if isinstance(p.get("valueCoding"), dict):
        return p["valueCoding"].get("code")
    return None


class CodeSystemView:
    def __init__(self, cs: dict[str, Any]) -> None:
        self.url: str = cs.get("url") or ""
        self.version: str | None = cs.get("version")
        self.content: str = cs.get("content") or "complete"
        self.displays: dict[str, str | None] = {}
        self.properties: dict[str, dict[str, list[str]]] = {}  # code -> property code -> values
        self.parents: dict[str, set[str]] = {}
        self.children: dict[str, set[str]] = {}
        names = {p.get("code"): p.get("uri") for p in cs.get("property") or () if isinstance(p, dict)}
        self._parent_props = {c for c, uri in names.items() if c in PARENT or uri in PARENT} | {"parent"}
        self._child_props = {c for c, uri in names.items() if c in CHILD or uri in CHILD} | {"child"}
        nesting = cs.get("hierarchyMeaning") != "grouped-by"
        self._walk(cs.get("concept") or [], None, nesting)

    @property
    def enumerable(self) -> bool:
        """Whether the hub holds all of the system's codes (so `include system` can be listed)."""
        return self.content == "complete"

    def _edge(self, parent: str, child: str) -> None:
        self.parents.setdefault(child, set()).add(parent)
        self.children.setdefault(parent, set()).add(child)

    def _walk(self, concepts: list[Any], parent: str | None, nesting: bool) -> None:
        for c in concepts:
            code = c.get("code") if isinstance(c, dict) else None
            if not isinstance(code, str):
                continue
            self.displays.setdefault(code, c.get("display"))
            props = self.properties.setdefault(code, {})
            for p in c.get("property") or ():
                value = _property_value(p) if isinstance(p, dict) else None
                if value is None:
                    continue
                props.setdefault(p.get("code", ""), []).append(value)
                if p.get("code") in self._parent_props:
                    self._edge(value, code)
                elif p.get("code") in self._child_props:
                    self._edge(code, value)
            if parent is not None and nesting:
                self._edge(parent, code)
            self._walk(c.get("concept") or [], code, nesting)

    def __contains__(self, code: str) -> bool:
        return code in self.displays

    def codes(self) -> set[str]:
        return set(self.displays)

    def _closure(self, code: str, links: dict[str, set[str]], include_self: bool) -> set[str]:
        out: set[str] = set()
        todo = [code]
        while todo:
            for nxt in links.get(todo.pop(), ()):
                if nxt not in out:
                    out.add(nxt)
                    todo.append(nxt)
        if include_self:
            out.add(code)
        else:
            out.discard(code)
        return out

    def descendants(self, code: str, include_self: bool = True) -> set[str]:
        return self._closure(code, self.children, include_self)

    def ancestors(self, code: str, include_self: bool = True) -> set[str]:
        return self._closure(code, self.parents, include_self)

    def filter(self, f: dict[str, Any]) -> set[str]:
        """The codes a ValueSet compose filter selects (R4 filter-operator)."""
        prop, op, value = f.get("property"), f.get("op"), f.get("value")
        if not isinstance(op, str) or not isinstance(value, str):
            raise FilterError(f"a filter needs an op and a value: {f}")
        if prop in ("concept", "code") and op in ("is-a", "descendent-of", "is-not-a", "generalizes"):
            if op == "is-a":
                return self.descendants(value) if value in self else set()
            if op == "descendent-of":
                return self.descendants(value, include_self=False) if value in self else set()
            if op == "generalizes":
                return self.ancestors(value) if value in self else set()
            return self.codes() - (self.descendants(value) if value in self else set())
        if not isinstance(prop, str):
            raise FilterError(f"a {op} filter needs a property")
        if op == "exists":
            return {c for c in self.displays if (bool(self._values(c, prop))) == (value == "true")}
        if op == "=":
            return {c for c in self.displays if value in self._values(c, prop)}
        if op in ("in", "not-in"):
            wanted = {v.strip() for v in value.split(",")}
            found = {c for c in self.displays if wanted & set(self._values(c, prop))}
            return found if op == "in" else self.codes() - found
        if op == "regex":
            try:
                pattern = re.compile(value)
            except re.error as exc:
                raise FilterError(f"bad regex {value!r}: {exc}") from None
            return {c for c in self.displays if any(pattern.fullmatch(v) for v in self._values(c, prop))}
        raise FilterError(f"the filter {prop} {op} {value} is not supported")

    def _values(self, code: str, prop: str) -> list[str]:
        if prop in ("code", "concept"):
            return [code]
        if prop == "display":
            display = self.displays.get(code)
            return [display] if display else []
        if prop in ("parent", "child"):
            return sorted((self.parents if prop == "parent" else self.children).get(code, ()))
        return self.properties.get(code, {}).get(prop, [])
