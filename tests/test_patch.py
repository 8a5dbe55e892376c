"""PATCH: JSON Patch (RFC 6902) and FHIRPath Patch (http://hl7.org/fhir/R4/fhirpatch.html) on resource JSON.

The FHIRPath Patch cases follow the spec page's examples and the kinds of cases in the FHIR test-cases suite
(replace / delete / add of primitives, nested primitives, complex and anonymous types, list insert / delete /
reorder, operations on missing elements).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from hub.fhirmodel.patch import apply_fhirpath_patch, apply_json_patch
from hub.formats.outcome import FhirError

# ------------------------------------------------------------------------------------------ helpers


def patient() -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "id": "p1",
        "identifier": [
            {"system": "http://example.org", "value": "value 1"},
            {"system": "http://example.org", "value": "value 2", "use": "official"},
        ],
        "active": True,
        "name": [
            {"use": "official", "family": "Chalmers", "given": ["Peter", "James"]},
            {"use": "usual", "given": ["Jim"]},
        ],
        "telecom": [{"system": "phone", "value": "(03) 5555 6473", "use": "work"}],
        "gender": "male",
        "birthDate": "1974-12-25",
        "_birthDate": {
            "extension": [
                {
                    "url": "http://hl7.org/fhir/StructureDefinition/patient-birthTime",
                    "valueDateTime": "1974-12-25T14:35:45-05:00",
                }
            ]
        },
        "contact": [{"name": {"text": "a name"}, "gender": "female"}],
    }


def identifiers(*values: str) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "identifier": [{"system": "http://example.org", "value": f"value {v}"} for v in values],
    }


def values(resource: dict[str, Any]) -> list[str]:
    return [i["value"] for i in resource.get("identifier", [])]


def op(
    kind: str,
    path: str,
    *,
    name: str | None = None,
    value: dict[str, Any] | None = None,
    index: int | None = None,
    source: int | None = None,
    destination: int | None = None,
) -> dict[str, Any]:
    """One `operation` parameter; `value` is the value part's content, e.g. {"valueString": "x"}."""
    parts: list[dict[str, Any]] = [{"name": "type", "valueCode": kind}, {"name": "path", "valueString": path}]
    if name is not None:
        parts.append({"name": "name", "valueString": name})
    if value is not None:
        parts.append({"name": "value", **value})
    for part, number in (("index", index), ("source", source), ("destination", destination)):
        if number is not None:
            parts.append({"name": part, "valueInteger": number})
    return {"name": "operation", "part": parts}


def _unchanged(
    call: Callable[[dict[str, Any], Any], dict[str, Any]], resource: dict[str, Any], doc: Any
) -> dict[str, Any]:
    """Call a patch function and check it left both its arguments alone."""
    resource_before, doc_before = copy.deepcopy(resource), copy.deepcopy(doc)
    try:
        result = call(resource, doc)
        assert result is not resource
        return result
    finally:
        assert resource == resource_before
        assert doc == doc_before


def fp(resource: dict[str, Any], *operations: dict[str, Any]) -> dict[str, Any]:
    params = {"resourceType": "Parameters", "parameter": list(operations)}
    return _unchanged(apply_fhirpath_patch, resource, params)


def jp(resource: dict[str, Any], operations: Any) -> dict[str, Any]:
    return _unchanged(apply_json_patch, resource, operations)


def fp_error(resource: dict[str, Any], *operations: dict[str, Any], status: int) -> FhirError:
    with pytest.raises(FhirError) as info:
        fp(resource, *operations)
    assert info.value.status == status, info.value.diagnostics
    return info.value


def jp_error(resource: dict[str, Any], operations: Any, status: int) -> FhirError:
    with pytest.raises(FhirError) as info:
        jp(resource, operations)
    assert info.value.status == status, info.value.diagnostics
    return info.value


# --------------------------------------------------------------------------------------- JSON Patch


