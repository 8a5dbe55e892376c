"""`_filter` (R4 search_filter.html) and `_list` (R4 search.html#list) over the HTTP API.

The data sets are test_search_api.py's fixtures, so each `_filter` case can be read beside the
ordinary search that means the same. The differential test (test_search_differential.py, group
"filter") checks generated expressions against the brute-force evaluator on Synthea.
"""

# ruff: noqa: F811  (the fixtures imported from test_search_api are named as test arguments)
from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

import pytest
from conftest import BASE
from fastapi.testclient import TestClient
from test_search_api import (  # noqa: F401  (fixtures are used by name)
    ALL_BORN,
    BSN,
    LOINC,
    UCUM,
    born,
    check,
    coded,
    error,
    ids,
    linked,
    links,
    matches,
    measured,
    mentions,
    pat,
    people,
    put,
    risks,
    search,
    terminology,
)


def f(client: TestClient, rt: str, expression: str, **params: str) -> set[str]:
    return ids(client, rt, {"_filter": expression, **params})


# ============================================================================================ string

STRING_CASES = [
    ('family co "ull"', {"mueller", "muller"}),  # accents fold: Müller contains "ull"
    ('name co "VRIES"', {"devries"}),
    ('family sw "mul"', {"mueller", "muller", "mulder"}),
    ('family ew "der"', {"mulder"}),
    ('family ew "LLER"', {"mueller", "muller"}),
    ('family eq "muller"', {"mueller", "muller"}),  # the whole value, case- and accent-insensitive
    ('family eq "mul"', set()),  # ... not a prefix
    ('given eq "jan"', {"mulder"}),  # an item in the set: Jan is Piet Jan's second given name
    ('given ne "piet"', {"mulder", "mueller", "muller", "devries", "smit"}),  # an item with another value
    ('family eq "de vries"', {"devries"}),  # a quoted string holds spaces
    ("family eq muller", {"mueller", "muller"}),  # a token value needs no quotes
    ("family pr false", {"noname"}),
    ("family pr true", {"mueller", "muller", "mulder", "devries", "smit"}),
    ('address-city eq "\'s-gravenhage"', {"smit"}),
]


def test_string_operators(people: TestClient) -> None:
    check(STRING_CASES, lambda expression: f(people, "Patient", expression))


# ============================================================================================= token

TOKEN_CASES = [
    (f"code eq {LOINC}|8867-4", {"o-loinc"}),
    ("code eq loinc|8867-4", {"o-loinc"}),  # the spec's shorthand systems
    ("code eq snomed|8867-4", {"o-snomed"}),
    ("code eq 8867-4", {"o-loinc", "o-snomed", "o-nosys"}),
    ("code eq |8867-4", {"o-nosys"}),
    # ne: an item in the set has an unequal value (o-two has two codes); `not` is "none equal"
    (f"code ne {LOINC}|29463-7", {"o-loinc", "o-snomed", "o-nosys", "o-bp", "o-two"}),
    (f"not (code eq {LOINC}|29463-7)", {"o-loinc", "o-snomed", "o-nosys", "o-bp", "o-text"}),
    ("code eq loinc|8867-4 or code eq snomed|27113001", {"o-loinc", "o-two"}),
    ("code eq loinc|29463-7 and code eq snomed|27113001", {"o-two"}),
    ("code pr false", set()),  # every one has a code (o-text: text only, no token)
]


def test_token_operators(coded: TestClient) -> None:
    check(TOKEN_CASES, lambda expression: f(coded, "Observation", expression))


