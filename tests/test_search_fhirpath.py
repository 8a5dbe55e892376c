"""The compiled FHIRPath evaluator agrees with fhirpathpy on every search-parameter expression.

For every (parameter, base type) of the R4 registry, the compiled expression is evaluated on sample
resources of that type (Synthea, and the Nictiz zib2020 examples via the XML parser) and compared
with fhirpathpy on the same branch of the expression, values AND FHIR types. fhirpathpy has no
resolve(), so the test gives it one with the same meaning as ours (the type in the reference text).
"""

from __future__ import annotations

import json
from collections import defaultdict
from decimal import Decimal
from typing import Any

import fhirpathpy
import pytest
from fhirpathpy.engine.nodes import ResourceNode
from fhirpathpy.models import models
from support import NICTIZ_EXAMPLES, SYNTHEA, nictiz_example_files, synthea_bundle, synthea_files

from hub.search.fhirpath import (
    FhirPathError,
    branch_root,
    compile_expression,
    compile_for_base,
    parse,
    parse_reference,
    union_branches,
)
from hub.search.registry import Registry

PER_TYPE = 12  # sample resources per type: the biggest ones, which exercise the most elements
SYNTHEA_FILES = 6


def _without_primitive_extensions(node: Any) -> Any:
    """fhirpathpy compares a primitive that has extensions (`_system`) unequal to a plain string,
    e.g. `telecom.where(system='phone')` misses such phones; ours does not. Compare without them."""
    if isinstance(node, dict):
        return {k: _without_primitive_extensions(v) for k, v in node.items() if not k.startswith("_")}
    if isinstance(node, list):
        return [_without_primitive_extensions(v) for v in node]
    return node