def test_json_patch_add_replace_remove() -> None:
    out = jp(
        patient(),
        [
            {"op": "add", "path": "/name/0/given/-", "value": "Jacob"},
            {"op": "replace", "path": "/birthDate", "value": "1974-12-26"},
            {"op": "remove", "path": "/telecom/0"},
            {"op": "add", "path": "/deceasedBoolean", "value": False},
        ],
    )
    assert out["name"][0]["given"] == ["Peter", "James", "Jacob"]
    assert out["birthDate"] == "1974-12-26"
    assert out["telecom"] == []  # JSON Patch is taken literally; validation of the result is the caller's
    assert out["deceasedBoolean"] is False


def test_json_patch_test_move_copy() -> None:
    out = jp(
        patient(),
        [
            {"op": "test", "path": "/name/1/given/0", "value": "Jim"},
            {"op": "move", "from": "/name/1", "path": "/name/0"},
            {"op": "copy", "from": "/identifier/0", "path": "/identifier/-"},
        ],
    )
    assert [n["use"] for n in out["name"]] == ["usual", "official"]
    assert values(out) == ["value 1", "value 2", "value 1"]


def test_json_patch_result_does_not_alias_the_operations() -> None:
    operations = [{"op": "add", "path": "/maritalStatus", "value": {"text": "married"}}]
    out = jp(patient(), operations)
    out["maritalStatus"]["text"] = "changed"
    assert operations[0]["value"] == {"text": "married"}


def test_json_patch_failing_test_is_422_naming_the_operation() -> None:
    ops = [
        {"op": "replace", "path": "/gender", "value": "female"},
        {"op": "test", "path": "/birthDate", "value": "2000-01-01"},
    ]
    err = jp_error(patient(), ops, 422)
    assert "operation 1" in err.diagnostics and "test failed" in err.diagnostics
    assert "{" not in err.diagnostics  # the document is not dumped into the message


def test_json_patch_test_is_type_strict() -> None:
    jp_error(patient(), [{"op": "test", "path": "/active", "value": 1}], 422)


@pytest.mark.parametrize(
    "ops",
    [
        [{"op": "replace", "path": "/maritalStatus", "value": {"text": "x"}}],  # nothing to replace
        [{"op": "remove", "path": "/identifier/5"}],  # index out of range
        [{"op": "add", "path": "/contact/0/relationship/0", "value": {"text": "x"}}],  # no such parent
        [{"op": "move", "from": "/nope", "path": "/gender"}],
        [{"op": "add", "path": "/name/x", "value": {}}],  # not an array index
    ],
)
def test_json_patch_that_cannot_be_applied_is_422(ops: list[dict[str, Any]]) -> None:
    jp_error(patient(), ops, 422)


@pytest.mark.parametrize(
    "doc",
    [
        {"op": "add", "path": "/gender", "value": "male"},  # an object, not an array
        "not a patch",
        [["add", "/gender", "male"]],  # items must be objects
        [{"op": "bogus", "path": "/gender"}],
        [{"path": "/gender", "value": "x"}],  # no op
        [{"op": "add", "value": "x"}],  # no path
        [{"op": "replace", "path": "/gender"}],  # no value
        [{"op": "replace", "path": "gender", "value": "x"}],  # not a JSON Pointer
        [{"op": "move", "path": "/gender"}],  # no from
        [{"op": "remove", "path": "/name/~2"}],  # bad escape
    ],
)
def test_malformed_json_patch_is_400(doc: Any) -> None:
    jp_error(patient(), doc, 400)


def test_malformed_json_patch_names_the_operation_index() -> None:
    err = jp_error(patient(), [{"op": "test", "path": "/id", "value": "p1"}, {"op": "nope", "path": "/x"}], 400)
    assert "operation 1" in err.diagnostics


@pytest.mark.parametrize(
    "ops",
    [
        [{"op": "replace", "path": "/id", "value": "other"}],
        [{"op": "remove", "path": "/id"}],
        [{"op": "replace", "path": "/resourceType", "value": "Person"}],
        [{"op": "replace", "path": "", "value": ["not", "a", "resource"]}],
    ],
)
def test_json_patch_may_not_change_identity(ops: list[dict[str, Any]]) -> None:
    jp_error(patient(), ops, 422)


