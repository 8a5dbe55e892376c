"""Invariants (`constraint.expression`): FHIRPath compiled once and cached.

A few base invariants run natively, because they sit on every element or resource: ele-1, ext-1,
dom-2 and dom-4 are checked by the structural validator (hub/fhirmodel/validate.py); dom-3, dom-5,
dom-6 and ref-1 are written out below. Most others hold trivially because the element they test is
absent (the guards below). The rest are compiled by the search engine's FHIRPath compiler
(hub/search/fhirpath.py) when they are in its subset, which is several times faster than
fhirpathpy, and by fhirpathpy otherwise, with hasValue(), htmlChecks() (the structural validator
checks the XHTML) and memberOf() (value sets expanded locally) added to it. An expression neither
can evaluate (conformsTo(), resolve() in fhirpathpy, ...) is skipped, with one log line.
"""

from __future__ import annotations

import contextvars
import logging
import re
import threading
from collections.abc import Callable
from typing import Any

from fhirpathpy import compile as fhirpath_compile
from fhirpathpy.engine.nodes import ResourceNode
from fhirpathpy.models import models

from hub.search.fhirpath import Evaluator, FhirPathError, compile_expression

log = logging.getLogger("hub.profiles")

_Fn = Callable[..., Any]
_compiled: dict[str, _Fn | None] = {}
_lock = threading.Lock()
SKIPPED: set[str] = set()  # expressions skipped as unsupported (for reports)

STRUCTURAL = frozenset({"ele-1", "ext-1", "dom-2", "dom-4"})


