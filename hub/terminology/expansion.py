"""Expanding a ValueSet into an Expansion: codes per system, plus "open" systems.

An open system is one the value set includes whole (`include.system` without concepts or filters)
but the hub holds no complete CodeSystem for (SNOMED CT, LOINC ...): every code of it is a member,
except the codes excluded. Search can still test membership (`system = S AND code NOT IN excluded`);
$expand cannot list it.

A stored `expansion.contains` is used as it is (a terminology server's work); otherwise the
`compose` is evaluated: include = union, exclude = set difference, `include.valueSet` = intersection
of the imported sets (and with the include's system part when both are given).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hub.terminology.codesystem import CodeSystemView, FilterError


class ExpansionError(ValueError):
    """The value set cannot be expanded here; the message says why (for a 400 / 422)."""


@dataclass
class Expansion:
    codes: dict[str, dict[str, str | None]] = field(default_factory=dict)  # system -> code -> display
    open: dict[str, set[str]] = field(default_factory=dict)  # system -> excluded codes

    def add(self, system: str, code: str, display: str | None = None) -> None:
        known = self.codes.setdefault(system, {})
        if known.get(code) is None:
            known[code] = display

    def contains(self, system: str | None, code: str) -> bool:
        if system is None:
            return False
        if code in self.codes.get(system, {}):
            return True
        return system in self.open and code not in self.open[system]

    @property
    def enumerable(self) -> bool:
        return not self.open

    def size(self) -> int:
        return sum(len(c) for c in self.codes.values())

    def union(self, other: Expansion) -> Expansion:
        out = Expansion({s: dict(c) for s, c in self.codes.items()}, {s: set(x) for s, x in self.open.items()})
        for s, codes in other.codes.items():
            for code, display in codes.items():
                out.add(s, code, display)
        for s, excluded in other.open.items():
            out.open[s] = out.open[s] & excluded if s in out.open else set(excluded)
        for s in out.open:  # a code listed on one side is not excluded by the other's open part
            out.open[s] -= set(out.codes.get(s, ()))
        return out

    def intersect(self, other: Expansion) -> Expansion:
        out = Expansion()
        for a, b in ((self, other), (other, self)):
            for s, codes in a.codes.items():
                for code, display in codes.items():
                    if b.contains(s, code):
                        out.add(s, code, display)
        for s in self.open.keys() & other.open.keys():
            out.open[s] = self.open[s] | other.open[s]
        return out

    def subtract(self, other: Expansion) -> Expansion:
        out = Expansion()
        for s, codes in self.codes.items():
            for code, display in codes.items():
                if not other.contains(s, code):
                    out.add(s, code, display)
        for s, excluded in self.open.items():
            if s in other.open:  # all of S minus (all of S minus X): the codes of X we did not exclude
                for code in other.open[s] - excluded:
                    out.add(s, code)
            else:
                out.open[s] = excluded | set(other.codes.get(s, ()))
        return out

    def contains_list(self) -> list[dict[str, Any]]:
        """ValueSet.expansion.contains for the enumerable part, sorted by system and code."""
        out = []
        for s in sorted(self.codes):
            for code in sorted(self.codes[s]):
                item: dict[str, Any] = {"system": s, "code": code}
                if self.codes[s][code]:
                    item["display"] = self.codes[s][code]
                out.append(item)
        return out


# What expansion needs from the store: a CodeSystem by (url, version), and an imported ValueSet's
# expansion by canonical (the caller caches and detects cycles).
CodeSystems = Callable[[str, str | None], CodeSystemView | None]
ValueSets = Callable[[str], Expansion]


def expand(vs: dict[str, Any], code_systems: CodeSystems, value_sets: ValueSets) -> Expansion:
    contains = (vs.get("expansion") or {}).get("contains")
    if isinstance(contains, list):
        out = Expansion()
        _flatten(contains, out)
        return out
    compose = vs.get("compose") or {}
    includes = compose.get("include") or []
    if not includes:
        raise ExpansionError(f"ValueSet {_name(vs)} has neither compose.include nor expansion.contains")
    result = Expansion()
    for inc in includes:
        result = result.union(_part(vs, inc, code_systems, value_sets))
    for exc in compose.get("exclude") or []:
        result = result.subtract(_part(vs, exc, code_systems, value_sets))
    return result


def _name(vs: dict[str, Any]) -> str:
    return str(vs.get("url") or f"ValueSet/{vs.get('id')}")


def _flatten(contains: list[Any], out: Expansion) -> None:
    for item in contains:
        if not isinstance(item, dict):
            continue
        if isinstance(item.get("system"), str) and isinstance(item.get("code"), str) and not item.get("abstract"):
            out.add(item["system"], item["code"], item.get("display"))
        _flatten(item.get("contains") or [], out)


def _part(vs: dict[str, Any], inc: dict[str, Any], code_systems: CodeSystems, value_sets: ValueSets) -> Expansion:
    system = inc.get("system")
    part: Expansion | None = None
    if isinstance(system, str) and system:
        part = Expansion()
        cs = code_systems(system, inc.get("version"))
        concepts = inc.get("concept") or []
        filters = inc.get("filter") or []
        if concepts:
            for c in concepts:
                if isinstance(c, dict) and isinstance(c.get("code"), str):
                    display = c.get("display") or (cs.displays.get(c["code"]) if cs else None)
                    part.add(system, c["code"], display)
        elif filters:
            if cs is None:
                raise ExpansionError(
                    f"ValueSet {_name(vs)} filters codes of {system}, a code system the hub does not hold"
                )
            try:
                selected = cs.codes()
                for f in filters:
                    selected &= cs.filter(f)
            except FilterError as exc:
                raise ExpansionError(f"ValueSet {_name(vs)}: {exc}") from None
            for code in selected:
                part.add(system, code, cs.displays.get(code))
        elif cs is not None and cs.enumerable:
            for code, display in cs.displays.items():
                part.add(system, code, display)
        else:
            part.open[system] = set()
    for url in inc.get("valueSet") or []:
        imported = value_sets(url)
        part = imported if part is None else part.intersect(imported)
    if part is None:
        raise ExpansionError(f"ValueSet {_name(vs)}: an include or exclude needs a system or a valueSet")
    return part