def test_json_patch_empty_document_returns_a_copy() -> None:
    res = patient()
    out = jp(res, [])
    assert out == res and out is not res


# ------------------------------------------------------------------- FHIRPath Patch: spec page examples


def test_spec_example_add_primitive() -> None:
    out = fp({"resourceType": "Patient"}, op("add", "Patient", name="birthDate", value={"valueDate": "1930-01-01"}))
    assert out == {"resourceType": "Patient", "birthDate": "1930-01-01"}


def test_spec_example_add_anonymous_type() -> None:
    value = {"part": [{"name": "name", "valueHumanName": {"text": "a name"}}]}
    out = fp({"resourceType": "Patient"}, op("add", "Patient", name="contact", value=value))
    assert out == {"resourceType": "Patient", "contact": [{"name": {"text": "a name"}}]}


# ------------------------------------------------------------------------- primitives and nesting


def test_replace_primitive() -> None:
    res = {"resourceType": "Patient", "birthDate": "1920-01-01"}
    out = fp(res, op("replace", "Patient.birthDate", value={"valueDate": "1930-01-01"}))
    assert out == {"resourceType": "Patient", "birthDate": "1930-01-01"}


def test_delete_primitive() -> None:
    out = fp({"resourceType": "Patient", "birthDate": "1920-01-01"}, op("delete", "Patient.birthDate"))
    assert out == {"resourceType": "Patient"}


def test_typed_json_values() -> None:
    out = fp(
        {"resourceType": "Patient", "id": "p"},
        op("add", "Patient", name="active", value={"valueBoolean": False}),
        op("add", "Patient", name="multipleBirth", value={"valueInteger": 2}),
    )
    assert out == {"resourceType": "Patient", "id": "p", "active": False, "multipleBirthInteger": 2}


def test_nested_primitives() -> None:
    res = {"resourceType": "Patient", "contact": [{"name": {"text": "a name"}}]}
    added = fp(res, op("add", "Patient.contact[0]", name="gender", value={"valueCode": "male"}))
    assert added["contact"] == [{"name": {"text": "a name"}, "gender": "male"}]
    replaced = fp(added, op("replace", "Patient.contact[0].gender", value={"valueCode": "female"}))
    assert replaced["contact"][0]["gender"] == "female"
    renamed = fp(added, op("replace", "Patient.contact[0].name.text", value={"valueString": "the name"}))
    assert renamed["contact"][0]["name"] == {"text": "the name"}
    assert fp(added, op("delete", "Patient.contact[0].gender"))["contact"] == [{"name": {"text": "a name"}}]
    # Deleting the only content of name leaves an empty object, which is pruned too.
    assert fp(added, op("delete", "Patient.contact[0].name.text"))["contact"] == [{"gender": "male"}]


def test_path_may_start_with_an_element_name() -> None:
    out = fp(patient(), op("replace", "gender", value={"valueCode": "female"}))
    assert out["gender"] == "female"


# ------------------------------------------------------------------------- complex and anonymous types


def test_add_replace_delete_complex() -> None:
    res = {"resourceType": "Patient"}
    added = fp(res, op("add", "Patient", name="maritalStatus", value={"valueCodeableConcept": {"text": "married"}}))
    assert added["maritalStatus"] == {"text": "married"}
    with_id = {"resourceType": "Patient", "maritalStatus": {"id": "1", "text": "married"}}
    new = {"valueCodeableConcept": {"id": "2", "text": "not married"}}
    replaced = fp(with_id, op("replace", "Patient.maritalStatus", value=new))
    assert replaced["maritalStatus"] == {"id": "2", "text": "not married"}  # the whole element is replaced
    assert fp(added, op("delete", "Patient.maritalStatus")) == res


def test_delete_anonymous_type_removes_the_empty_list() -> None:
    res = {"resourceType": "Patient", "contact": [{"name": {"text": "a name"}}]}
    assert fp(res, op("delete", "Patient.contact[0]")) == {"resourceType": "Patient"}


