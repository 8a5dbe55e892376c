"""Unit tests for bundle reference rewriting (hub/api/references.py)."""

from __future__ import annotations

from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import orjson
import pytest

from hub.api.references import References
from hub.formats import jsonfmt
from hub.formats.outcome import FhirError


class FakeSearch:
    """Answers conditional references from a table, and counts the look-ups."""

    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers = answers
        self.calls: list[tuple[str, list[tuple[str, str]]]] = []

    def match(self, ctx: Any, rt: str, params: list[tuple[str, str]]) -> list[Any]:
        self.calls.append((rt, params))
        key = f"{rt}?" + "&".join(f"{k}={v}" for k, v in params)
        return [SimpleNamespace(res_id=i) for i in self.answers.get(key, [])]


def refs(aliases: dict[str, str], answers: dict[str, list[str]] | None = None) -> tuple[References, FakeSearch]:
    search = FakeSearch(answers or {})
    ctx = SimpleNamespace(
        interaction=SimpleNamespace(base_url="https://hub.example.nl/fhir"),
        services=SimpleNamespace(search=search),
    )
    return References(ctx, aliases), search  # type: ignore[arg-type]


def test_fullurls_become_ids_everywhere_but_other_urns_stay() -> None:
    r, _ = refs({"urn:uuid:p1": "Patient/123", "https://old.example/fhir/Practitioner/9": "Practitioner/9"})
    res = {
        "resourceType": "Observation",
        "subject": {"reference": "urn:uuid:p1"},
        "performer": [{"reference": "https://old.example/fhir/Practitioner/9"}],
        "code": {"coding": [{"system": "urn:oid:2.16.840.1.113883.6.1", "code": "8867-4"}]},
        "identifier": [{"system": "urn:ietf:rfc:3986", "value": "urn:uuid:something-else"}],
        "derivedFrom": [{"reference": "https://elders.example/fhir/Observation/1"}],
        "focus": [{"reference": "https://hub.example.nl/fhir/Condition/7"}],
        "text": {
            "status": "generated",
            "div": '<div xmlns="http://www.w3.org/1999/xhtml"><a href="urn:uuid:p1">x</a></div>',
        },
    }
    before = orjson.dumps(res)
    out = r.rewrite(res)
    assert orjson.dumps(res) == before  # the input is untouched
    assert out["subject"]["reference"] == "Patient/123"
    assert out["performer"][0]["reference"] == "Practitioner/9"
    assert out["code"]["coding"][0]["system"] == "urn:oid:2.16.840.1.113883.6.1"
    assert out["identifier"][0]["value"] == "urn:uuid:something-else"
    assert out["derivedFrom"][0]["reference"] == "https://elders.example/fhir/Observation/1"
    assert out["focus"][0]["reference"] == "Condition/7"  # our own base: relative
    assert 'href="Patient/123"' in out["text"]["div"]


def test_a_reference_to_an_unknown_urn_is_an_error() -> None:
    r, _ = refs({})
    with pytest.raises(FhirError) as err:
        r.rewrite({"resourceType": "Observation", "subject": {"reference": "urn:uuid:nowhere"}})
    assert err.value.status == 400


def test_conditional_references_resolve_once_and_must_match_one() -> None:
    bsn = "Patient?identifier=http://fhir.nl/fhir/NamingSystem/bsn|999911120"
    r, search = refs({}, {bsn: ["p1"], "Practitioner?identifier=x": ["a", "b"]})
    res = {"resourceType": "Observation", "subject": {"reference": bsn}, "focus": [{"reference": bsn}]}
    out = r.rewrite(res)
    assert out["subject"]["reference"] == out["focus"][0]["reference"] == "Patient/p1"
    out2 = r.rewrite(res)
    assert out2 == out
    assert len(search.calls) == 1  # cached for the bundle
    with pytest.raises(FhirError) as many:
        r.rewrite({"resourceType": "Observation", "subject": {"reference": "Practitioner?identifier=x"}})
    assert many.value.status == 412
    with pytest.raises(FhirError) as none:
        r.rewrite({"resourceType": "Observation", "subject": {"reference": "Patient?identifier=nobody"}})
    assert none.value.status == 412


def test_escaped_characters_in_conditional_references() -> None:
    query = 'Patient?name=van "de" Berg'
    r, search = refs({}, {query: ["p2"]})
    out = r.rewrite({"resourceType": "Observation", "subject": {"reference": query}})
    assert out["subject"]["reference"] == "Patient/p2"
    assert search.calls == [("Patient", [("name", 'van "de" Berg')])]


def test_exact_decimals_survive() -> None:
    r, _ = refs({"urn:uuid:p1": "Patient/1"})
    res = {
        "resourceType": "Observation",
        "subject": {"reference": "urn:uuid:p1"},
        "valueQuantity": {"value": Decimal("1.50")},
    }
    out = r.rewrite(res)
    assert jsonfmt.dumps(out["valueQuantity"]) == b'{"value":1.50}'