def test_token_value_set_and_subsumption_operators(terminology: TestClient) -> None:
    vs = "http://hub.example.nl/fhir/ValueSet/vitale-functies"
    pijn = "http://hub.example.nl/fhir/CodeSystem/pijn"
    assert f(terminology, "Observation", f"code in {vs}") == {"o-loinc", "o-bp"}
    assert f(terminology, "Observation", f"code ni {vs}") == {
        "o-snomed", "o-nosys", "o-two", "o-text", "o-hoofd", "o-pijn",
    }  # fmt: skip
    # ss: the value subsumes a code of the resource (= :below); sb: the value is subsumed (= :above)
    assert f(terminology, "Observation", f"code ss {pijn}|pijn") == {"o-hoofd", "o-pijn"}
    assert f(terminology, "Observation", f"code sb {pijn}|hoofdpijn") == {"o-hoofd", "o-pijn"}
    assert f(terminology, "Observation", f"code sb {pijn}|pijn") == {"o-pijn"}


# ====================================================================================== reference

REFERENCE_CASES = [
    ("subject re Patient/p1", {"o1", "o6"}),
    ("subject eq Patient/p1", {"o1", "o6"}),
    (f"subject re {BASE}/Patient/p2", {"o2"}),
    ("subject re Patient/p1 and code eq 29463-7", {"o6"}),
    ('subject.name co "jans"', {"o1", "o6"}),  # a chain; Group g1 has no `name` parameter
    ('subject.family eq "de vries"', {"o2"}),
    ("patient.gender eq female", {"o2"}),
    ('subject.general-practitioner.name sw "de boer"', {"o1", "o6"}),  # two levels
    (f"patient.identifier eq {BSN}|999911120", {"o1", "o6"}),
    ("subject pr false", set()),  # o5's subject is an identifier alone: a value all the same
    ("subject pr true", {"o1", "o2", "o3", "o5", "o6"}),
    ('not (subject.name co "jans")', {"o2", "o3", "o5"}),
    ('_id eq o1 or subject.family eq "de vries"', {"o1", "o2"}),
    ("_id ne o1 and subject re Patient/p1", {"o6"}),
]


def test_reference_and_chains(linked: TestClient) -> None:
    check(REFERENCE_CASES, lambda expression: f(linked, "Observation", expression))


# ================================================================================ date, number, quantity

DATE_CASES = [
    ("birthdate eq 1950", {"b1950", "b1950-03", "b1950-03-15"}),
    ("birthdate ge 1950-03", {"b1950", "b1950-03", "b1950-03-15", "b1960"}),
    ("birthdate sa 1950-03", {"b1960"}),
    ("birthdate eb 1950-03", {"b1940"}),
    ("birthdate ne 1950", {"b1940", "b1960"}),
    # po: the birth date's period overlaps the value's; co: it contains the value's
    ("birthdate po 1950-03", {"b1950", "b1950-03", "b1950-03-15"}),
    ("birthdate po 1950-03-20", {"b1950", "b1950-03"}),
    ("birthdate co 1950-03-20", {"b1950", "b1950-03"}),
    ("birthdate co 1950-03", {"b1950", "b1950-03"}),  # 1950-03-15 is inside March, does not contain it
    ("birthdate co 1950", {"b1950"}),
    ("birthdate ge 1950 and birthdate lt 1960", {"b1950", "b1950-03", "b1950-03-15"}),
    ("birthdate lt 1945 or birthdate gt 1955", {"b1940", "b1960"}),
    ("birthdate pr false", {"b-none"}),
    ("birthdate pr true", ALL_BORN),
]


def test_date_operators(born: TestClient) -> None:
    check(DATE_CASES, lambda expression: f(born, "Patient", expression))


def test_last_updated_operators(born: TestClient) -> None:
    year = datetime.now(UTC).year  # the fixture wrote them this year (UTC)
    everyone = {*ALL_BORN, "b-none"}
    assert f(born, "Patient", f"_lastUpdated po {year}") == everyone
    assert f(born, "Patient", f"_lastUpdated po {year - 2}") == set()
    assert f(born, "Patient", f"_lastUpdated ge {year - 1} and birthdate eq 1940") == {"b1940"}
    assert f(born, "Patient", f"_lastUpdated co {year}") == set()  # an instant contains no year


