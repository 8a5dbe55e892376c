"""Chained search inside contained resources (R4 search.html#contained: "chained parameters will be
evaluated inside contained resources"), over the HTTP API.

A container keeps the index rows of each contained resource one of its reference parameters names
(`#id`), under that parameter (hub.search.extract._add_contained); a chain through the parameter
finds it there as well as through ordinary references.
"""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from test_search_api import check, delete, error, ids, mentions, put, search

from hub.store.tables import idx_reference, idx_string, idx_token

TAYLOR = {"resourceType": "Patient", "id": "p1", "name": [{"family": "Taylor"}], "gender": "female"}
BSN = "http://fhir.nl/fhir/NamingSystem/bsn"
TEAM = {"coding": [{"code": "team"}]}
GPK = "urn:oid:2.16.840.1.113883.2.4.4.10"  # G-Standaard GPK codes


def medication(mid: str, code: str) -> dict[str, Any]:
    return {"resourceType": "Medication", "id": mid, "code": {"coding": [{"system": GPK, "code": code}]}}


def medication_request(mid: str, medication_ref: str, **fields: Any) -> dict[str, Any]:
    return {
        "resourceType": "MedicationRequest",
        "id": mid,
        "status": "active",
        "intent": "order",
        "subject": {"reference": "Patient/real"},
        "medicationReference": {"reference": medication_ref},
        **fields,
    }


def observation(oid: str, code: str, **fields: Any) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": oid,
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
        **fields,
    }


@pytest.fixture
def containers(client: TestClient) -> TestClient:
    put(
        client,
        {"resourceType": "Organization", "id": "org1", "name": "Zorggroep Haaglanden"},
        {"resourceType": "Patient", "id": "real", "name": [{"family": "Jansen"}], "gender": "male"},
        {"resourceType": "Patient", "id": "p1", "name": [{"family": "Bakker"}], "gender": "male"},
        medication("medreal", "Y"),
        # o1: its subject is a contained Patient Taylor, who names a real Organization
        observation(
            "o1",
            "1-1",
            subject={"reference": "#p1"},
            contained=[
                {
                    **TAYLOR,
                    "identifier": [{"system": BSN, "value": "999911120"}],
                    "managingOrganization": {"reference": "Organization/org1"},
                }
            ],
        ),
        # o2: an ordinary reference to a real Patient
        observation("o2", "1-1", subject={"reference": "Patient/real"}),
        # o3: the contained Taylor is its performer, not its subject
        observation(
            "o3",
            "2-2",
            subject={"reference": "Patient/real"},
            performer=[{"reference": "#t"}],
            contained=[{**TAYLOR, "id": "t"}],
        ),
        # o4: two contained resources, the subject one a Group
        observation(
            "o4",
            "2-2",
            subject={"reference": "#g"},
            contained=[
                {"resourceType": "Group", "id": "g", "type": "person", "actual": True, "code": TEAM},
                {"resourceType": "Practitioner", "id": "dr", "name": [{"family": "Taylor"}]},
            ],
            performer=[{"reference": "#dr"}],
        ),
        medication_request("m1", "#med", contained=[medication("med", "X")]),
        medication_request("m2", "Medication/medreal"),
    )
    return client


CHAIN_CASES = [
    ("subject.name=Taylor", {"o1"}),  # the contained Patient of o1
    ("subject:Patient.name=Taylor", {"o1"}),  # the type modifier picks the Patient
    ("subject:Group.code=team", {"o4"}),  # the contained Group of o4
    ("subject:Group.code=other", set()),
    ("subject.name=Jansen", {"o2", "o3"}),  # ordinary references still count
    ("patient.name=Taylor", {"o1"}),  # a derived parameter (subject where Patient) reads subject's rows
    ("patient.gender=female", {"o1"}),
    ("subject.name:exact=Taylor", {"o1"}),
    ("subject.name:exact=taylor", set()),
    ("subject.name:contains=aylo", {"o1"}),
    ("subject:Patient.identifier=999911120", {"o1"}),
    ("subject._id=p1", {"o1"}),  # the contained resource's local id; the real Patient/p1 has no Observation
    ("subject._id=g", {"o4"}),
    ("performer.name=Taylor", {"o3", "o4"}),  # o3's Taylor is its performer
    ("performer:Practitioner.name=Taylor", {"o4"}),
    ("subject.organization.name=Zorggroep", {"o1"}),  # a contained resource's reference, chained on
    ("subject.organization._id=org1", {"o1"}),
    ("subject.name=Taylor&code=1-1", {"o1"}),
    ("subject:Group.code=team&performer.name=Taylor", {"o4"}),
    ("subject.name=Taylor&performer.name=Taylor", set()),
    ("subject:Patient.name=Taylor&subject:Group.code=team", set()),  # one subject: not both
    ("subject:Group.code=team&subject:Group._id=g", {"o4"}),
    ("_id=o1,o2,o3,o4&subject.name=Taylor", {"o1"}),  # the chain tested per candidate (SQLite)
    ("code=2-2&subject:Group.code=team", {"o4"}),  # a token drives, the chain tests the page
    ("subject.name=Taylor,Jansen", {"o1", "o2", "o3"}),
    ('_filter=subject.name eq "taylor" or code eq 2-2', {"o1", "o3", "o4"}),
    ('_filter=subject.name co "aylo" and code eq 1-1', {"o1"}),
    ('_filter=not (subject.name eq "taylor")', {"o2", "o3", "o4"}),
    ("_has:Observation:subject:code=1-1&name=Jansen", {"real"}),  # _has sees the ordinary reference only
    ("_content=Taylor", {"o1", "o3", "o4"}),  # a contained resource's texts are part of the content
]