def _references(value: Any, out: set[str]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            if k == "reference" and isinstance(v, str):
                out.add(v)
            elif k != "contained":
                _references(v, out)
    elif isinstance(value, list):
        for v in value:
            _references(v, out)


def _dom3(res: Any, root: Any) -> bool:
    contained = res.get("contained") if isinstance(res, dict) else None
    if not contained:
        return True
    refs: set[str] = set()
    _references(res, refs)
    for c in contained:
        refs_in_c: set[str] = set()
        _references(c, refs_in_c)
        if f"#{c.get('id')}" not in refs and "#" not in refs_in_c:
            return False
    return True


def _dom5(res: Any, root: Any) -> bool:
    return not any((c.get("meta") or {}).get("security") for c in res.get("contained", ()) if isinstance(c, dict))


def _dom6(res: Any, root: Any) -> bool:
    return bool((res.get("text") or {}).get("div"))


def _ref1(ref: Any, root: Any) -> bool:
    r = ref.get("reference") if isinstance(ref, dict) else None
    if not isinstance(r, str) or not r.startswith("#") or r == "#":
        return True
    return any(isinstance(c, dict) and c.get("id") == r[1:] for c in (root or {}).get("contained", ()))


def _has_value(inputs: list[Any]) -> list[bool]:
    """FHIRPath hasValue(): a single primitive with a value (not only extensions)."""
    return [len(inputs) == 1 and inputs[0] is not None and not isinstance(inputs[0], (dict, list))]


def _html_checks(inputs: list[Any]) -> list[bool]:
    return [True]  # the structural validator checks the XHTML of Narrative.div


# The registry whose value sets memberOf() consults: set by the validator for the run in progress.
TERMINOLOGY: contextvars.ContextVar[Any] = contextvars.ContextVar("profiles_terminology", default=None)


def _member_of(inputs: list[Any], url: str) -> list[bool]:
    """memberOf(url) against a locally expanded value set; empty (cannot tell) when the value set
    or the code system is not known here, which makes the invariant hold."""
    from profiles.terminology import IN, OUT, expansion, member

    registry = TERMINOLOGY.get()
    exp = expansion(registry, url) if registry is not None and len(inputs) == 1 else None
    if exp is None:
        return []
    value = inputs[0]
    if isinstance(value, str):
        pairs: list[tuple[Any, Any]] = [(None, value)]
    elif isinstance(value, dict):
        codings = value.get("coding", [value]) if "coding" in value else [value]
        pairs = [(c.get("system"), c.get("code")) for c in codings if isinstance(c, dict) and c.get("code")]
    else:
        return []
    verdicts = [member(exp, system, str(code)) for system, code in pairs]
    if IN in verdicts:
        return [True]
    return [False] if verdicts and all(v == OUT for v in verdicts) else []


_OPTIONS = {
    "userInvocationTable": {
        "hasValue": {"fn": _has_value, "arity": {0: []}},
        "htmlChecks": {"fn": _html_checks, "arity": {0: []}},
        "memberOf": {"fn": _member_of, "arity": {1: ["String"]}},
    }
}

NATIVE: dict[str, Callable[[Any, Any], bool]] = {"dom-3": _dom3, "dom-5": _dom5, "dom-6": _dom6, "ref-1": _ref1}


def _compile(expression: str) -> _Fn | None:
    with _lock:
        if expression in _compiled:
            return _compiled[expression]
        try:
            fn: _Fn | None = fhirpath_compile(expression, models["r4"], _OPTIONS)
        except Exception as exc:  # the parser's errors are plain Exceptions
            _skip(expression, exc)
            fn = None
        _compiled[expression] = fn
        return fn


def _skip(expression: str, exc: Exception) -> None:
    if expression not in SKIPPED:
        SKIPPED.add(expression)
        log.info("invariant not evaluated (%s): %s", exc, expression)
    _compiled[expression] = None


# -- guards: invariants that hold trivially because the element they test is absent -----------------
#
# Most invariants read "A.empty() or B" or "A.exists() implies B": when A's first element is not
# in the value, the answer is true without running the engine. The guard is conservative: it says
# true only for those shapes, and the engine decides everything else.

_NAME = re.compile(r"^[a-z][A-Za-z0-9]*")
_ABSENT_TRUE = (".empty()", ".hasValue().not()", ".exists().not()")


def _top_split(expr: str, word: str) -> list[str]:
    """Split at ` word ` outside parentheses and quotes."""
    parts, depth, quote, start, i = [], 0, False, 0, 0
    token = f" {word} "
    while i < len(expr):
        c = expr[i]
        if c == "'" and (i == 0 or expr[i - 1] != "\\"):
            quote = not quote
        elif not quote and c == "(":
            depth += 1
        elif not quote and c == ")":
            depth -= 1
        elif not quote and depth == 0 and expr.startswith(token, i):
            parts.append(expr[start:i])
            start = i + len(token)
            i = start
            continue
        i += 1
    parts.append(expr[start:])
    return [p.strip() for p in parts]


def _outside_parens(text: str) -> str:
    out, depth, quote = [], 0, False
    for c in text:
        if c == "'":
            quote = not quote
        elif not quote and c == "(":
            depth += 1
        elif not quote and c == ")":
            depth -= 1
        elif not quote and depth == 0:
            out.append(c)
    return "".join(out)


def _unwrap(part: str) -> str:
    """Drop parentheses around the whole expression (only when the first one closes at the end)."""
    while part.startswith("(") and part.endswith(")"):
        depth, quote = 0, False
        for i, c in enumerate(part):
            if c == "'":
                quote = not quote
            elif not quote and c == "(":
                depth += 1
            elif not quote and c == ")":
                depth -= 1
                if depth == 0 and i != len(part) - 1:
                    return part
        part = part[1:-1].strip()
    return part


def _chain_head(part: str) -> str | None:
    """The first name of a navigation chain with no top-level operator (`component.code.where(...)`)."""
    m = _NAME.match(part)
    if m is None:
        return None
    flat = _outside_parens(part)
    if any(op in flat for op in (" ", "=", "<", ">", "|", "+", "-", "*", "/")):
        return None  # an operator at the top level: not a plain chain
    if part[m.end() : m.end() + 1] not in (".", ""):
        return None
    return m.group(0)


_Guard = tuple[Any, ...]
_EXT_ON = re.compile(r"^([a-z][A-Za-z0-9]*)\.extension\('([^']*)'\)$")
_SIMPLE = re.compile(r"^([a-z][A-Za-z0-9]*)\.(exists|hasValue)\(\)$")


def _guard_of(expr: str) -> _Guard | None:
    """A check that proves the invariant true from what is present, or None.

    ("implies", heads, guard): true when every head is absent, or when the consequent's guard holds;
    ("or", [guards]): true when one alternative's guard holds; ("absent", name): `name....empty()`
    and friends; ("present", name, how): `name.exists()` / `name.hasValue()`."""
    expr = _unwrap(expr.strip())
    implied = _top_split(expr, "implies")
    if len(implied) == 2:
        heads: list[Any] = []
        for p in _top_split(_unwrap(implied[0]), "or"):
            p = _unwrap(p)
            for suffix in (".exists()", ".empty().not()"):
                if p.endswith(suffix):
                    p = p[: -len(suffix)]
                    break
            else:
                heads = []
                break
            ext = _EXT_ON.match(p)
            head: Any = (ext.group(1), ext.group(2)) if ext else _chain_head(p)
            if head is None:
                heads = []
                break
            heads.append(head)
        consequent = _guard_of(implied[1])
        return ("implies", heads, consequent) if heads or consequent else None
    if len(implied) > 2:
        return None
    parts = _top_split(expr, "or")
    if len(parts) > 1:
        subs = [g for g in (_guard_of(p) for p in parts) if g is not None]
        return ("or", subs) if subs else None
    m = _SIMPLE.match(expr)
    if m:
        return ("present", m.group(1), m.group(2))
    if expr.endswith(_ABSENT_TRUE):
        head = _chain_head(expr)
        if head is not None:
            return ("absent", head)
    return None


def _proves(guard: _Guard, value: dict[str, Any]) -> bool:
    kind = guard[0]
    if kind == "absent":
        return _absent(value, guard[1])
    if kind == "present":
        if guard[2] == "hasValue":
            found = value.get(guard[1])
            return found is not None and not isinstance(found, (dict, list))
        return not _absent(value, guard[1])
    if kind == "or":
        return any(_proves(g, value) for g in guard[1])
    heads, consequent = guard[1], guard[2]
    if heads and all(_absent(value, h) for h in heads):
        return True
    return consequent is not None and _proves(consequent, value)


_guards: dict[str, _Guard | None] = {}


def _absent(value: Any, name: Any) -> bool:
    if isinstance(name, tuple):  # (element, url): no extension with that url on the element
        element, url = name
        for holder in (value.get(element), value.get("_" + element)):
            for h in holder if isinstance(holder, list) else [holder]:
                if isinstance(h, dict) and any(
                    isinstance(e, dict) and e.get("url") == url for e in h.get("extension", ())
                ):
                    return False
        return True
    if name in value or "_" + name in value:
        return False
    n = len(name)
    return not any(k.startswith(name) and k[n : n + 1].isupper() for k in value)


def trivially_holds(expression: str, value: Any) -> bool:
    if expression not in _guards:
        _guards[expression] = _guard_of(expression)
    guard = _guards[expression]
    return guard is not None and isinstance(value, dict) and _proves(guard, value)


_native: dict[tuple[str, str, str], Evaluator | None] = {}


def _compiled_subset(expression: str, type_path: str, root_type: str) -> Evaluator | None:
    """The search engine's FHIRPath compiler (hub/search/fhirpath.py) for this context, or None when
    the expression is outside its subset (then fhirpathpy evaluates it)."""
    key = (expression, type_path, root_type)
    if key not in _native:
        try:
            ev: Evaluator | None = compile_expression(expression, type_path, root_type=root_type)
        except FhirPathError:
            ev = None
        _native[key] = None if ev is None or ev.fallback else ev
    return _native[key]


def holds(key: str, expression: str, value: Any, root: Any, type_path: str | None = None) -> bool | None:
    """Whether the invariant holds on `value` (True/False), or None when it cannot be evaluated.

    `type_path` (a type name or a backbone path such as `Observation.component`) types the value, so
    that a choice element (`value` for valueQuantity) resolves below the root. Evaluated by the
    compiled FHIRPath subset when it can, else by fhirpathpy."""
    native = NATIVE.get(key)
    if native is not None:
        return native(value, root)
    if trivially_holds(expression, value):
        return True
    root_type = root.get("resourceType", "Resource") if isinstance(root, dict) else "Resource"
    context = type_path or root_type
    ev = _compiled_subset(expression, context, root_type)
    if ev is not None:
        try:
            out = ev.on([(value, context)], (root, root_type))
        except FhirPathError:
            out = None
        if out is not None:
            return _verdict([v for v, _ in out])
    return _by_fhirpathpy(expression, value, root, type_path)


def _verdict(result: list[Any]) -> bool:
    if not result:
        return True  # an empty result is not a failure
    return result[0] is not False if len(result) == 1 else True


def _by_fhirpathpy(expression: str, value: Any, root: Any, type_path: str | None) -> bool | None:
    fn = _compiled.get(expression) if expression in _compiled else _compile(expression)
    if fn is None:
        return None
    try:
        base = ResourceNode.create_node(value, type_path) if type_path and value is not root else value
        result = fn(base, {"resource": root, "rootResource": root, "context": value})
    except Exception as exc:  # fhirpathpy raises Exception("Not implemented: ...") and others
        with _lock:
            _skip(expression, exc)
        return None
    return _verdict(result)