def test_number_and_quantity_operators(risks: TestClient, measured: TestClient) -> None:
    check(
        [
            ("probability eq 0.5", {"ra-050", "ra-0502"}),
            ("probability gt 0.5", {"ra-0502", "ra-075"}),
            ("probability ne 0.5", {"ra-002", "ra-075"}),
            # co: the stored value's precision includes the value (0.5 is [0.45, 0.55))
            ("probability co 0.52", {"ra-050"}),
            ("probability co 0.502", {"ra-050", "ra-0502"}),
            ("probability lt 0.1 or probability gt 0.7", {"ra-002", "ra-075"}),
        ],
        lambda expression: f(risks, "RiskAssessment", expression),
    )
    check(
        [
            (f"value-quantity eq 5.4|{UCUM}|mg", {"q-mg"}),
            ("value-quantity eq 5.4|ucum|mg", {"q-mg"}),
            ("value-quantity gt 5|ucum|mg", {"q-mg"}),
            ("value-quantity ge 100||kg", {"q-kg"}),
            ("value-quantity lt 10 and not (value-quantity eq 5.4||mg)", {"q-mmol"}),
        ],
        lambda expression: f(measured, "Observation", expression),
    )


# ========================================================================================== grouping


def test_and_and_or_are_read_left_to_right_without_precedence(born: TestClient) -> None:
    """search_filter.html: "Logical expressions are evaluated left to right, with no precedence
    between and and or": `a or b and c` is `(a or b) and c`."""
    a, b, c = "birthdate eq 1940", "birthdate eq 1960", "birthdate pr false"
    assert f(born, "Patient", f"{a} or {b} and {c}") == set()
    assert f(born, "Patient", f"{a} or ({b} and {c})") == {"b1940"}
    assert f(born, "Patient", f"({a} or {b}) and {c}") == set()
    assert f(born, "Patient", f"{c} and {a} or {b}") == {"b1960"}
    assert f(born, "Patient", f"not ({a} or {b})") == {"b1950", "b1950-03", "b1950-03-15", "b-none"}
    assert f(born, "Patient", f"not(not({a}))") == {"b1940"}


def test_filter_combines_with_other_parameters_and_keeps_its_paging(born: TestClient) -> None:
    expression = "birthdate ge 1950 or birthdate pr false"
    assert ids(born, "Patient", {"_filter": expression, "_id": "b1950,b1960,b1940"}) == {"b1950", "b1960"}
    first = search(born, "Patient", {"_filter": expression, "_count": "2", "_sort": "_id"})
    assert matches(first) == ["b-none", "b1950"]
    nxt = links(first)["next"]
    assert "_filter=" in nxt
    second = search(born, nxt)
    assert matches(second) == ["b1950-03", "b1950-03-15"]
    third = search(born, links(second)["next"])
    assert matches(third) == ["b1960"] and "next" not in links(third)
    # POST _search carries it the same way
    r = born.post("/fhir/Patient/_search", data={"_filter": "birthdate eb 1945"})
    assert r.status_code == 200 and matches(r.json()) == ["b1940"]


# ============================================================================================ errors

FILTER_ERRORS = [
    ('family co "unterminated', 400, "character 11"),
    ("family co", 400, "value expected"),
    ("family xx mul", 400, "unknown operator 'xx'"),
    ("(family eq mul", 400, "')' expected"),
    ("family eq mul birthdate eq 1950", 400, "unexpected text"),
    ("not family eq mul", 400, "'not' must be followed by '('"),
    ("nonsense eq 1", 400, "nonsense"),  # unknown even without strict handling: the rest would change meaning
    ("birthdate sw 1950", 400, "sw does not apply to date"),
    ("family gt m", 400, "gt does not apply to string"),
    ("subject.nonsense eq x", 400, "nonsense"),  # no target of Observation.subject has it
    ("birthdate eq not-a-date", 400, "'not-a-date' is not a date value"),
    ("birthdate eq 1950 or birthdate lt 19x", 400, "'19x' is not a date value"),
    ("general-practitioner[name eq x].family pr true", 400, "general-practitioner[...]"),
    ("family pr maybe", 400, "true or false"),
]