def test_add_complex_value_from_parts() -> None:
    value = {
        "part": [
            {"name": "use", "valueCode": "nickname"},
            {"name": "family", "valueString": "Chalmers"},
            {"name": "given", "valueString": "Pete"},
            {"name": "given", "valueString": "J"},
            {"name": "period", "part": [{"name": "start", "valueDateTime": "2020-01-01"}]},
        ]
    }
    out = fp(patient(), op("add", "Patient", name="name", value=value))
    assert out["name"][-1] == {
        "use": "nickname",
        "family": "Chalmers",
        "given": ["Pete", "J"],
        "period": {"start": "2020-01-01"},
    }


def test_parts_for_a_backbone_with_choice_and_nesting() -> None:
    obs = {"resourceType": "Observation", "status": "final", "code": {"text": "bp"}}
    component = {
        "part": [
            {"name": "code", "valueCodeableConcept": {"text": "systolic"}},
            {"name": "value", "valueQuantity": {"value": 120, "unit": "mmHg"}},
        ]
    }
    out = fp(obs, op("add", "Observation", name="component", value=component))
    assert out["component"] == [{"code": {"text": "systolic"}, "valueQuantity": {"value": 120, "unit": "mmHg"}}]


def test_add_resource_value_to_contained() -> None:
    practitioner = {"resourceType": "Practitioner", "id": "pr", "name": [{"family": "Who"}]}
    out = fp(patient(), op("add", "Patient", name="contained", value={"resource": practitioner}))
    assert out["contained"] == [practitioner]
    renamed = fp(out, op("replace", "Patient.contained.ofType(Practitioner).name.family", value={"valueString": "X"}))
    assert renamed["contained"][0]["name"] == [{"family": "X"}]


# ------------------------------------------------------------------------------------------ lists


def test_replace_items_in_a_list() -> None:
    out = fp(
        identifiers("1", "2"),
        op("replace", "Patient.identifier[0].value", value={"valueString": "value 2"}),
        op("replace", "Patient.identifier[1].value", value={"valueString": "value 1"}),
    )
    assert values(out) == ["value 2", "value 1"]


@pytest.mark.parametrize(("index", "expected"), [(2, ["1", "2", "3"]), (1, ["1", "3", "2"]), (0, ["3", "1", "2"])])
def test_insert_in_list(index: int, expected: list[str]) -> None:
    value = {"valueIdentifier": {"system": "http://example.org", "value": "value 3"}}
    out = fp(identifiers("1", "2"), op("insert", "Patient.identifier", value=value, index=index))
    assert values(out) == [f"value {v}" for v in expected]


@pytest.mark.parametrize(("index", "expected"), [(0, ["2", "3"]), (1, ["1", "3"]), (2, ["1", "2"])])
def test_delete_from_list(index: int, expected: list[str]) -> None:
    out = fp(identifiers("1", "2", "3"), op("delete", f"Patient.identifier[{index}]"))
    assert values(out) == [f"value {v}" for v in expected]


@pytest.mark.parametrize(
    ("moves", "expected"),
    [
        ([(3, 1)], "1423"),
        ([(3, 0)], "4123"),
        ([(3, 2)], "1243"),
        ([(0, 3)], "2341"),
        ([(1, 0), (2, 1)], "2314"),
        ([(3, 0), (3, 1), (3, 2)], "4321"),
    ],
)
def test_reorder_list(moves: list[tuple[int, int]], expected: str) -> None:
    ops = [op("move", "Patient.identifier", source=s, destination=d) for s, d in moves]
    out = fp(identifiers("1", "2", "3", "4"), *ops)
    assert values(out) == [f"value {v}" for v in expected]


def test_insert_into_an_absent_list_creates_it() -> None:
    value = {"valueIdentifier": {"value": "x"}}
    out = fp({"resourceType": "Patient"}, op("insert", "Patient.identifier", value=value, index=0))
    assert out == {"resourceType": "Patient", "identifier": [{"value": "x"}]}


