"""hub.fhirmodel.validate: base-R4 structural validation of JSON resources."""

from __future__ import annotations

import copy
from decimal import Decimal
from typing import Any

import pytest
from support import synthea_bundle, synthea_files, synthea_resources

from hub.fhirmodel.validate import has_errors, validate_resource

XHTML = 'xmlns="http://www.w3.org/1999/xhtml"'
OBS: dict[str, Any] = {"resourceType": "Observation", "status": "final", "code": {"text": "weight"}}


def _obs(**extra: Any) -> dict[str, Any]:
    return {**copy.deepcopy(OBS), **extra}


def _pat(**extra: Any) -> dict[str, Any]:
    return {"resourceType": "Patient", **extra}


def _found(res: Any, **kw: Any) -> list[tuple[str, str]]:
    """(code, expression) of the errors validate_resource reports."""
    return [
        (i.code, i.expression[0] if i.expression else "") for i in validate_resource(res, **kw) if i.severity == "error"
    ]


# -- real data validates ------------------------------------------------------------------------------


def _failures(resources: list[dict[str, Any]]) -> list[str]:
    return [
        f"{r.get('resourceType')}/{r.get('id')}: {i.code} {i.expression} {i.diagnostics}"
        for r in resources
        for i in validate_resource(r)
    ]


def test_synthea_patient_resources_are_valid() -> None:
    resources = list(synthea_resources(limit_files=10))
    assert len(resources) > 3000
    assert _failures(resources)[:10] == []


def test_synthea_hospital_and_practitioner_bundles_are_valid() -> None:
    bundles = [synthea_bundle(f.name) for f in synthea_files() if f.name.startswith("0-")]
    assert len(bundles) == 2
    assert _failures([e["resource"] for b in bundles for e in b["entry"]]) == []
    assert _failures(bundles) == []  # the batch Bundles themselves, entries and requests included


def test_synthea_transaction_bundle_is_valid() -> None:
    first = next(f for f in synthea_files() if not f.name.startswith("0-"))
    assert _failures([synthea_bundle(first.name)]) == []


# -- broken resources: (code, expression) -------------------------------------------------------------