@pytest.mark.parametrize(("expression", "status", "says"), FILTER_ERRORS)
def test_malformed_filters_are_rejected_with_what_is_wrong(
    people: TestClient, expression: str, status: int, says: str
) -> None:
    rt = "Observation" if expression.startswith("subject.") else "Patient"
    got, outcome = error(people, rt, {"_filter": expression})
    assert got == status, outcome
    assert mentions(outcome, "_filter"), outcome
    assert any(says in i.get("diagnostics", "") for i in outcome["issue"]), outcome


def test_filter_too_long_is_413(people: TestClient) -> None:
    expression = " or ".join(f'family eq "n{i}"' for i in range(400))
    r = people.post("/fhir/Patient/_search", data={"_filter": expression})
    assert r.status_code == 413, r.text
    assert r.json()["resourceType"] == "OperationOutcome"


# ============================================================================================= _list


def test_list_finds_the_entries_of_a_list(linked: TestClient) -> None:
    put(
        linked,
        {
            "resourceType": "List",
            "id": "probleemlijst",
            "status": "current",
            "mode": "working",
            "subject": {"reference": "Patient/p1"},
            "entry": [{"item": {"reference": "Observation/o1"}}, {"item": {"reference": "Observation/o3"}}],
        },
        {
            "resourceType": "List",
            "id": "overig",
            "status": "current",
            "mode": "working",
            "entry": [{"item": {"reference": "Observation/o6"}}, {"item": {"reference": "Patient/p2"}}],
        },
    )
    assert ids(linked, "Observation", {"_list": "probleemlijst"}) == {"o1", "o3"}
    assert ids(linked, "Observation", {"_list": "probleemlijst,overig"}) == {"o1", "o3", "o6"}
    assert ids(linked, "Observation", [("_list", "probleemlijst"), ("_list", "overig")]) == set()
    assert ids(linked, "Observation", {"_list": "probleemlijst", "code": "8867-4"}) == {"o1"}
    assert ids(linked, "Patient", {"_list": "overig"}) == {"p2"}
    assert ids(linked, "Observation", {"_list": "onbekend"}) == set()
    body = search(linked, "", {"_type": "Observation,Patient", "_list": "overig"})
    assert sorted(matches(body)) == ["o6", "p2"]
    assert ids(linked, "Observation", {"_list": "$current-problems"}) == set()  # no Observation is a problem
    assert ids(linked, "Observation", {"_list": "$current-problems,probleemlijst"}) == {"o1", "o3"}
    for params in ({"_list": "$worklist"}, {"_list": "$current-problems", "_type": "Observation,Patient"}):
        status, outcome = error(linked, "" if "_type" in params else "Observation", params)
        assert status == 400 and mentions(outcome, "_list"), params


def _clinical(rt: str, rid: str, clinical: str | None, verification: str | None = None, **extra: Any) -> dict[str, Any]:
    res: dict[str, Any] = {
        "resourceType": rt,
        "id": rid,
        "patient" if rt == "AllergyIntolerance" else "subject": {"reference": "Patient/p1"},
        **extra,
    }
    if clinical:
        system = "condition-clinical" if rt == "Condition" else "allergyintolerance-clinical"
        res["clinicalStatus"] = {
            "coding": [{"system": f"http://terminology.hl7.org/CodeSystem/{system}", "code": clinical}]
        }
    if verification:
        system = "condition-ver-status" if rt == "Condition" else "allergyintolerance-verification"
        res["verificationStatus"] = {
            "coding": [{"system": f"http://terminology.hl7.org/CodeSystem/{system}", "code": verification}]
        }
    return res