def test_add_appends_to_a_repeating_element() -> None:
    out = fp(patient(), op("add", "Patient.name[0]", name="given", value={"valueString": "Jacob"}))
    assert out["name"][0]["given"] == ["Peter", "James", "Jacob"]


def test_add_creates_a_missing_list() -> None:
    value = {"valueIdentifier": {"system": "http://example.org", "value": "value 3"}}
    out = fp({"resourceType": "Patient"}, op("add", "Patient", name="identifier", value=value))
    assert out == {"resourceType": "Patient", "identifier": [value["valueIdentifier"]]}


def test_insert_and_move_on_primitive_lists() -> None:
    res = patient()
    inserted = fp(res, op("insert", "Patient.name[0].given", value={"valueString": "Jo"}, index=1))
    assert inserted["name"][0]["given"] == ["Peter", "Jo", "James"]
    moved = fp(res, op("move", "Patient.name.where(use = 'official').given", source=1, destination=0))
    assert moved["name"][0]["given"] == ["James", "Peter"]


# ------------------------------------------------------------------------------- path features


def test_where_with_and_first_last() -> None:
    res = patient()
    where = "Patient.identifier.where(system = 'http://example.org' and use = 'official').value"
    assert values(fp(res, op("replace", where, value={"valueString": "X"}))) == ["value 1", "X"]
    assert values(fp(res, op("delete", "Patient.identifier.first()"))) == ["value 2"]
    assert values(fp(res, op("delete", "Patient.identifier.last()"))) == ["value 1"]
    # The indexer works over the whole collection: the second given name over all names.
    out = fp(res, op("replace", "Patient.name.given[2]", value={"valueString": "Jimmy"}))
    assert out["name"][1]["given"] == ["Jimmy"]


def test_where_can_use_functions_and_the_resource_variable() -> None:
    out = fp(patient(), op("delete", "Patient.name.where(given.exists() and family.empty())"))
    assert [n["use"] for n in out["name"]] == ["official"]
    last = "Patient.identifier.where(value = %resource.identifier.last().value)"
    assert values(fp(patient(), op("delete", last))) == ["value 1"]


def test_where_on_primitive_items() -> None:
    out = fp(patient(), op("delete", "Patient.name.given.where($this = 'James')"))
    assert out["name"][0]["given"] == ["Peter"]
    ext = {"part": [{"name": "url", "valueUri": "http://x"}, {"name": "value", "valueBoolean": True}]}
    out = fp(patient(), op("add", "Patient.name[0].given.where($this = 'James')", name="extension", value=ext))
    assert out["name"][0]["given"] == ["Peter", "James"]
    assert out["name"][0]["_given"] == [None, {"extension": [{"url": "http://x", "valueBoolean": True}]}]


def test_choice_elements() -> None:
    obs = {"resourceType": "Observation", "status": "final", "code": {"text": "x"}, "valueQuantity": {"value": 1}}
    by_type = fp(obs, op("replace", "Observation.value.ofType(Quantity).value", value={"valueDecimal": 2.5}))
    assert by_type["valueQuantity"] == {"value": 2.5}
    # Replacing a choice with another of its types swaps the JSON property.
    swapped = fp(obs, op("replace", "Observation.value", value={"valueString": "high"}))
    assert swapped["valueString"] == "high" and "valueQuantity" not in swapped
    assert "valueQuantity" not in fp(obs, op("delete", "Observation.value"))
    fp_error(obs, op("replace", "Observation.value", value={"valueHumanName": {"text": "x"}}), status=422)


def test_extension_function() -> None:
    url = "http://example.org/ext"
    res = {
        "resourceType": "Patient",
        "extension": [{"url": url, "valueString": "a"}, {"url": "other", "valueInteger": 1}],
    }
    out = fp(res, op("replace", f"Patient.extension('{url}').value", value={"valueString": "b"}))
    assert out["extension"][0] == {"url": url, "valueString": "b"}
    assert fp(res, op("delete", f"Patient.extension('{url}')"))["extension"] == [{"url": "other", "valueInteger": 1}]


