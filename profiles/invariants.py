"""Invariants (`constraint.expression`): FHIRPath compiled once with fhirpathpy and cached.

A few base invariants run natively instead, because they sit on every element or resource and the
FHIRPath engine would cost more than the rest of the validation: ele-1, ext-1, dom-2 and dom-4 are
already checked by the structural validator (hub/fhirmodel/validate.py); dom-3, dom-5, dom-6 and
ref-1 are written out below. hasValue() is added to the engine (and htmlChecks(), which the
structural validator has done). An expression the engine cannot evaluate (a function it does not
implement, such as conformsTo() or memberOf()) is skipped, with one log line per expression.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from fhirpathpy import compile as fhirpath_compile
from fhirpathpy.engine.nodes import ResourceNode
from fhirpathpy.models import models

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


_OPTIONS = {
    "userInvocationTable": {
        "hasValue": {"fn": _has_value, "arity": {0: []}},
        "htmlChecks": {"fn": _html_checks, "arity": {0: []}},
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


def holds(key: str, expression: str, value: Any, root: Any, type_path: str | None = None) -> bool | None:
    """Whether the invariant holds on `value` (True/False), or None when it cannot be evaluated.

    `type_path` (a type name or a backbone path such as `Observation.component`) types the value for
    the engine, so that a choice element (`value` for valueQuantity) resolves below the root."""
    native = NATIVE.get(key)
    if native is not None:
        return native(value, root)
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
    if not result:
        return True  # an empty result is not a failure
    return result[0] is not False if len(result) == 1 else True