def _with_local_refs(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    """A transaction's resources with urn:uuid references rewritten to Type/id, as the hub stores them."""
    local = {
        e["fullUrl"]: f"{e['resource']['resourceType']}/{e['resource']['id']}"
        for e in bundle["entry"]
        if "fullUrl" in e and "id" in e["resource"]
    }

    def fix(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("reference")
            if isinstance(ref, str) and ref in local:
                node = {**node, "reference": local[ref]}
            return {k: fix(v) for k, v in node.items()}
        if isinstance(node, list):
            return [fix(v) for v in node]
        return node

    return [fix(e["resource"]) for e in bundle["entry"]]


def _sample() -> list[dict[str, Any]]:
    by_type: dict[str, list[dict[str, Any]]] = defaultdict(list)
    files = [f for f in synthea_files() if f.name.startswith("0-")] + [
        f for f in synthea_files() if not f.name.startswith("0-")
    ][:SYNTHEA_FILES]
    for f in files:
        for r in _with_local_refs(synthea_bundle(f.name)):
            by_type[r["resourceType"]].append(r)
    if NICTIZ_EXAMPLES.is_dir():
        try:
            from hub.formats.xml import parse_xml
        except ImportError:  # the XML converter is optional for this test
            parse_xml = None  # type: ignore[assignment]
        if parse_xml is not None:
            for path in nictiz_example_files():
                r = parse_xml(path.read_bytes())
                by_type[r["resourceType"]].append(r)
    sample: list[dict[str, Any]] = []
    for resources in by_type.values():
        biggest = sorted(resources, key=lambda r: -len(json.dumps(r, default=str)))[:PER_TYPE]
        sample.extend(_without_primitive_extensions(r) for r in biggest)
    return sample


pytestmark = pytest.mark.skipif(not SYNTHEA.is_dir(), reason="Synthea fixtures not available")


@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry.load()


@pytest.fixture(scope="module")
def sample() -> list[dict[str, Any]]:
    return _sample()


# --- fhirpathpy as the reference ---------------------------------------------------------------


def _fp_resolve(inputs: list[Any]) -> list[Any]:
    out = []
    for value in inputs:
        ref = value.get("reference") if isinstance(value, dict) else value
        parsed = parse_reference(ref) if isinstance(ref, str) else None
        if parsed is not None:
            out.append(ResourceNode.create_node({"resourceType": parsed[0], "id": parsed[1]}, parsed[0]))
    return out


_FP_OPTIONS = {"returnRawData": True, "userInvocationTable": {"resolve": {"fn": _fp_resolve, "arity": {0: []}}}}


def _split_top_level(expression: str) -> list[str]:
    """`a | (b) | c` -> ["a", "b", "c"], splitting only outside parentheses and quotes."""
    parts, depth, quote, start = [], 0, False, 0
    for i, ch in enumerate(expression):
        if ch == "'":
            quote = not quote
        elif not quote and ch == "(":
            depth += 1
        elif not quote and ch == ")":
            depth -= 1
        elif not quote and depth == 0 and ch == "|":
            parts.append(expression[start:i].strip())
            start = i + 1
    parts.append(expression[start:].strip())
    return [_unwrap(p) for p in parts]


def _unwrap(text: str) -> str:
    while text.startswith("(") and text.endswith(")") and _balanced(text[1:-1]):
        text = text[1:-1].strip()
    return text


def _balanced(text: str) -> bool:
    depth = 0
    for ch in text:
        depth += (ch == "(") - (ch == ")")
        if depth < 0:
            return False
    return depth == 0


def _reference_text(expression: str, base: str) -> str:
    """The branches of `expression` for `base`, rewritten where fhirpathpy differs on purpose."""
    branches = [b for b in _split_top_level(expression) if _applies(b, base)]
    text = " | ".join(f"({b})" for b in branches)
    for root in ("Resource.", "DomainResource."):  # fhirpathpy does not match a base type's name
        text = text.replace(f"({root}", f"({base}.")
    return text.replace("ofType(DateTime)", "ofType(dateTime)")  # R4's spelling of FHIR dateTime


def _applies(branch: str, base: str) -> bool:
    head = branch.split(".", 1)[0]
    return not head[:1].isupper() or head in (base, "Resource", "DomainResource")


_fp_cache: dict[str, Any] = {}


def _fhirpathpy(text: str, resource: dict[str, Any]) -> set[tuple[str, str | None]]:
    fn = _fp_cache.get(text)
    if fn is None:
        fn = _fp_cache[text] = fhirpathpy.compile(text, model=models["r4"], options=_FP_OPTIONS)
    out: set[tuple[str, str | None]] = set()
    for item in fn(resource, {}):
        if isinstance(item, ResourceNode):
            if isinstance(item.data, dict) and list(item.data) == ["extension"]:
                continue  # fhirpathpy's stand-in for a primitive that only has extensions
            out.add((_canon(item.data), item.path))
        else:
            out.add((_canon(item), _python_type(item)))
    return out


def _python_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    return "decimal" if isinstance(value, (float, Decimal)) else "string"


def _canon(value: Any) -> str:
    def norm(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: norm(x) for k, x in v.items()}
        if isinstance(v, list):
            return [norm(x) for x in v]
        if isinstance(v, (int, float, Decimal)) and not isinstance(v, bool):
            return f"num:{Decimal(str(v)).normalize()}"
        return v

    return json.dumps(norm(value), sort_keys=True)


def _ours(evaluator: Any, resource: dict[str, Any]) -> set[tuple[str, str]]:
    return {(_canon(v), t) for v, t in evaluator(resource)}


# --- the comparison ------------------------------------------------------------------------------


def _agree(ours: set[tuple[str, str]], theirs: set[tuple[str, str | None]]) -> bool:
    """Same values with the same types. fhirpathpy types Element.id and friends as System.String and
    sometimes loses the type of a union's items (None): there only the value is compared."""
    if {v for v, _ in ours} != {v for v, _ in theirs}:
        return False
    typed = {(v, t) for v, t in theirs if t is not None and not t.startswith("System.")}
    return typed <= ours and len(ours) == len(theirs)


def test_every_expression_agrees_with_fhirpathpy(registry: Registry, sample: list[dict[str, Any]]) -> None:
    by_type: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in sample:
        by_type[r["resourceType"]].append(r)
    compared = nonempty = 0
    mismatches: list[str] = []
    for rt, resources in sorted(by_type.items()):
        for param in registry.for_type(rt):
            if not param.expression:
                continue
            base = rt if rt in param.base else param.base[0]
            evaluator = param.extractor(base)
            if evaluator is None:
                continue
            text = _reference_text(param.expression, rt)
            for resource in resources:
                ours, theirs = _ours(evaluator, resource), _fhirpathpy(text, resource)
                compared += 1
                nonempty += bool(theirs)
                if not _agree(ours, theirs):
                    mismatches.append(
                        f"{rt}/{resource.get('id')} {param.code}: {text}\n  ours {ours}\n  fhirpathpy {theirs}"
                    )
    assert not mismatches, f"{len(mismatches)} of {compared} differ:\n" + "\n".join(mismatches[:10])
    assert compared > 3000 and nonempty > 800, (compared, nonempty)


def test_composite_components_agree_with_fhirpathpy(registry: Registry, sample: list[dict[str, Any]]) -> None:
    """Component expressions run on each element the composite selects, with %resource the resource."""
    compared = 0
    for resource in sample:
        rt = resource["resourceType"]
        root = (resource, rt)
        for param in registry.for_type(rt):
            evaluator = (
                param.extractor(rt if rt in param.base else param.base[0]) if param.type == "composite" else None
            )
            if evaluator is None:
                continue
            for value, typ in evaluator(resource):
                for _, expression in param.components:
                    component = compile_expression(expression, typ, root_type=rt)
                    ours = {(_canon(v), t) for v, t in component.on([(value, typ)], root)}
                    text = expression.replace("ofType(DateTime)", "ofType(dateTime)")
                    fn = _fp_cache.get(text) or fhirpathpy.compile(text, model=models["r4"], options=_FP_OPTIONS)
                    _fp_cache[text] = fn
                    node = resource if typ == rt else ResourceNode.create_node(value, typ)
                    theirs = {(_canon(x.data), x.path) for x in fn(node, {"resource": resource})}
                    assert _agree(ours, theirs), (rt, resource.get("id"), param.code, expression, ours, theirs)
                    compared += 1
    assert compared > 500


def test_no_search_parameter_falls_back(registry: Registry) -> None:
    """Every R4 expression compiles (strictly: all elements exist) for each of its base types."""
    fallbacks = []
    for param in registry.all():
        if not param.expression:
            continue
        for base in param.base:
            evaluator = compile_for_base(param.expression, base, strict=True)
            assert evaluator is not None, (param.url, base)
            if evaluator.fallback:
                fallbacks.append((param.url, base))
    assert fallbacks == []


def test_constructs_used_by_r4_expressions_are_all_compiled(registry: Registry) -> None:
    """The inventory of the R4 expressions: every construct they use, none outside the compiled subset."""
    found: set[str] = set()

    def walk(ast: Any) -> None:
        kind = ast[0]
        if kind == "call":
            found.add(f"{ast[2]}()")
        elif kind in ("binop", "typeop"):
            found.add(ast[1])
        elif kind in ("index", "var", "lit"):
            found.add(kind if kind != "var" else f"%{ast[1]}")
        for child in ast[1:]:
            if isinstance(child, tuple):
                walk(child)
            elif isinstance(child, list):
                for c in child:
                    walk(c)

    for param in registry.all():
        for expression in [param.expression or "", *(e for _, e in param.components)]:
            if expression:
                walk(parse(expression))
    assert found == {"|", "where()", "resolve()", "is", "ofType()", "exists()", "and", "!=", "=", "lit", "index"} | {
        "%resource"
    }


def test_union_branches_per_base_type() -> None:
    expression = "AllergyIntolerance.code | (DeviceRequest.code.ofType(CodeableConcept)) | Observation.code"
    branches = union_branches(parse(expression))
    assert [branch_root(b) for b in branches] == ["AllergyIntolerance", "DeviceRequest", "Observation"]
    ev = compile_for_base(expression, "Observation")
    assert ev is not None and ev({"resourceType": "Observation", "code": {"text": "x"}}) == [
        ({"text": "x"}, "CodeableConcept")
    ]
    assert compile_for_base(expression, "Patient") is None


def test_choice_types_and_type_functions() -> None:
    obs = {
        "resourceType": "Observation",
        "valueQuantity": {"value": 5, "unit": "mg"},
        "effectivePeriod": {"start": "2020"},
        "subject": {"reference": "https://x.org/fhir/Patient/1/_history/2"},
        "performer": [{"reference": "Practitioner/7"}, {"reference": "#contained"}],
    }
    assert compile_expression("Observation.value", "Observation")(obs) == [({"value": 5, "unit": "mg"}, "Quantity")]
    assert compile_expression("Observation.value as Quantity", "Observation")(obs)[0][1] == "Quantity"
    assert compile_expression("Observation.value.as(Quantity)", "Observation")(obs)[0][1] == "Quantity"
    assert compile_expression("Observation.value.ofType(string)", "Observation")(obs) == []
    assert compile_expression("Observation.value is Quantity", "Observation")(obs) == [(True, "boolean")]
    assert compile_expression("Observation.effective", "Observation")(obs)[0][1] == "Period"
    where_patient = compile_expression("Observation.subject.where(resolve() is Patient)", "Observation")
    assert len(where_patient(obs)) == 1
    performers = compile_expression("Observation.performer.where(resolve() is Practitioner)", "Observation")
    assert performers(obs) == [({"reference": "Practitioner/7"}, "Reference")]
    assert compile_expression("Observation.performer[1].reference", "Observation")(obs) == [("#contained", "string")]
    assert compile_expression("Observation.performer.first().exists()", "Observation")(obs) == [(True, "boolean")]


def test_extension_and_where_predicates() -> None:
    patient = {
        "resourceType": "Patient",
        "extension": [{"url": "http://x/nat", "valueCodeableConcept": {"text": "NL"}}, {"url": "u2", "valueCode": "a"}],
        "telecom": [{"system": "phone", "value": "1"}, {"system": "email", "value": "a@b"}],
        "identifier": [{"system": "http://fhir.nl/fhir/NamingSystem/bsn", "value": "999911120"}],
    }
    ext = compile_expression("Patient.extension('http://x/nat').value", "Patient")
    assert ext(patient) == [({"text": "NL"}, "CodeableConcept")]
    email = compile_expression("Patient.telecom.where(system = 'email').value", "Patient")
    assert email(patient) == [("a@b", "string")]
    bsn = compile_expression(
        "Patient.identifier.where(system='http://fhir.nl/fhir/NamingSystem/bsn').value.exists()", "Patient"
    )
    assert bsn(patient) == [(True, "boolean")]
    deceased = compile_expression("Patient.deceased.exists() and Patient.deceased != false", "Patient")
    assert deceased(patient) == [(False, "boolean")]
    assert deceased({**patient, "deceasedDateTime": "2020"}) == [(True, "boolean")]
    assert deceased({**patient, "deceasedBoolean": False}) == [(False, "boolean")]


def test_fallback_for_functions_outside_the_subset() -> None:
    ev = compile_expression("Patient.name.given.iif($this.length() > 3, $this, {})", "Patient")
    assert ev.fallback
    ev2 = compile_expression("Patient.name.children()", "Patient")
    assert ev2.fallback
    out = ev2({"resourceType": "Patient", "name": [{"family": "Jansen"}]})
    assert ("Jansen", "string") in out


def test_bad_expressions_are_rejected_in_strict_mode() -> None:
    with pytest.raises(FhirPathError):
        compile_expression("Patient.nonsense", "Patient", strict=True)
    with pytest.raises(FhirPathError):
        compile_expression("Patient.name.where(", "Patient", strict=True)
    with pytest.raises(FhirPathError):
        compile_expression("Patient.value.ofType(NoSuchType)", "Patient", strict=True)