def test_functional_lists_of_current_problems_allergies_and_medications(linked: TestClient) -> None:
    """R4 list.html's current lists: active (or recurring, relapsed) problems and allergies that are
    not entered in error or refuted; medications being taken or ordered. `_list` with a patient gives
    that patient's list."""
    medication = {"coding": [{"system": "http://snomed.info/sct", "code": "387517004"}]}
    put(
        linked,
        _clinical("Condition", "c-active", "active", "confirmed"),
        _clinical("Condition", "c-relapse", "relapse"),
        _clinical("Condition", "c-resolved", "resolved", "confirmed"),
        _clinical("Condition", "c-error", None, "entered-in-error"),  # con-5: no clinical status then
        _clinical("Condition", "c-refuted", "active", "refuted"),
        _clinical("Condition", "c-other", "active", subject={"reference": "Patient/p2"}),
        _clinical("AllergyIntolerance", "a-active", "active", "confirmed"),
        _clinical("AllergyIntolerance", "a-inactive", "inactive", "confirmed"),
        {"resourceType": "MedicationStatement", "id": "ms-active", "status": "active",
         "medicationCodeableConcept": medication, "subject": {"reference": "Patient/p1"}},
        {"resourceType": "MedicationStatement", "id": "ms-stopped", "status": "stopped",
         "medicationCodeableConcept": medication, "subject": {"reference": "Patient/p1"}},
        {"resourceType": "MedicationRequest", "id": "mr-active", "status": "active", "intent": "order",
         "medicationCodeableConcept": medication, "subject": {"reference": "Patient/p1"}},
        {"resourceType": "MedicationRequest", "id": "mr-done", "status": "completed", "intent": "order",
         "medicationCodeableConcept": medication, "subject": {"reference": "Patient/p1"}},
    )  # fmt: skip
    check(
        [
            ("Condition?_list=$current-problems", {"c-active", "c-relapse", "c-other"}),
            ("Condition?_list=$current-problems&patient=p1", {"c-active", "c-relapse"}),
            ("Patient/p1/Condition?_list=$current-problems", {"c-active", "c-relapse"}),
            ("Condition?_list=$current-allergies", set()),
            ("AllergyIntolerance?_list=$current-allergies", {"a-active"}),
            ("MedicationStatement?_list=$current-medications", {"ms-active"}),
            ("MedicationRequest?_list=$current-medications&patient=p1", {"mr-active"}),
            ("MedicationRequest?_list=$current-problems", set()),
        ],
        lambda q: ids(linked, q.partition("?")[0], [tuple(p.split("=", 1)) for p in q.partition("?")[2].split("&")]),
    )


def test_capability_statement_names_filter_and_list(client: TestClient) -> None:
    rest = client.get("/fhir/metadata").json()["rest"][0]
    names = {p["name"] for p in rest["searchParam"]}
    assert {"_filter", "_list"} <= names


REFERENCE_FILTER_EQUIVALENTS = [
    # each _filter beside the ordinary search that means the same
    ('subject.name co "jans"', "subject.name:contains=jans"),
    ("patient.gender eq female", "patient.gender=female"),
    ("code eq 8867-4 and subject re Patient/p1", "code=8867-4&subject=Patient/p1"),
]


@pytest.mark.parametrize(("expression", "query"), REFERENCE_FILTER_EQUIVALENTS)
def test_filter_means_what_the_ordinary_search_means(linked: TestClient, expression: str, query: str) -> None:
    assert f(linked, "Observation", expression) == ids(linked, "Observation", list(parse_qsl(query)))


# ============================================================================ _text, _content, near

LONG = " ".join(f"regel{i}" for i in range(200))  # past the 500 characters the search index keeps


@pytest.fixture
def narrated(client: TestClient) -> TestClient:
    def div(text: str) -> dict[str, str]:
        return {"status": "generated", "div": f'<div xmlns="http://www.w3.org/1999/xhtml">{text}</div>'}

    put(
        client,
        {**pat("n-allergie", "Jansen"), "text": div("<p>Allergie voor <b>penicilline</b>; woont alleen</p>")},
        {**pat("n-cafe", "Bakker"), "text": div("Drinkt veel CAFÉ &amp; thee")},
        {**pat("n-lang", "Visser"), "text": div(f"{LONG} slotwoord")},
        pat("n-geen", "Smit"),
        {
            "resourceType": "Condition",
            "id": "c-diabetes",
            "subject": {"reference": "Patient/n-geen"},
            "code": {"coding": [{"system": "http://snomed.info/sct", "code": "44054006",
                                 "display": "Diabetes mellitus type 2"}]},
        },
        {
            "resourceType": "Condition",
            "id": "c-astma",
            "subject": {"reference": "Patient/n-allergie"},
            "code": {"text": "Astma bij inspanning"},
            "text": div("Astma, bekend sinds 2010; gebruikt salbutamol"),
        },
    )  # fmt: skip
    return client