def _query(client: TestClient, q: str) -> set[str]:
    rt = "Patient" if q.startswith("_has") else "Observation"
    return ids(client, rt, [tuple(p.split("=", 1)) for p in q.split("&")])  # type: ignore[misc]


def test_chains_look_inside_contained_resources(containers: TestClient) -> None:
    check(CHAIN_CASES, lambda q: _query(containers, q))


def test_a_contained_medication_by_its_code(containers: TestClient) -> None:
    check(
        [
            ("medication.code=X", {"m1"}),
            ("medication.code=Y", {"m2"}),
            ("medication.code=X,Y", {"m1", "m2"}),
            ("medication:Medication.code=" + GPK + "|X", {"m1"}),
            ("medication.code=Z", set()),
        ],
        lambda q: ids(containers, "MedicationRequest", [tuple(q.split("=", 1))]),  # type: ignore[list-item]
    )


def test_contained_rows_follow_updates_and_deletes(containers: TestClient) -> None:
    smith = {**TAYLOR, "name": [{"family": "Smith"}]}
    renamed = observation("o1", "1-1", subject={"reference": "#p1"}, contained=[smith])
    put(containers, renamed)
    assert _query(containers, "subject.name=Taylor") == set()
    assert _query(containers, "subject.name=Smith") == {"o1"}
    delete(containers, "Observation", "o1")
    assert _query(containers, "subject.name=Smith") == set()


def test_contained_rows_are_kept_apart_from_ordinary_ones(containers: TestClient, services: Any) -> None:
    """The rows sit under the container's type with `reference:Type.code`: a plain search of the
    contained type does not see them, and they are written only for what a reference names."""
    assert ids(containers, "Patient", {"name": "Taylor"}) == set()
    assert ids(containers, "Practitioner", {"name": "Taylor"}) == set()
    assert ids(containers, "Observation", {"subject": "Patient/p1"}) == set()
    with services.db.transaction() as conn:
        params = {
            p
            for table in (idx_string, idx_token, idx_reference)
            for (p,) in conn.execute(select(table.c.param).where(table.c.res_type == "Observation"))
        }
    assert {"subject:Patient.name", "subject:Patient._id", "subject:Patient.organization"} <= params
    assert {"performer:Patient.name", "subject:Group.code", "performer:Practitioner.name"} <= params
    assert not any(p.startswith("patient:") for p in params)  # the derived parameter has no rows of its own


def test_contained_types_are_still_unsupported_as_matches(containers: TestClient) -> None:
    """`_contained=true|both` (contained resources as matches) is not supported: a warning, or a 400
    under strict handling. `_contained=false` and `_containedType=container`, the defaults, are fine."""
    body = search(containers, "Medication", {"_contained": "false", "_containedType": "container"})
    assert not [e for e in body.get("entry", []) if e["search"]["mode"] == "outcome"]
    body = search(containers, "Medication", {"_contained": "true"})
    assert any(e["search"]["mode"] == "outcome" for e in body["entry"])
    status, outcome = error(containers, "Medication", {"_contained": "both"}, prefer="handling=strict")
    assert status == 400 and mentions(outcome, "_contained")


