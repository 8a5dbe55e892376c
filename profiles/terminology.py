"""ValueSets expanded locally from the CodeSystems the registry holds, for binding checks.

An expansion is a set of codes per system plus the systems that cannot be enumerated here (SNOMED
CT, LOINC and other external systems without a local CodeSystem, filters this module does not
evaluate): codes of those systems are "unknown", never "wrong". A code of a system with no local
CodeSystem that misses an enumerated list is reported by the caller as a warning at most.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from profiles.registry import Registry

IN, OUT, UNKNOWN = "in", "out", "unknown"


@dataclass(slots=True)
class Expansion:
    codes: dict[str, set[str]] = field(default_factory=dict)
    open_systems: set[str] = field(default_factory=set)  # any code of these may be in the set
    complete: bool = True  # False: an imported value set was unknown

    def all_codes(self) -> set[str]:
        return {c for codes in self.codes.values() for c in codes}


def expansion(registry: Registry, url: str) -> Expansion | None:
    """The value set's expansion, or None when the value set itself is not known."""
    key = url.split("|", 1)[0]
    found = registry.cache.get(("expansion", key))
    if found is None:
        vs = registry.value_set(key)
        if vs is None:
            return None
        registry.cache[("expansion", key)] = Expansion(complete=False)  # breaks import cycles
        found = _expand(registry, vs)
        registry.cache[("expansion", key)] = found
    return found


def _codes(concepts: list[dict[str, Any]], out: set[str]) -> None:
    for c in concepts:
        out.add(c["code"])
        if c.get("concept"):
            _codes(c["concept"], out)


def _descendants(concepts: list[dict[str, Any]], code: str, include_self: bool) -> set[str] | None:
    for c in concepts:
        if c["code"] == code:
            out = {code} if include_self else set()
            _codes(c.get("concept", []), out)
            return out
        found = _descendants(c.get("concept", []), code, include_self)
        if found is not None:
            return found
    return None


def system_codes(registry: Registry, system: str) -> set[str] | None:
    """Every code of a complete local CodeSystem, or None when it is not available here."""
    key = ("system-codes", system)
    if key not in registry.cache:
        cs = registry.code_system(system)
        codes: set[str] | None = None
        if cs is not None and cs.get("content", "complete") == "complete" and cs.get("concept"):
            codes = set()
            _codes(cs["concept"], codes)
        registry.cache[key] = codes
    return registry.cache[key]


def _include(registry: Registry, inc: dict[str, Any], exp: Expansion) -> None:
    system = inc.get("system")
    if inc.get("valueSet"):
        for vs_url in inc["valueSet"]:
            sub = expansion(registry, vs_url)
            if sub is None or not sub.complete:
                exp.complete = False
                if sub is None:
                    continue
            for s, codes in sub.codes.items():
                exp.codes.setdefault(s, set()).update(codes)
            exp.open_systems |= sub.open_systems
    if not system:
        return
    if inc.get("concept"):
        exp.codes.setdefault(system, set()).update(c["code"] for c in inc["concept"])
        return
    cs = registry.code_system(system)
    if inc.get("filter"):
        picked = _filtered(cs, inc["filter"]) if cs is not None else None
        if picked is None:
            exp.open_systems.add(system)
        else:
            exp.codes.setdefault(system, set()).update(picked)
        return
    whole = system_codes(registry, system)
    if whole is None:
        exp.open_systems.add(system)
    else:
        exp.codes.setdefault(system, set()).update(whole)


def _filtered(cs: dict[str, Any], filters: list[dict[str, Any]]) -> set[str] | None:
    """is-a / descendent-of / = on concept; other filters are not evaluated here (None)."""
    result: set[str] | None = None
    for f in filters:
        op, value, prop = f.get("op"), f.get("value", ""), f.get("property")
        if prop == "concept" and op in ("is-a", "descendent-of"):
            picked = _descendants(cs.get("concept", []), value, op == "is-a")
        elif prop == "concept" and op == "=":
            picked = {value}
        else:
            return None
        if picked is None:
            return None
        result = picked if result is None else result & picked
    return result


def _expand(registry: Registry, vs: dict[str, Any]) -> Expansion:
    exp = Expansion()
    if "compose" not in vs and vs.get("expansion", {}).get("contains"):
        for c in _flatten(vs["expansion"]["contains"]):
            if c.get("system") and c.get("code"):
                exp.codes.setdefault(c["system"], set()).add(c["code"])
        return exp
    compose = vs.get("compose", {})
    for inc in compose.get("include", []):
        _include(registry, inc, exp)
    for exc in compose.get("exclude", []):
        if exc.get("system") and exc.get("concept") and exc["system"] in exp.codes:
            exp.codes[exc["system"]] -= {c["code"] for c in exc["concept"]}
    return exp


def _flatten(contains: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for c in contains:
        out.append(c)
        out.extend(_flatten(c.get("contains", [])))
    return out


def member(exp: Expansion, system: str | None, code: str) -> str:
    """IN, OUT or UNKNOWN for one code (a `code` element has no system: any system will do)."""
    if system is None:
        if any(code in codes for codes in exp.codes.values()):
            return IN
        return UNKNOWN if exp.open_systems or not exp.complete else OUT
    if code in exp.codes.get(system, ()):
        return IN
    if system in exp.open_systems or not exp.complete:
        return UNKNOWN
    return OUT