# ------------------------------------------------------------------ primitive `_name` companions


def test_delete_primitive_removes_its_extensions() -> None:
    out = fp(patient(), op("delete", "Patient.birthDate"))
    assert "birthDate" not in out and "_birthDate" not in out


def test_replace_primitive_replaces_its_extensions() -> None:
    out = fp(patient(), op("replace", "Patient.birthDate", value={"valueDate": "1974-12-26"}))
    assert out["birthDate"] == "1974-12-26" and "_birthDate" not in out
    ext = {"extension": [{"url": "http://x", "valueCode": "y"}]}
    out = fp(patient(), op("replace", "Patient.birthDate", value={"valueDate": "1974-12-26", "_valueDate": ext}))
    assert out["_birthDate"] == ext


def test_extensions_of_a_primitive() -> None:
    ext = {"part": [{"name": "url", "valueUri": "http://x"}, {"name": "value", "valueCode": "y"}]}
    added = fp(patient(), op("add", "Patient.gender", name="extension", value=ext))
    assert added["gender"] == "male" and added["_gender"] == {"extension": [{"url": "http://x", "valueCode": "y"}]}
    # Deleting the only extension leaves no empty companion behind, and keeps the value.
    out = fp(patient(), op("delete", "Patient.birthDate.extension"))
    assert out["birthDate"] == "1974-12-25" and "_birthDate" not in out


def test_repeating_primitive_companions_stay_aligned() -> None:
    res = {
        "resourceType": "Patient",
        "name": [{"given": ["a", "b", "c"], "_given": [None, {"extension": [{"url": "u", "valueString": "x"}]}, None]}],
    }
    deleted = fp(res, op("delete", "Patient.name.given[1]"))
    assert deleted["name"] == [{"given": ["a", "c"]}]
    first_deleted = fp(res, op("delete", "Patient.name.given[0]"))
    assert first_deleted["name"][0]["given"] == ["b", "c"]
    assert first_deleted["name"][0]["_given"][0]["extension"][0]["url"] == "u"
    appended = fp(res, op("add", "Patient.name[0]", name="given", value={"valueString": "d"}))
    assert appended["name"][0]["given"] == ["a", "b", "c", "d"] and len(appended["name"][0]["_given"]) == 4
    moved = fp(res, op("move", "Patient.name[0].given", source=1, destination=2))
    assert moved["name"][0]["given"] == ["a", "c", "b"] and moved["name"][0]["_given"][2] is not None


# ------------------------------------------------------------------------------- 422: not applicable


def test_add_on_missing_element_is_422() -> None:
    res = {"resourceType": "Patient", "identifier": [{"use": "official", "value": "123"}]}
    path = "Patient.identifier.where(use = 'official').period"
    err = fp_error(res, op("add", path, name="end", value={"valueDateTime": "2021-12-01"}), status=422)
    assert "no element matches" in err.diagnostics
    assert err.issues[0].expression == ["Parameters.parameter[0]"]


def test_add_existing_single_valued_element_is_422() -> None:
    fp_error(patient(), op("add", "Patient", name="birthDate", value={"valueDate": "1930-01-01"}), status=422)
    with_deceased = {"resourceType": "Patient", "deceasedDateTime": "2020"}
    fp_error(with_deceased, op("add", "Patient", name="deceased", value={"valueBoolean": True}), status=422)


def test_delete_without_match_is_a_no_op() -> None:
    res = patient()
    assert fp(res, op("delete", "Patient.maritalStatus")) == res
    assert fp(res, op("delete", "Patient.identifier.where(value = 'nope')")) == res


def test_replace_without_match_is_422() -> None:
    fp_error(
        patient(), op("replace", "Patient.maritalStatus", value={"valueCodeableConcept": {"text": "x"}}), status=422
    )