@pytest.mark.parametrize(
    "params", [{"_contained": "yes"}, {"_containedType": "all"}, {"_contained:exact": "false"}, {"_contained": ""}]
)
def test_malformed_contained_parameters(containers: TestClient, params: dict[str, str]) -> None:
    status, outcome = error(containers, "Observation", params)
    assert status == 400 and mentions(outcome, next(iter(params)))


def test_without_containers_a_chain_keeps_its_plan() -> None:
    """The planner asks (one statement per chain) whether a container of the types holds a resource
    of each target type; where none does, the chain's SQL is what it was without contained search."""
    from hub.search.planner import Planner
    from hub.search.query import QueryParser
    from hub.search.registry import default_registry

    registry = default_registry()
    query = QueryParser(registry, True, 50, 1000).parse(["Observation"], [("subject.name", "Taylor")])
    asked: list[str] = []

    def sql(probe: Any) -> str:
        planner = Planner(registry, "http://hub.test/fhir", dialect="sqlite", probe=probe)
        return str(planner.condition(query.clauses[0], ["Observation"]).compile())

    def none_held(stmt: Any) -> tuple[bool, ...]:
        asked.append(str(stmt.compile()))
        return (False,) * len(stmt.selected_columns)

    plain = sql(None)
    assert sql(none_held) == plain and len(asked) == 1
    assert "subject:Patient._id" not in plain
    held = sql(lambda stmt: (True,) * len(stmt.selected_columns))
    assert held != plain and "UNION ALL" in held


def test_a_contained_reference_is_a_value(containers: TestClient) -> None:
    """`subject:missing` sees a reference to a contained resource as a value; a search by target,
    `_include` and `_revinclude` do not follow it (the contained resource has no id of its own)."""
    check(
        [
            ("subject:missing=true", set()),
            ("performer:missing=false", {"o3", "o4"}),
            ("patient:missing=false", {"o1", "o2", "o3"}),  # o4's subject is a Group
            ("subject=p1", set()),
            ("subject=Patient/p1", set()),
            ("subject=%23p1", set()),
        ],
        lambda q: _query(containers, q.replace("%23", "#")),
    )
    body = search(containers, "Observation", {"_id": "o1", "_include": "Observation:subject"})
    assert [e["resource"]["id"] for e in body["entry"]] == ["o1"]
    assert ids(containers, "Patient", {"_id": "p1", "_revinclude": "Observation:subject"}) == {"p1"}
    body = search(containers, "Patient", {"_id": "p1", "_revinclude": "Observation:subject"})
    assert len(body["entry"]) == 1


def test_negations_and_missing_inside_contained_resources(containers: TestClient) -> None:
    """A chain's `:not` and `:missing` hold for a contained resource as for a referenced one: the
    contained Patient Taylor (female, no birth date) of o1 against the real Patient Jansen of o2, o3."""
    check(
        [
            ("subject:Patient.gender:not=male", {"o1"}),
            ("subject:Patient.gender:not=female", {"o2", "o3"}),
            ("subject:Patient.birthdate:missing=true", {"o1", "o2", "o3"}),
            ("subject:Patient.identifier:missing=true", {"o2", "o3"}),
            ("subject:Patient.identifier:missing=false", {"o1"}),
            ("subject._id:not=p1", {"o2", "o3", "o4"}),
            ("subject:Group._id:missing=false", {"o4"}),
            ("subject:Patient._lastUpdated=gt2000", {"o2", "o3"}),  # a contained resource has no meta
        ],
        lambda q: _query(containers, q),
    )


def _search_parameter(code: str, base: str, kind: str, expression: str, **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "SearchParameter",
        "url": f"http://hub.example.nl/fhir/SearchParameter/{base}-{code}",
        "name": code,
        "status": "active",
        "description": f"{base} {code} (test)",
        "code": code,
        "base": [base],
        "type": kind,
        "expression": expression,
        **extra,
    }


