"""Terminology over stored ValueSets and CodeSystems (hub/terminology): expansion rules, token
:in / :not-in / :above / :below in search, the expansion cache, and ValueSet/$expand."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from conftest import token_for
from fastapi.testclient import TestClient

from hub.app import Services
from hub.terminology.codesystem import CodeSystemView
from hub.terminology.expansion import Expansion, ExpansionError, expand

JSON = {"Content-Type": "application/fhir+json"}
LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
PIJN = "http://hub.example.nl/fhir/CodeSystem/pijn"
VS = "http://hub.example.nl/fhir/ValueSet/"

# pijn > (hoofdpijn > migraine), buikpijn; "chronisch" hangs under hoofdpijn by a parent property
PIJN_CS: dict[str, Any] = {
    "resourceType": "CodeSystem",
    "id": "pijn",
    "url": PIJN,
    "status": "active",
    "content": "complete",
    "property": [{"code": "parent", "uri": "http://hl7.org/fhir/concept-properties#parent", "type": "code"}],
    "concept": [
        {
            "code": "pijn",
            "display": "Pijn",
            "concept": [
                {"code": "hoofdpijn", "display": "Hoofdpijn", "concept": [{"code": "migraine", "display": "Migraine"}]},
                {"code": "buikpijn", "display": "Buikpijn"},
            ],
        },
        {
            "code": "chronisch",
            "display": "Chronische hoofdpijn",
            "property": [{"code": "parent", "valueCode": "hoofdpijn"}],
        },
        {"code": "jeuk", "display": "Jeuk"},
    ],
}


def put(client: TestClient, *resources: dict[str, Any]) -> None:
    for res in resources:
        r = client.put(f"/fhir/{res['resourceType']}/{res['id']}", content=orjson.dumps(res), headers=JSON)
        assert r.status_code in (200, 201), r.text


def vs(vid: str, compose: dict[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
    res: dict[str, Any] = {"resourceType": "ValueSet", "id": vid, "url": VS + vid, "status": "active", **fields}
    if compose is not None:
        res["compose"] = compose
    return res


def obs(oid: str, system: str | None, code: str) -> dict[str, Any]:
    coding = {"code": code, **({"system": system} if system else {})}
    return {"resourceType": "Observation", "id": oid, "status": "final", "code": {"coding": [coding]}}


def ids(client: TestClient, url: str, params: dict[str, str]) -> set[str]:
    r = client.get(f"/fhir/{url}", params=params)
    assert r.status_code == 200, r.text
    return {e["resource"]["id"] for e in r.json().get("entry", []) if e["search"]["mode"] == "match"}


def error(client: TestClient, url: str, params: dict[str, str]) -> tuple[int, str]:
    r = client.get(f"/fhir/{url}", params=params)
    body = r.json()
    assert body["resourceType"] == "OperationOutcome", body
    return r.status_code, " ".join(i.get("diagnostics", "") + " ".join(i.get("expression", [])) for i in body["issue"])


# ------------------------------------------------------------------------------------ unit level


def test_code_system_hierarchy_from_nesting_and_parent_properties() -> None:
    cs = CodeSystemView(PIJN_CS)
    assert cs.descendants("pijn") == {"pijn", "hoofdpijn", "migraine", "buikpijn", "chronisch"}
    assert cs.descendants("hoofdpijn", include_self=False) == {"migraine", "chronisch"}
    assert cs.ancestors("chronisch") == {"chronisch", "hoofdpijn", "pijn"}
    assert cs.filter({"property": "concept", "op": "is-a", "value": "hoofdpijn"}) == {
        "hoofdpijn",
        "migraine",
        "chronisch",
    }
    assert cs.filter({"property": "concept", "op": "descendent-of", "value": "pijn"}) == {
        "hoofdpijn",
        "migraine",
        "buikpijn",
        "chronisch",
    }
    assert cs.filter({"property": "concept", "op": "is-not-a", "value": "pijn"}) == {"jeuk"}
    assert cs.filter({"property": "concept", "op": "generalizes", "value": "migraine"}) == {
        "migraine",
        "hoofdpijn",
        "pijn",
    }
    assert cs.filter({"property": "display", "op": "regex", "value": "[A-Z][a-z]*pijn"}) == {"hoofdpijn", "buikpijn"}
    assert cs.filter({"property": "parent", "op": "=", "value": "hoofdpijn"}) == {"migraine", "chronisch"}
    grouped = CodeSystemView({**PIJN_CS, "hierarchyMeaning": "grouped-by"})
    assert grouped.descendants("pijn") == {"pijn"}  # grouping is not subsumption


def _expand(value_set: dict[str, Any], others: dict[str, dict[str, Any]] | None = None) -> Expansion:
    systems = {PIJN: CodeSystemView(PIJN_CS)}
    return expand(
        value_set,
        lambda url, _version: systems.get(url),
        lambda url: _expand((others or {})[url], others),
    )


def test_expansion_rules() -> None:
    whole = _expand(
        vs("a", {"include": [{"system": PIJN}], "exclude": [{"system": PIJN, "concept": [{"code": "jeuk"}]}]})
    )
    assert set(whole.codes[PIJN]) == {"pijn", "hoofdpijn", "migraine", "buikpijn", "chronisch"} and whole.enumerable
    assert whole.codes[PIJN]["migraine"] == "Migraine"  # displays from the CodeSystem
    # a whole system the hub does not hold is open: every code but the excluded ones
    loinc = _expand(
        vs("b", {"include": [{"system": LOINC}], "exclude": [{"system": LOINC, "concept": [{"code": "1-8"}]}]})
    )
    assert loinc.contains(LOINC, "8867-4") and not loinc.contains(LOINC, "1-8") and not loinc.enumerable
    assert not loinc.contains(SNOMED, "8867-4") and not loinc.contains(None, "8867-4")
    # imports intersect; includes unite
    others = {
        VS + "hoofd": vs(
            "hoofd",
            {"include": [{"system": PIJN, "filter": [{"property": "concept", "op": "is-a", "value": "hoofdpijn"}]}]},
        ),
        VS + "loinc": vs("loinc", {"include": [{"system": LOINC}]}),
    }
    both = _expand(
        vs(
            "c",
            {
                "include": [
                    {"valueSet": [VS + "hoofd"], "system": PIJN, "concept": [{"code": "migraine"}, {"code": "jeuk"}]},
                    {"valueSet": [VS + "loinc"]},
                ]
            },
        ),
        others,
    )
    assert set(both.codes[PIJN]) == {"migraine"} and both.open == {LOINC: set()}
    # all of LOINC minus (all of LOINC minus 1-8) is just 1-8
    diff = _expand(
        vs("d", {"include": [{"system": LOINC}], "exclude": [{"valueSet": [VS + "b"]}]}),
        {
            VS + "b": vs(
                "b", {"include": [{"system": LOINC}], "exclude": [{"system": LOINC, "concept": [{"code": "1-8"}]}]}
            )
        },
    )
    assert diff.codes == {LOINC: {"1-8": None}} and diff.enumerable
    # a stored expansion is used as it is (nested contains flattened, abstract entries skipped)
    stored = _expand(
        vs(
            "e",
            expansion={
                "timestamp": "2024-01-01T00:00:00Z",
                "contains": [
                    {
                        "abstract": True,
                        "code": "x",
                        "system": SNOMED,
                        "contains": [{"system": SNOMED, "code": "22232009"}],
                    }
                ],
            },
        )
    )
    assert stored.codes == {SNOMED: {"22232009": None}}
    with pytest.raises(ExpansionError, match="does not hold"):
        _expand(
            vs(
                "f",
                {
                    "include": [
                        {"system": SNOMED, "filter": [{"property": "concept", "op": "is-a", "value": "72506001"}]}
                    ]
                },
            )
        )


# ----------------------------------------------------------------------------------- search


@pytest.fixture
def coded(client: TestClient) -> TestClient:
    put(
        client,
        PIJN_CS,
        obs("o-loinc", LOINC, "8867-4"),
        obs("o-loinc-bp", LOINC, "85354-9"),
        obs("o-snomed", SNOMED, "8867-4"),
        obs("o-nosys", None, "8867-4"),
        obs("o-hoofd", PIJN, "hoofdpijn"),
        obs("o-migraine", PIJN, "migraine"),
        obs("o-chronisch", PIJN, "chronisch"),
        obs("o-buik", PIJN, "buikpijn"),
        obs("o-pijn", PIJN, "pijn"),
        obs("o-jeuk", PIJN, "jeuk"),
        vs(
            "hoofd",
            {"include": [{"system": PIJN, "filter": [{"property": "concept", "op": "is-a", "value": "hoofdpijn"}]}]},
        ),
        vs(
            "alle-loinc",
            {"include": [{"system": LOINC}], "exclude": [{"system": LOINC, "concept": [{"code": "85354-9"}]}]},
        ),
        vs("hf", {"include": [{"system": LOINC, "concept": [{"code": "8867-4"}]}]}, version="2"),
        vs("mix", {"include": [{"valueSet": [VS + "hoofd"]}, {"valueSet": [VS + "hf"]}]}),
    )
    return client


IN_CASES = [
    ({"code:in": VS + "hoofd"}, {"o-hoofd", "o-migraine", "o-chronisch"}),
    ({"code:in": "ValueSet/hoofd"}, {"o-hoofd", "o-migraine", "o-chronisch"}),  # literal reference
    ({"code:in": f"{VS}hf|2"}, {"o-loinc"}),  # canonical with version
    ({"code:in": VS + "alle-loinc"}, {"o-loinc"}),  # a whole system minus an exclude
    ({"code:in": VS + "mix"}, {"o-hoofd", "o-migraine", "o-chronisch", "o-loinc"}),
    ({"code:in": f"{VS}hf,{VS}hoofd"}, {"o-hoofd", "o-migraine", "o-chronisch", "o-loinc"}),  # OR
    (
        {"code:not-in": VS + "hoofd"},
        {"o-loinc", "o-loinc-bp", "o-snomed", "o-nosys", "o-buik", "o-pijn", "o-jeuk"},
    ),
    ({"code:below": f"{PIJN}|hoofdpijn"}, {"o-hoofd", "o-migraine", "o-chronisch"}),
    ({"code:below": f"{PIJN}|jeuk"}, {"o-jeuk"}),
    ({"code:above": f"{PIJN}|chronisch"}, {"o-chronisch", "o-hoofd", "o-pijn"}),
    ({"code:above": f"{PIJN}|migraine"}, {"o-migraine", "o-hoofd", "o-pijn"}),
]


@pytest.mark.parametrize(("params", "expected"), IN_CASES, ids=[str(p) for p, _ in IN_CASES])
def test_in_not_in_above_below(coded: TestClient, params: dict[str, str], expected: set[str]) -> None:
    assert ids(coded, "Observation", params) == expected


@pytest.mark.parametrize(
    ("params", "text"),
    [
        ({"code:in": VS + "onbekend"}, "unknown ValueSet http://hub.example.nl/fhir/ValueSet/onbekend"),
        ({"code:in": "ValueSet/onbekend"}, "unknown ValueSet ValueSet/onbekend"),
        ({"code:below": f"{SNOMED}|72506001"}, "no CodeSystem http://snomed.info/sct"),
        ({"code:below": f"{PIJN}|kiespijn"}, "kiespijn is not a code"),
        ({"code:above": "hoofdpijn"}, "system|code"),
    ],
)
def test_terminology_errors_are_400_naming_the_parameter(coded: TestClient, params: dict[str, str], text: str) -> None:
    status, diagnostics = error(coded, "Observation", params)
    assert status == 400 and text in diagnostics and next(iter(params)) in diagnostics


def test_a_filter_on_a_system_the_hub_does_not_hold_is_400(coded: TestClient) -> None:
    isa = {"property": "concept", "op": "is-a", "value": "72506001"}
    put(coded, vs("icd", {"include": [{"system": SNOMED, "filter": [isa]}]}))
    status, diagnostics = error(coded, "Observation", {"code:in": VS + "icd"})
    assert status == 400 and "does not hold" in diagnostics


def test_writing_a_value_set_or_code_system_invalidates_the_cache(coded: TestClient) -> None:
    assert ids(coded, "Observation", {"code:in": VS + "hoofd"}) == {"o-hoofd", "o-migraine", "o-chronisch"}
    # the value set changes: its cached expansion must not be used
    put(coded, vs("hoofd", {"include": [{"system": PIJN, "concept": [{"code": "buikpijn"}]}]}))
    assert ids(coded, "Observation", {"code:in": VS + "hoofd"}) == {"o-buik"}
    # the code system changes under a value set that filters it
    put(
        coded,
        vs(
            "hoofd",
            {"include": [{"system": PIJN, "filter": [{"property": "concept", "op": "is-a", "value": "hoofdpijn"}]}]},
        ),
    )
    assert ids(coded, "Observation", {"code:in": VS + "hoofd"}) == {"o-hoofd", "o-migraine", "o-chronisch"}
    moved = {**PIJN_CS, "concept": [*PIJN_CS["concept"][:1], {"code": "chronisch"}, {"code": "jeuk"}]}
    put(coded, moved)
    assert ids(coded, "Observation", {"code:in": VS + "hoofd"}) == {"o-hoofd", "o-migraine"}
    assert ids(coded, "Observation", {"code:below": f"{PIJN}|hoofdpijn"}) == {"o-hoofd", "o-migraine"}
    # and a deleted one is unknown
    assert coded.delete("/fhir/ValueSet/hoofd").status_code in (200, 204)
    status, _ = error(coded, "Observation", {"code:in": VS + "hoofd"})
    assert status == 400


def test_a_failed_transaction_leaves_no_cached_expansion(coded: TestClient) -> None:
    changed = vs("hoofd", {"include": [{"system": PIJN, "concept": [{"code": "jeuk"}]}]})
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": changed, "request": {"method": "PUT", "url": "ValueSet/hoofd"}},
            # GETs run last: this one expands the changed value set inside the transaction ...
            {"request": {"method": "GET", "url": "Observation?code:in=" + VS + "hoofd"}},
            {"request": {"method": "GET", "url": "Observation?date=gisteren"}},  # ... and this one fails it
        ],
    }
    r = coded.post("/fhir", content=orjson.dumps(bundle), headers=JSON)
    assert r.status_code == 400, r.text
    assert ids(coded, "Observation", {"code:in": VS + "hoofd"}) == {"o-hoofd", "o-migraine", "o-chronisch"}


def test_in_on_a_code_element(client: TestClient) -> None:
    gender = "http://hl7.org/fhir/administrative-gender"
    put(
        client,
        {"resourceType": "Patient", "id": "m", "gender": "male"},
        {"resourceType": "Patient", "id": "v", "gender": "female"},
        {"resourceType": "Patient", "id": "x"},
        vs("man", {"include": [{"system": gender, "concept": [{"code": "male"}]}]}),
        vs("alle-geslachten", {"include": [{"system": gender}]}),  # open: not enumerable here
    )
    assert ids(client, "Patient", {"gender:in": VS + "man"}) == {"m"}
    assert ids(client, "Patient", {"gender:not-in": VS + "man"}) == {"v", "x"}
    # the whole administrative-gender system: gender is indexed with that implicit system
    assert ids(client, "Patient", {"gender:in": VS + "alle-geslachten"}) == {"m", "v"}


def test_in_through_a_chain(coded: TestClient) -> None:
    put(
        coded,
        {"resourceType": "Device", "id": "d1", "type": {"coding": [{"system": PIJN, "code": "migraine"}]}},
        {
            "resourceType": "DeviceUseStatement",
            "id": "dus1",
            "status": "active",
            "subject": {"reference": "Patient/p1"},
            "device": {"reference": "Device/d1"},
        },
        {"resourceType": "Patient", "id": "p1"},
    )
    assert ids(coded, "DeviceUseStatement", {"device.type:in": VS + "hoofd"}) == {"dus1"}
    assert ids(coded, "DeviceUseStatement", {"device.type:in": VS + "hf"}) == set()


# --------------------------------------------------------------------------------------- $expand


def _codes(body: dict[str, Any]) -> list[str]:
    return [c["code"] for c in body["expansion"].get("contains", [])]


def test_expand_type_and_instance_level(coded: TestClient) -> None:
    r = coded.get("/fhir/ValueSet/$expand", params={"url": VS + "hoofd"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["resourceType"] == "ValueSet" and body["url"] == VS + "hoofd"
    assert _codes(body) == ["chronisch", "hoofdpijn", "migraine"] and body["expansion"]["total"] == 3
    assert {"system": PIJN, "code": "migraine", "display": "Migraine"} in body["expansion"]["contains"]
    r = coded.get("/fhir/ValueSet/mix/$expand")
    assert r.status_code == 200 and _codes(r.json()) == ["chronisch", "hoofdpijn", "migraine", "8867-4"]  # by system
    r = coded.get("/fhir/ValueSet/mix/$expand", params={"filter": "HOOFD", "count": "1", "offset": "0"})
    assert r.json()["expansion"]["total"] == 2 and _codes(r.json()) == ["chronisch"]
    r = coded.get("/fhir/ValueSet/$expand", params={"url": VS + "hf", "valueSetVersion": "2"})
    assert r.status_code == 200 and _codes(r.json()) == ["8867-4"]
    params = {"resourceType": "Parameters", "parameter": [{"name": "url", "valueUri": VS + "hoofd"}]}
    r = coded.post("/fhir/ValueSet/$expand", content=orjson.dumps(params), headers=JSON)
    assert r.status_code == 200 and _codes(r.json()) == ["chronisch", "hoofdpijn", "migraine"]
    inline = {
        "resourceType": "Parameters",
        "parameter": [{"name": "valueSet", "resource": vs("x", {"include": [{"valueSet": [VS + "hf"]}]})}],
    }
    r = coded.post("/fhir/ValueSet/$expand", content=orjson.dumps(inline), headers=JSON)
    assert r.status_code == 200 and _codes(r.json()) == ["8867-4"]


def test_expand_errors(coded: TestClient) -> None:
    assert coded.get("/fhir/ValueSet/$expand", params={"url": VS + "onbekend"}).status_code == 404
    assert coded.get("/fhir/ValueSet/onbekend/$expand").status_code == 404
    assert coded.get("/fhir/ValueSet/$expand").status_code == 400
    r = coded.get("/fhir/ValueSet/alle-loinc/$expand")  # all of LOINC: not listable here
    assert r.status_code == 422 and LOINC in r.json()["issue"][0]["diagnostics"]
    assert coded.get("/fhir/CodeSystem/pijn/$expand").status_code == 400  # only on ValueSet


def test_expand_needs_read_on_value_set(services: Services, coded: TestClient) -> None:
    token = token_for(services, scope="system/Observation.rs")
    r = coded.get("/fhir/ValueSet/hoofd/$expand", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 403
    token = token_for(services, scope="system/ValueSet.r")
    r = coded.get("/fhir/ValueSet/hoofd/$expand", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200
    statement = coded.get("/fhir/metadata").json()
    (value_set,) = [r for r in statement["rest"][0]["resource"] if r["type"] == "ValueSet"]
    assert {"name": "expand", "definition": "http://hl7.org/fhir/OperationDefinition/ValueSet-expand"} in value_set[
        "operation"
    ]