TEXT_CASES = [
    ("Patient?_text=penicilline", {"n-allergie"}),
    ("Patient?_text=PENICILLINE alleen", {"n-allergie"}),  # every word, anywhere, any case
    ("Patient?_text=penicilline kat", set()),
    ("Patient?_text=cafe", {"n-cafe"}),  # accents fold; entities are read
    ("Patient?_text=café %26 thee", {"n-cafe"}),
    ("Patient?_text=slotwoord", {"n-lang"}),  # beyond the indexed start of a long narrative
    ("Patient?_text=woont,thee", {"n-allergie", "n-cafe"}),
    ("Patient?_text:exact=woont alleen", {"n-allergie"}),  # the words as one phrase
    ("Patient?_text:exact=alleen woont", set()),
    ("Patient?_text:missing=true", {"n-geen"}),
    ("Patient?_text=div", set()),  # the markup is not text
    ("Condition?_text=salbutamol", {"c-astma"}),
    # _content: names, the narrative, code displays and texts
    ("Patient?_content=jansen", {"n-allergie"}),
    ("Patient?_content=jansen penicilline", {"n-allergie"}),  # one word in the name, one in the text
    ("Patient?_content=bakker,visser", {"n-cafe", "n-lang"}),
    ("Condition?_content=diabetes", {"c-diabetes"}),
    ("Condition?_content=mellitus type", {"c-diabetes"}),
    ("Condition?_content=inspanning", {"c-astma"}),  # CodeableConcept.text
    ("Condition?_content=salbutamol", {"c-astma"}),
    ("Condition?_content=44054006", set()),  # a code is not text (search it with `code`)
    ("Condition?_content=status", set()),  # nor the JSON's keys
    ("Condition?_content=diabetes&subject=Patient/n-geen", {"c-diabetes"}),
]


def test_text_and_content(narrated: TestClient) -> None:
    check(TEXT_CASES, lambda query: ids(narrated, query.split("?")[0], list(parse_qsl(query.split("?", 1)[1]))))


def test_text_and_content_on_both_positions_in_a_search(narrated: TestClient) -> None:
    """First (it lists its matches) and after an id (tested on the candidate's own rows on SQLite)."""
    assert ids(narrated, "Patient", {"_id": "n-allergie,n-cafe", "_content": "jansen"}) == {"n-allergie"}
    assert ids(narrated, "Patient", {"_id": "n-allergie,n-cafe", "_text": "thee"}) == {"n-cafe"}
    assert f(narrated, "Patient", '_text co "penicilline" or family eq smit') == {"n-allergie", "n-geen"}
    assert f(narrated, "Condition", '_content co "mellitus" or _text co "salbutamol"') == {"c-diabetes", "c-astma"}


def test_query_is_refused(narrated: TestClient) -> None:
    status, outcome = error(narrated, "Patient", {"_query": "mijn-lijst"})
    assert status == 400 and mentions(outcome, "_query")


@pytest.fixture
def places(client: TestClient) -> TestClient:
    def loc(lid: str, lat: float, long: float) -> dict[str, object]:
        return {"resourceType": "Location", "id": lid, "name": lid, "position": {"latitude": lat, "longitude": long}}

    put(
        client,
        loc("zoetermeer", 52.0575, 4.4931),  # the search point below
        loc("den-haag", 52.0705, 4.3007),  # 13.2 km west
        loc("leiden", 52.1601, 4.4970),  # 11.4 km north
        loc("rotterdam", 51.9225, 4.4792),  # 15.0 km south
        loc("groningen", 53.2194, 6.5665),  # 190 km
        {"resourceType": "Location", "id": "zonder", "name": "zonder positie"},
    )
    return client