def test_custom_parameters_reach_into_contained_resources(containers: TestClient, services: Any) -> None:
    """A SearchParameter POSTed later indexes what containers already hold: a parameter of the
    contained type (Patient `marital`) and a reference parameter of the container (Observation
    `helper`, its performer); a change re-indexes, and a delete drops the rows."""
    married = {**TAYLOR, "maritalStatus": {"coding": [{"code": "M"}]}}
    put(containers, observation("o5", "3-3", subject={"reference": "#p1"}, contained=[married]))
    marital = _search_parameter("marital", "Patient", "token", "Patient.maritalStatus")
    r = containers.post("/fhir/SearchParameter", json=marital)
    assert r.status_code == 201, r.text
    marital_id = r.json()["id"]
    helper = _search_parameter(
        "helper", "Observation", "reference", "Observation.performer", target=["Practitioner", "Patient"]
    )
    r = containers.post("/fhir/SearchParameter", json=helper)
    assert r.status_code == 201, r.text
    helper_id = r.json()["id"]
    check(
        [
            ("subject:Patient.marital=M", {"o5"}),
            ("subject.marital=M", {"o5"}),
            ("helper.name=Taylor", {"o3", "o4"}),  # o3's contained Patient, o4's contained Practitioner
            ("helper:Practitioner.family=Taylor", {"o4"}),
            ("helper:missing=false", {"o3", "o4"}),
        ],
        lambda q: _query(containers, q),
    )
    changed = {**marital, "expression": "Patient.maritalStatus.coding.code.replace('M', 'W')", "id": marital_id}
    assert containers.put(f"/fhir/SearchParameter/{marital_id}", json=changed).status_code == 200
    assert _query(containers, "subject.marital=W") == {"o5"}
    assert _query(containers, "subject.marital=M") == set()
    for sp in (marital_id, helper_id):
        assert containers.delete(f"/fhir/SearchParameter/{sp}").status_code in (200, 204)
    with services.db.transaction() as conn:
        left = {
            p
            for table in (idx_string, idx_token, idx_reference)
            for (p,) in conn.execute(
                select(table.c.param).where(table.c.param.like("%marital%") | table.c.param.like("helper%"))
            )
        }
    assert left == set()


def test_extraction_of_contained_rows() -> None:
    """Which rows a container keeps: only for contained resources a reference parameter names, of a
    type the parameter allows; once per parameter and resource however often it is named; under
    each parameter that names it; none for a dangling `#id`."""
    from hub.search.extract import extract

    practitioner = {"resourceType": "Practitioner", "id": "dr", "name": [{"family": "Arts"}]}
    unnamed = {"resourceType": "Practitioner", "id": "loose", "name": [{"family": "Los"}]}
    device = {"resourceType": "Device", "id": "dev", "deviceName": [{"name": "meter", "type": "user-friendly-name"}]}
    res = {
        "resourceType": "Observation",
        "id": "o",
        "status": "final",
        "code": {"text": "x"},
        "performer": [{"reference": "#dr"}, {"reference": "#dr"}, {"reference": "#missing"}],
        "device": {"reference": "#dev"},
        "subject": {"reference": "#dr"},  # subject may not be a Practitioner: no rows under subject
        "basedOn": [{"reference": "#dr"}],  # nor basedOn
        "contained": [practitioner, unnamed, device],
    }
    rows = extract(res)
    params = [r["param"] for table in rows.values() for r in table if ":" in r["param"]]
    assert sorted(set(params)) == [
        "device:Device._id",
        "device:Device.device-name",
        "performer:Practitioner._id",
        "performer:Practitioner.family",
        "performer:Practitioner.name",
        "performer:Practitioner.phonetic",
    ]
    assert params.count("performer:Practitioner.family") == 1  # named twice, indexed once
    refs = [(r["param"], r["target_type"], r["target_id"], r["url"]) for r in rows["reference"]]
    assert sorted(refs) == [("device", "Device", None, "#dev"), ("performer", "Practitioner", None, "#dr")]
    assert all(r["res_type"] == "Observation" for table in rows.values() for r in table)


def test_the_probe_sends_its_values_in_the_sql_on_postgresql(containers: TestClient, services: Any) -> None:
    """PostgreSQL's generic plan for the probe's `res_type = $1 AND param = $2` scanned every token row
    (38-60 ms at 120 patients, bench/README.md); the values go into the SQL there, so each run is
    planned as an index seek. SQLite plans every statement with its values anyway."""
    from sqlalchemy import event

    sent: list[tuple[str, Any]] = []

    def seen(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        if "subject:Patient._id" in statement or "subject:Patient._id" in str(parameters):
            sent.append((statement, parameters))

    engine = services.db.engine
    event.listen(engine, "before_cursor_execute", seen)
    try:
        for _ in range(7):  # past psycopg's prepare threshold (5)
            assert _query(containers, "subject.name=Taylor") == {"o1"}
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    probes = [(s, p) for s, p in sent if "EXISTS" in s.upper()]
    assert probes, sent
    if services.db.dialect == "postgresql":
        assert all("'subject:Patient._id'" in s and not p for s, p in probes)