@pytest.mark.parametrize(
    "operation",
    [
        op("replace", "Patient.name[0].given", value={"valueString": "x"}),
        op("delete", "Patient.identifier"),
        op("add", "Patient.name", name="text", value={"valueString": "x"}),
        op("insert", "Patient.name.given", value={"valueString": "x"}, index=0),
    ],
)
def test_path_matching_more_than_one_element_is_422(operation: dict[str, Any]) -> None:
    err = fp_error(patient(), operation, status=422)
    assert "match" in err.diagnostics


@pytest.mark.parametrize("index", [3, -1])
def test_insert_out_of_range_is_422(index: int) -> None:
    value = {"valueIdentifier": {"value": "x"}}
    err = fp_error(identifiers("1", "2"), op("insert", "Patient.identifier", value=value, index=index), status=422)
    assert "out of range" in err.diagnostics


@pytest.mark.parametrize(("source", "destination"), [(4, 0), (0, 4), (-1, 0)])
def test_move_out_of_range_is_422(source: int, destination: int) -> None:
    operation = op("move", "Patient.identifier", source=source, destination=destination)
    fp_error(identifiers("1", "2", "3", "4"), operation, status=422)


@pytest.mark.parametrize(
    "path",
    [
        "Patient.name | Patient.telecom",
        "Patient.managingOrganization.resolve()",
        "Patient.name.select(given)",
        "Patient.name[$index]",
        "%resource.name",
        "Patient.name.given = 'x'",
    ],
)
def test_unsupported_expression_is_422(path: str) -> None:
    err = fp_error(patient(), op("delete", path), status=422)
    assert err.issues[0].code == "not-supported"


@pytest.mark.parametrize(
    "operation",
    [
        op("replace", "Patient.birthDate", value={"valueBoolean": True}),  # wrong type
        op("replace", "Patient.name[0]", value={"valueCodeableConcept": {"text": "x"}}),
        op("add", "Patient", name="nickname", value={"valueString": "x"}),  # no such element
        op("add", "Patient", name="contact", value={"part": [{"name": "bogus", "valueString": "x"}]}),
        op("add", "Patient", name="contact", value={"part": [{"name": "gender", "valueCode": "male"}] * 2}),
        op("delete", "Patient.nickname"),  # unknown names are errors, not silent no-ops
        op("delete", "Observation.status"),  # path for another resource type
        op("insert", "Patient.gender", value={"valueCode": "male"}, index=0),  # not a list
        op("delete", "Patient.name.where(given.bogusFunction())"),
        op("delete", "Patient"),
    ],
)
def test_value_or_path_not_fitting_the_resource_is_422(operation: dict[str, Any]) -> None:
    fp_error(patient(), operation, status=422)


@pytest.mark.parametrize(
    "operation",
    [
        op("replace", "Patient.id", value={"valueId": "other"}),
        op("delete", "Patient.id"),
        op("delete", "id"),
    ],
)
def test_fhirpath_patch_may_not_change_identity(operation: dict[str, Any]) -> None:
    err = fp_error(patient(), operation, status=422)
    assert "id" in err.diagnostics


def test_add_id_to_resource_without_id_is_422() -> None:
    fp_error({"resourceType": "Patient"}, op("add", "Patient", name="id", value={"valueId": "x"}), status=422)


def test_operations_apply_in_order_and_errors_name_the_operation() -> None:
    err = fp_error(
        patient(),
        op("delete", "Patient.maritalStatus"),
        op("replace", "Patient.gender", value={"valueCode": "female"}),
        op("replace", "Patient.maritalStatus", value={"valueCodeableConcept": {"text": "x"}}),
        status=422,
    )
    assert "operation 2" in err.diagnostics
    assert err.issues[0].expression == ["Parameters.parameter[2]"]


# ------------------------------------------------------------------------------ 400: malformed


def _parts(*parts: dict[str, Any]) -> dict[str, Any]:
    return {"name": "operation", "part": list(parts)}


TYPE_DELETE = {"name": "type", "valueCode": "delete"}
PATH_GENDER = {"name": "path", "valueString": "Patient.gender"}