NEAR_CASES = [
    ("52.0575|4.4931|1|km", {"zoetermeer"}),
    ("52.0575|4.4931|12|km", {"zoetermeer", "leiden"}),
    ("52.0575|4.4931|14", {"zoetermeer", "leiden", "den-haag"}),  # km when not said
    ("52.0575|4.4931|16000|m", {"zoetermeer", "leiden", "den-haag", "rotterdam"}),
    ("52.0575|4.4931|10|mi", {"zoetermeer", "leiden", "den-haag", "rotterdam"}),  # 16.1 km
    ("52.0575|4.4931|150|km", {"zoetermeer", "leiden", "den-haag", "rotterdam"}),
    ("52.0575|4.4931|200|km", {"zoetermeer", "leiden", "den-haag", "rotterdam", "groningen"}),
    ("52.0575|4.4931", {"zoetermeer"}),  # the server's own default: 5 km
    ("53.2194|6.5665|1|km,52.1601|4.4970|1|km", {"groningen", "leiden"}),
]


def test_near(places: TestClient) -> None:
    check(NEAR_CASES, lambda value: ids(places, "Location", {"near": value}))
    assert ids(places, "Location", {"near:missing": "true"}) == {"zonder"}
    assert ids(places, "Location", {"near": "52.0575|4.4931|12|km", "name": "leiden"}) == {"leiden"}
    for bad in ("52.0|", "noord|oost", "52.0|4.4|1|parsec", "95|4.4|1|km", "52|4.4|-1|km"):
        status, outcome = error(places, "Location", {"near": bad})
        assert status == 400 and mentions(outcome, "near"), bad
    status, outcome = error(places, "Location", {"_sort": "near"})
    assert status == 400 and mentions(outcome, "_sort")


def test_capability_statement_lists_near_and_content_not_query(client: TestClient) -> None:
    types = {r["type"]: r for r in client.get("/fhir/metadata").json()["rest"][0]["resource"]}
    location = {p["name"] for p in types["Location"]["searchParam"]}
    assert {"near", "_text", "_content"} <= location and "_query" not in location


def test_filter_in_a_compartment_and_in_conditional_interactions(linked: TestClient) -> None:
    """The compartment search and the conditional interactions read their criteria with the same
    parser: a `_filter` narrows them as it narrows a search."""
    assert ids(linked, "Patient/p1/Observation", {"_filter": "code eq 29463-7 or code eq 85354-9"}) == {"o6"}
    assert ids(linked, "Patient/p1/Observation", {"_filter": "not (code eq 29463-7)"}) == {"o1"}
    code = {"coding": [{"system": LOINC, "code": "29463-7"}]}
    body = {"resourceType": "Observation", "status": "amended", "code": code, "subject": {"reference": "Patient/p1"}}
    r = linked.put("/fhir/Observation", params={"_filter": "subject re Patient/p1 and code eq 29463-7"}, json=body)
    assert r.status_code == 200, r.text  # one match: updated in place
    assert r.json()["id"] == "o6" and r.json()["status"] == "amended"
    r = linked.put("/fhir/Observation", params={"_filter": "subject re Patient/p1"}, json=body)
    assert r.status_code == 412, r.text  # several matches
    r = linked.delete("/fhir/Observation", params={"_filter": "subject re Patient/p2 or subject re Group/g1"})
    assert r.status_code == 412, r.text  # conditional delete takes one match (conditionalDelete: single)
    r = linked.delete("/fhir/Observation", params={"_filter": "subject re Patient/p2 or _id eq o404"})
    assert r.status_code in (200, 204), r.text
    assert ids(linked, "Observation", {"_id": "o2,o3"}) == {"o3"}