BROKEN: list[tuple[str, Any, list[tuple[str, str]]]] = [
    ("unknown element", _pat(foo=1), [("structure", "Patient.foo")]),
    (
        "unknown element deep",
        _pat(contact=[{"name": {"family": "Jansen", "bar": 2}}]),
        [("structure", "Patient.contact[0].name.bar")],
    ),
    ("missing status", {"resourceType": "Observation", "code": {"text": "x"}}, [("required", "Observation.status")]),
    ("missing code", {"resourceType": "Observation", "status": "final"}, [("required", "Observation.code")]),
    (
        "missing required choice",
        {"resourceType": "MedicationRequest", "status": "active", "intent": "order", "subject": {"reference": "P/1"}},
        [("required", "MedicationRequest.medication")],
    ),
    ("max-1 primitive as array", _pat(gender=["male"]), [("structure", "Patient.gender")]),
    ("max-1 complex as array", _pat(maritalStatus=[{"text": "x"}]), [("structure", "Patient.maritalStatus")]),
    ("list as scalar", _pat(name={"family": "x"}), [("structure", "Patient.name")]),
    ("primitive list as scalar", _pat(name=[{"given": "Jan"}]), [("structure", "Patient.name[0].given")]),
    ("empty array", _pat(name=[]), [("structure", "Patient.name")]),
    ("empty object", _pat(maritalStatus={}), [("structure", "Patient.maritalStatus")]),
    ("empty object in array", _pat(name=[{"text": "x"}, {}]), [("structure", "Patient.name[1]")]),
    ("null in complex array", _pat(name=[{"family": "x"}, None]), [("structure", "Patient.name[1]")]),
    ("null single value", _pat(gender=None), [("structure", "Patient.gender")]),
    ("string as object", _pat(maritalStatus="married"), [("structure", "Patient.maritalStatus")]),
    ("boolean as string", _pat(active="true"), [("structure", "Patient.active")]),
    ("boolean as number", _pat(active=1), [("structure", "Patient.active")]),
    ("integer as string", _pat(multipleBirthInteger="2"), [("structure", "Patient.multipleBirth.ofType(integer)")]),
    ("integer as boolean", _pat(multipleBirthInteger=True), [("structure", "Patient.multipleBirth.ofType(integer)")]),
    ("integer with fraction", _pat(multipleBirthInteger=1.5), [("value", "Patient.multipleBirth.ofType(integer)")]),
    ("integer above 32 bits", _pat(multipleBirthInteger=2**31), [("value", "Patient.multipleBirth.ofType(integer)")]),
    (
        "integer below 32 bits",
        _pat(multipleBirthInteger=-(2**31) - 1),
        [("value", "Patient.multipleBirth.ofType(integer)")],
    ),
    (
        "positiveInt 0",
        {"resourceType": "ImmunizationRecommendation", "recommendation": [{"doseNumberPositiveInt": 0}]},
        [  # nested issues come first: an object's required elements are checked after its content
            ("value", "ImmunizationRecommendation.recommendation[0].doseNumber.ofType(positiveInt)"),
            ("required", "ImmunizationRecommendation.recommendation[0].forecastStatus"),
            ("required", "ImmunizationRecommendation.patient"),
            ("required", "ImmunizationRecommendation.date"),
        ],
    ),
    ("unsignedInt -1", _pat(photo=[{"size": -1}]), [("value", "Patient.photo[0].size")]),
    (
        "decimal as string",
        _obs(valueQuantity={"value": "1.5"}),
        [("structure", "Observation.value.ofType(Quantity).value")],
    ),
    (
        "decimal as boolean",
        _obs(valueQuantity={"value": False}),
        [("structure", "Observation.value.ofType(Quantity).value")],
    ),
    (
        "decimal NaN",
        _obs(valueQuantity={"value": Decimal("NaN")}),
        [("value", "Observation.value.ofType(Quantity).value")],
    ),
    ("date month 13", _pat(birthDate="2020-13-01"), [("value", "Patient.birthDate")]),
    ("date February 30", _pat(birthDate="2020-02-30"), [("value", "Patient.birthDate")]),
    ("date February 29 non-leap", _pat(birthDate="2023-02-29"), [("value", "Patient.birthDate")]),
    ("date with time", _pat(birthDate="2020-02-01T10:00:00Z"), [("value", "Patient.birthDate")]),
    (
        "dateTime with time but no zone",
        _pat(deceasedDateTime="2020-02-01T10:00:00"),
        [("value", "Patient.deceased.ofType(dateTime)")],
    ),
    (
        "dateTime hour 24",
        _pat(deceasedDateTime="2020-02-01T24:00:00Z"),
        [("value", "Patient.deceased.ofType(dateTime)")],
    ),
    (
        "dateTime April 31",
        _pat(deceasedDateTime="2020-04-31T10:00:00Z"),
        [("value", "Patient.deceased.ofType(dateTime)")],
    ),
    ("instant without time", _pat(meta={"lastUpdated": "2020-02-01"}), [("value", "Patient.meta.lastUpdated")]),
    (
        "instant without zone",
        _pat(meta={"lastUpdated": "2020-02-01T10:00:00"}),
        [("value", "Patient.meta.lastUpdated")],
    ),
    ("id with underscore", _pat(id="a_b"), [("value", "Patient.id")]),
    ("id too long", _pat(id="a" * 65), [("value", "Patient.id")]),
    ("uri with space", _pat(implicitRules="http://x y"), [("value", "Patient.implicitRules")]),
    ("code with double space", _pat(gender="fe  male"), [("value", "Patient.gender")]),
    ("empty string", _pat(gender=""), [("value", "Patient.gender")]),
    ("empty uri", _pat(implicitRules=""), [("value", "Patient.implicitRules")]),
    ("base64 length", _pat(photo=[{"data": "abc"}]), [("value", "Patient.photo[0].data")]),
    ("base64 chars", _pat(photo=[{"data": "ab*d"}]), [("value", "Patient.photo[0].data")]),
    ("unknown choice type", _pat(deceasedString="yes"), [("structure", "Patient.deceasedString")]),
    ("choice without type", _obs(value="80 kg"), [("structure", "Observation.value")]),
    ("two choice types", _pat(deceasedBoolean=True, deceasedDateTime="2020"), [("structure", "Patient.deceased")]),
    (
        "choice value and other type's companion",
        _pat(deceasedBoolean=True, _deceasedDateTime={"extension": [{"url": "u", "valueCode": "c"}]}),
        [("structure", "Patient.deceased")],
    ),
    (
        "_birthDate bad property",
        _pat(birthDate="2020", _birthDate={"foo": 1}),
        [("structure", "Patient.birthDate.foo")],
    ),
    ("_birthDate as array", _pat(birthDate="2020", _birthDate=[{"id": "a"}]), [("structure", "Patient.birthDate")]),
    ("_birthDate empty", _pat(birthDate="2020", _birthDate={}), [("structure", "Patient.birthDate")]),
    ("_birthDate only id, no value", _pat(_birthDate={"id": "a"}), [("invalid", "Patient.birthDate")]),
    (
        "_birthDate bad extension",
        _pat(_birthDate={"extension": [{"valueString": "x"}]}),
        [("required", "Patient.birthDate.extension[0].url")],
    ),
    ("_name on complex element", _pat(_maritalStatus={"id": "a"}), [("structure", "Patient._maritalStatus")]),
    (
        "_url on extension (XML attribute)",
        _pat(extension=[{"url": "u", "_url": {"id": "x"}, "valueString": "s"}]),
        [("structure", "Patient.extension[0]._url")],
    ),
    (
        "_given shorter than given",
        _pat(name=[{"given": ["Jan", "Piet"], "_given": [None]}]),
        [("structure", "Patient.name[0].given")],
    ),
    (
        "_given longer than given",
        _pat(name=[{"given": ["Jan"], "_given": [None, {"id": "x", "extension": [{"url": "u", "valueCode": "c"}]}]}]),
        [("structure", "Patient.name[0].given")],
    ),
    ("null in primitive array", _pat(name=[{"given": ["Jan", None]}]), [("structure", "Patient.name[0].given[1]")]),
    (
        "null in both arrays",
        _pat(name=[{"given": ["Jan", None], "_given": [None, None]}]),
        [("structure", "Patient.name[0].given[1]")],
    ),
    ("null in _given without given", _pat(name=[{"_given": [None]}]), [("structure", "Patient.name[0].given[0]")]),
    (
        "contained without id",
        _pat(contained=[{"resourceType": "Practitioner", "active": True}]),
        [("required", "Patient.contained[0].ofType(Practitioner).id")],
    ),
    (
        "contained in contained",
        _pat(
            contained=[
                {"resourceType": "Practitioner", "id": "p", "contained": [{"resourceType": "Patient", "id": "q"}]}
            ]
        ),
        [("invalid", "Patient.contained[0].ofType(Practitioner).contained")],
    ),
    (
        "contained with meta.versionId",
        _pat(contained=[{"resourceType": "Practitioner", "id": "p", "meta": {"versionId": "1"}}]),
        [("invalid", "Patient.contained[0].ofType(Practitioner).meta.versionId")],
    ),
    (
        "contained error inside",
        _pat(contained=[{"resourceType": "Practitioner", "id": "p", "gender": "fe  male"}]),
        [("value", "Patient.contained[0].ofType(Practitioner).gender")],
    ),
    (
        "contained abstract",
        _pat(contained=[{"resourceType": "Resource", "id": "p"}]),
        [("invalid", "Patient.contained[0].resourceType")],
    ),
    ("extension without url", _pat(extension=[{"valueString": "x"}]), [("required", "Patient.extension[0].url")]),
    (
        "extension with value and extension",
        _pat(extension=[{"url": "u", "valueString": "x", "extension": [{"url": "v", "valueBoolean": True}]}]),
        [("invalid", "Patient.extension[0]")],
    ),
    ("extension with neither", _pat(extension=[{"url": "u"}]), [("invalid", "Patient.extension[0]")]),
    (
        "extension value type unknown",
        _pat(modifierExtension=[{"url": "u", "valueFoo": 1}]),
        [("structure", "Patient.modifierExtension[0].valueFoo"), ("invalid", "Patient.modifierExtension[0]")],
    ),
    ("narrative not a div", _pat(text={"status": "generated", "div": "<p>x</p>"}), [("value", "Patient.text.div")]),
    ("narrative plain text", _pat(text={"status": "generated", "div": "hello"}), [("value", "Patient.text.div")]),
    (
        "narrative without namespace",
        _pat(text={"status": "generated", "div": "<div>x</div>"}),
        [("value", "Patient.text.div")],
    ),
    (
        "narrative not well-formed",
        _pat(text={"status": "generated", "div": f"<div {XHTML}><b>x</div>"}),
        [("value", "Patient.text.div")],
    ),
    ("narrative without status", _pat(text={"div": f"<div {XHTML}>x</div>"}), [("required", "Patient.text.status")]),
    (
        "_div (xhtml has no extensions)",
        _pat(text={"status": "generated", "div": f"<div {XHTML}>x</div>", "_div": {"id": "d"}}),
        [("structure", "Patient.text._div")],
    ),
    ("element with only an id", _pat(maritalStatus={"id": "m"}), [("invalid", "Patient.maritalStatus")]),
    ("unknown resourceType", {"resourceType": "Foo"}, [("invalid", "resourceType")]),
    ("abstract resourceType", {"resourceType": "DomainResource"}, [("invalid", "resourceType")]),
    ("missing resourceType", {"id": "x"}, [("required", "resourceType")]),
    ("resourceType not a string", {"resourceType": ["Patient"]}, [("structure", "resourceType")]),
    (
        "resourceType in a datatype",
        _pat(maritalStatus={"resourceType": "X", "text": "x"}),
        [("structure", "Patient.maritalStatus.resourceType")],
    ),
    ("not an object", ["Patient"], [("structure", "resourceType")]),
    (
        "error inside Bundle.entry",
        {
            "resourceType": "Bundle",
            "type": "collection",
            "entry": [{"resource": _pat()}, {"resource": {"resourceType": "Observation", "code": {"text": "x"}}}],
        },
        [("required", "Bundle.entry[1].resource.ofType(Observation).status")],
    ),
    (
        "unknown type in Bundle.entry",
        {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": {"resourceType": "Foo"}}]},
        [("invalid", "Bundle.entry[0].resource.resourceType")],
    ),
    (
        "Bundle.entry.resource not an object",
        {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": "Patient/1"}]},
        [("structure", "Bundle.entry[0].resource")],
    ),
    (
        "error inside Parameters.parameter.resource",
        {"resourceType": "Parameters", "parameter": [{"name": "p", "resource": _pat(active="yes")}]},
        [("structure", "Parameters.parameter[0].resource.ofType(Patient).active")],
    ),
    (
        "error inside Bundle.entry.response.outcome",
        {
            "resourceType": "Bundle",
            "type": "batch-response",
            "entry": [{"response": {"status": "400", "outcome": {"resourceType": "OperationOutcome", "issue": [{}]}}}],
        },
        [("structure", "Bundle.entry[0].response.outcome.ofType(OperationOutcome).issue[0]")],
    ),
    (
        "nested backbone via contentReference",
        {
            "resourceType": "Questionnaire",
            "status": "draft",
            "item": [{"linkId": "1", "type": "group", "item": [{"linkId": "1.1", "type": "string", "foo": 1}]}],
        },
        [("structure", "Questionnaire.item[0].item[0].foo")],
    ),
    (
        "required element in nested backbone",
        {
            "resourceType": "Questionnaire",
            "status": "draft",
            "item": [{"linkId": "1", "type": "group", "item": [{"linkId": "2"}]}],
        },
        [("required", "Questionnaire.item[0].item[0].type")],
    ),
    (
        "several issues in one resource",
        _pat(foo=1, gender="", name=[{"given": "x"}], active="no"),
        [
            ("structure", "Patient.foo"),
            ("value", "Patient.gender"),
            ("structure", "Patient.name[0].given"),
            ("structure", "Patient.active"),
        ],
    ),
]


@pytest.mark.parametrize(("resource", "expected"), [(r, e) for _, r, e in BROKEN], ids=[c[0] for c in BROKEN])
def test_broken_resources(resource: Any, expected: list[tuple[str, str]]) -> None:
    assert _found(resource) == expected


def test_issues_are_errors_with_diagnostics() -> None:
    for _, resource, _ in BROKEN:
        issues = validate_resource(resource)
        assert has_errors(issues)
        assert all(i.severity == "error" and i.diagnostics for i in issues)


# Expressions are FHIRPath: where the offending node exists, evaluating the expression finds it.
EVALUABLE = [
    "unknown choice type",
    "dateTime with time but no zone",
    "decimal as string",
    "integer with fraction",
    "null in both arrays",
    "error inside Bundle.entry",
    "contained error inside",
    "error inside Parameters.parameter.resource",
    "_birthDate bad extension",
    "nested backbone via contentReference",
]


@pytest.mark.parametrize("case", EVALUABLE)
def test_expressions_are_fhirpath(case: str) -> None:
    from fhirpathpy import evaluate
    from fhirpathpy.models import models

    resource = next(r for name, r, _ in BROKEN if name == case)
    expression = validate_resource(resource)[0].expression[0]
    if expression.endswith(("status", ".url")):  # a missing element: its parent exists
        expression = expression.rsplit(".", 1)[0]
    elif expression.endswith("given[1]"):  # a null item: the array exists
        expression = expression[: -len("[1]")]
    assert evaluate(resource, expression, model=models["r4"]) != []


# -- valid edge cases ---------------------------------------------------------------------------------

VALID: list[tuple[str, dict[str, Any]]] = [
    ("minimal patient", _pat()),
    ("partial dates", _pat(birthDate="2020-02", deceasedDateTime="2021")),
    ("leap day", _pat(birthDate="2024-02-29")),
    ("dateTime with fraction and offset", _pat(deceasedDateTime="2020-02-01T10:00:00.123+14:00")),
    ("leap second", _pat(meta={"lastUpdated": "2016-12-31T23:59:60Z"})),
    ("decimal from XML", _obs(valueQuantity={"value": Decimal("1.50")})),
    (
        "decimal float and int",
        _obs(
            component=[
                {"code": {"text": "a"}, "valueQuantity": {"value": 1.5}},
                {"code": {"text": "b"}, "valueQuantity": {"value": 2}},
            ]
        ),
    ),
    ("integer limits", _pat(multipleBirthInteger=-(2**31))),
    ("unicode and nbsp in strings", _pat(name=[{"text": "Zoë\u00a0de Vries"}], implicitRules="http://x/\u00e9\u00a0")),
    ("primitive extension without value", _pat(_birthDate={"extension": [{"url": "u", "valueCode": "unknown"}]})),
    ("primitive value with id", _pat(birthDate="2000", _birthDate={"id": "b"})),
    (
        "primitive array with gaps",
        _pat(name=[{"given": ["Jan", None], "_given": [None, {"extension": [{"url": "u", "valueString": "P."}]}]}]),
    ),
    ("_given without given", _pat(name=[{"_given": [{"extension": [{"url": "u", "valueCode": "masked"}]}]}])),
    ("nested extensions", _pat(extension=[{"url": "u", "extension": [{"url": "a", "valueInteger": 1}]}])),
    (
        "narrative with html entity",
        _pat(text={"status": "generated", "div": f"<div {XHTML}>a&nbsp;b &amp; <br/></div>"}),
    ),
    ("base64 with line breaks", _pat(photo=[{"data": "QUJD\nREVG\r\nR0g=", "contentType": "text/plain"}])),
    (
        "contained resource",
        _pat(contained=[{"resourceType": "Practitioner", "id": "p1"}], generalPractitioner=[{"reference": "#p1"}]),
    ),
    ("resource in Parameters", {"resourceType": "Parameters", "parameter": [{"name": "p", "resource": _pat(id="1")}]}),
    (
        "OperationOutcome in a response",
        {
            "resourceType": "Bundle",
            "type": "batch-response",
            "entry": [
                {
                    "response": {
                        "status": "400",
                        "outcome": {
                            "resourceType": "OperationOutcome",
                            "issue": [{"severity": "error", "code": "invalid"}],
                        },
                    }
                }
            ],
        },
    ),
]


@pytest.mark.parametrize("resource", [r for _, r in VALID], ids=[n for n, _ in VALID])
def test_valid_edge_cases(resource: dict[str, Any]) -> None:
    assert validate_resource(resource) == []


def test_whitespace_only_string_is_a_warning() -> None:
    issues = validate_resource(_pat(name=[{"text": " \t "}]))
    assert [(i.severity, i.code, i.expression) for i in issues] == [("warning", "value", ["Patient.name[0].text"])]
    assert not has_errors(issues)


def test_expected_type() -> None:
    assert validate_resource(_pat(), expected_type="Patient") == []
    assert _found(_pat(foo=1), expected_type="Observation") == [
        ("invalid", "resourceType"),
        ("structure", "Patient.foo"),
    ]


def test_input_is_not_modified() -> None:
    resource = _pat(name=[{"given": ["Jan", None], "_given": [None, None]}], foo=1)
    before = copy.deepcopy(resource)
    validate_resource(resource)
    assert resource == before


def test_deep_nesting_does_not_crash() -> None:
    item: dict[str, Any] = {"linkId": "x", "type": "group"}
    root = item
    for _ in range(3000):
        child = {"linkId": "x", "type": "group"}
        item["item"] = [child]
        item = child
    issues = validate_resource({"resourceType": "Questionnaire", "status": "draft", "item": [root]})
    assert [i.code for i in issues] == ["structure"]


# -- agreement with fhir.resources (R4B) where R4B and R4 say the same --------------------------------

AGREE = [
    "unknown element deep",
    "missing status",
    "list as scalar",
    "integer above 32 bits",
    "date month 13",
    "unknown choice type",
    "_birthDate bad property",
    "extension without url",
]


@pytest.mark.parametrize("case", AGREE)
def test_fhir_resources_r4b_also_rejects(case: str) -> None:
    from fhir.resources.R4B import get_fhir_model_class
    from pydantic import ValidationError

    resource = next(r for name, r, _ in BROKEN if name == case)
    with pytest.raises(ValidationError):
        get_fhir_model_class(resource["resourceType"]).model_validate(resource)
    assert has_errors(validate_resource(resource))


def test_base64_check_equals_the_r4_regex() -> None:
    # The R4 regex backtracks exponentially on long whitespace-separated input; ours must accept the same strings
    import random
    import re

    from hub.fhirmodel.validate import _base64_ok

    regex = re.compile(r"([ \t\n\r]*([0-9a-zA-Z+/=]){4}[ \t\n\r]*)+")
    rnd = random.Random(4)
    for _ in range(3000):
        s = "".join(rnd.choice("aZ9+/= \n\t*") for _ in range(rnd.randint(1, 14)))
        assert _base64_ok(s) == (regex.fullmatch(s) is not None), repr(s)