@pytest.mark.parametrize(
    "parameter",
    [
        _parts(PATH_GENDER),  # no type
        _parts({"name": "type", "valueCode": "remove"}, PATH_GENDER),  # unknown type
        _parts(TYPE_DELETE),  # no path
        _parts({"name": "type", "valueCode": "replace"}, PATH_GENDER),  # no value
        _parts({"name": "type", "valueCode": "replace"}, PATH_GENDER, {"name": "value"}),  # empty value
        _parts(
            {"name": "type", "valueCode": "replace"},
            PATH_GENDER,
            {"name": "value", "valueCode": "male", "valueString": "male"},  # two values
        ),
        _parts({"name": "type", "valueCode": "replace"}, PATH_GENDER, {"name": "value", "valueFoo": "x"}),
        _parts({"name": "type", "valueCode": "add"}, {"name": "path", "valueString": "Patient"}),  # no name, value
        _parts({"name": "type", "valueCode": "insert"}, PATH_GENDER, {"name": "value", "valueCode": "x"}),  # no index
        _parts(
            {"name": "type", "valueCode": "insert"},
            PATH_GENDER,
            {"name": "value", "valueCode": "x"},
            {"name": "index", "valueString": "0"},  # index is not an integer
        ),
        _parts({"name": "type", "valueCode": "move"}, PATH_GENDER, {"name": "source", "valueInteger": 0}),
        _parts(TYPE_DELETE, PATH_GENDER, {"name": "bogus", "valueString": "x"}),  # unknown part
        _parts(TYPE_DELETE, PATH_GENDER, PATH_GENDER),  # duplicated part
        _parts(TYPE_DELETE, {"name": "path", "valueString": "Patient.name["}),  # unbalanced
        _parts(TYPE_DELETE, {"name": "path", "valueString": "Patient.name."}),
        {"name": "op", "part": [TYPE_DELETE, PATH_GENDER]},  # not named operation
        {"name": "operation"},  # no parts
        "operation",
    ],
)
def test_malformed_parameters_is_400(parameter: Any) -> None:
    err = fp_error(patient(), parameter, status=400)
    assert err.issues[0].expression[0].startswith("Parameters.parameter[0]")


@pytest.mark.parametrize(
    "doc",
    [
        {"resourceType": "Patient"},
        [{"op": "add", "path": "/x", "value": 1}],
        {"resourceType": "Parameters", "parameter": {"name": "operation"}},
    ],
)
def test_not_a_parameters_resource_is_400(doc: Any) -> None:
    with pytest.raises(FhirError) as info:
        _unchanged(apply_fhirpath_patch, patient(), doc)
    assert info.value.status == 400


def test_empty_parameters_returns_a_copy() -> None:
    res = patient()
    out = _unchanged(apply_fhirpath_patch, res, {"resourceType": "Parameters"})
    assert out == res and out is not res


def test_malformed_operation_after_good_ones_changes_nothing() -> None:
    res = patient()
    fp_error(res, op("delete", "Patient.gender"), _parts(TYPE_DELETE), status=400)
    assert res == patient()


def test_result_does_not_alias_the_parameters() -> None:
    params: dict[str, Any] = {
        "resourceType": "Parameters",
        "parameter": [op("add", "Patient", name="maritalStatus", value={"valueCodeableConcept": {"text": "married"}})],
    }
    out = apply_fhirpath_patch(patient(), params)
    out["maritalStatus"]["text"] = "changed"
    assert params["parameter"][0]["part"][3]["valueCodeableConcept"] == {"text": "married"}


def test_full_resource_text_and_family() -> None:
    res = patient()
    res["text"] = {"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml">Chalmers</div>'}
    new_div = '<div xmlns="http://www.w3.org/1999/xhtml">Chalmers1</div>'
    out = fp(
        res,
        op("replace", "Patient.text.div", value={"valueString": new_div}),
        op("replace", "Patient.name[0].family", value={"valueString": "Chalmers1"}),
    )
    assert out["text"]["div"] == new_div and out["name"][0]["family"] == "Chalmers1"
    out["text"] = res["text"]
    out["name"][0]["family"] = "Chalmers"
    assert out == res  # nothing else moved
