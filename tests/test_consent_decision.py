"""The decision point: its rules in isolation, and its two forms (per resource in Python, per row
in SQL for searches) agreeing on generated cases."""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import and_, insert, select, update

from consent.decision import Lookups, Subject, decide, visibility
from consent.model import Rule, rules_of
from hub.app import Services
from hub.pipeline import TRANSACTION, Interaction, Principal
from hub.store.tables import consent_rule, resource, resource_author

GP = Subject(org="ura:2", org_category="RPZAC001")
HOSPITAL = Subject(org="ura:1", org_category="RPZAC104")
NOW = datetime(2026, 11, 23, 12, 0)


def rule(decision: str, **kw: Any) -> Rule:
    fields: dict[str, Any] = {
        "consent_id": "c",
        "patient_id": "p",
        "decision": decision,
        "custodian": None,
        "category": None,
        "actor_org": None,
        "actor_category": None,
        "purpose": None,
        "period_start": None,
        "period_end": None,
    }
    fields.update(kw)
    return Rule(**fields)


def test_default_is_deny_and_authors_always_see() -> None:
    assert not decide(GP, "p", "GGC002", set(), [], False, NOW).permit
    d = decide(GP, "p", "GGC002", {"ura:2"}, [rule("deny")], False, NOW)
    assert d.permit and d.rule == "author"


def test_identification_and_non_patient_data_need_no_consent() -> None:
    assert decide(GP, "p", None, set(), [], False, NOW).permit  # the Patient resource
    assert decide(GP, None, None, set(), [], False, NOW).permit  # an Organization


def test_more_specific_wins_and_deny_wins_a_tie() -> None:
    category_permit = rule("permit", actor_category="RPZAC001")
    org_deny = rule("deny", actor_org="ura:2", consent_id="d")
    assert decide(GP, "p", "GGC002", set(), [category_permit], False, NOW).permit
    d = decide(GP, "p", "GGC002", set(), [category_permit, org_deny], False, NOW)
    assert not d.permit and d.consent == "Consent/d"
    assert not decide(
        GP, "p", "GGC002", set(), [category_permit, rule("deny", actor_category="RPZAC001")], False, NOW
    ).permit
    # a low data category beats the high one; the high one covers the low ones
    assert decide(GP, "p", "GGC013", set(), [rule("permit", category="GGC002")], False, NOW).permit
    assert not decide(
        GP, "p", "GGC013", set(), [rule("permit", category="GGC002"), rule("deny", category="GGC013")], False, NOW
    ).permit
    assert not decide(GP, "p", "GGC002", set(), [rule("permit", category="GGC013")], False, NOW).permit


def test_period_purpose_and_custodian_limit_a_rule() -> None:
    later = rule("permit", period_start=NOW + timedelta(days=1))
    ended = rule("permit", period_end=NOW - timedelta(days=1))
    research = rule("permit", purpose="HRESCH")
    elsewhere = rule("permit", custodian="ura:9")
    for r in (later, ended, research, elsewhere):
        assert not decide(GP, "p", "GGC002", {"ura:1"}, [r], False, NOW).permit, r
    assert decide(GP, "p", "GGC002", {"ura:1"}, [rule("permit", custodian="ura:1")], False, NOW).permit


def test_care_process_and_break_the_glass() -> None:
    d = decide(GP, "p", "GGC002", set(), [rule("deny", actor_category="RPZAC001")], True, NOW)
    assert d.permit and d.rule == "care-process"
    assert not decide(GP, "p", "GGC002", set(), [rule("deny", actor_org="ura:2")], True, NOW).permit
    btg = Subject(org="ura:2", org_category="RPZAC001", purpose="ETREAT", break_the_glass="bewusteloos")
    d = decide(btg, "p", "GGC002", set(), [rule("deny", actor_org="ura:2")], False, NOW)
    assert d.permit and d.rule == "break-the-glass" and d.break_the_glass == "bewusteloos"
    auditor = Subject(org="ura:7", org_category=None)
    assert not decide(auditor, "p", "GGC002", set(), [rule("permit")], False, NOW).permit


def test_nested_provisions_become_their_own_rules() -> None:
    consent = {
        "resourceType": "Consent",
        "id": "c1",
        "status": "active",
        "scope": {"coding": [{"code": "patient-privacy"}]},
        "patient": {"reference": "Patient/p"},
        "provision": {
            "type": "permit",
            "purpose": [{"code": "TREAT"}],
            "provision": [
                {
                    "type": "deny",
                    "actor": [
                        {"reference": {"identifier": {"system": "http://fhir.nl/fhir/NamingSystem/ura", "value": "2"}}}
                    ],
                }
            ],
        },
    }
    rules = rules_of(consent, lambda _ref: None)
    assert [(r.decision, r.actor_org, r.purpose) for r in rules] == [
        ("permit", None, "TREAT"),
        ("deny", "ura:2", "TREAT"),
    ]
    assert rules[1].specificity > rules[0].specificity


# -- Python and SQL agree --------------------------------------------------------------------------

PATIENTS = ["p1", "p2", "p3"]
ORGS = ["ura:10000001", "ura:10000002", "ura:10000003", "ura:10000004"]
CATEGORIES = [None, "GGC002", "GGC012", "GGC013", "acp"]
ACTOR_CATEGORIES = ["RPZAC001", "RPZAC104", "RPZAC005"]


def _resources() -> list[dict[str, Any]]:
    ura = "http://fhir.nl/fhir/NamingSystem/ura"
    out: list[dict[str, Any]] = [
        {"resourceType": "Organization", "id": "o2", "identifier": [{"system": ura, "value": "10000002"}]},
        # care processes: ura:10000002 owns a live task for p2 and a cancelled one for p3
        _task("t2", "requested", "p2"),
        _task("t3", "cancelled", "p3"),
    ]
    lab = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "laboratory"}]}
    for p in PATIENTS:
        subject = {"reference": f"Patient/{p}"}
        med = {"text": "m"}
        out += [
            {"resourceType": "Patient", "id": p},
            {
                "resourceType": "Observation",
                "id": f"{p}-v",
                "status": "final",
                "code": {"text": "v"},
                "subject": subject,
            },
            {
                "resourceType": "Observation",
                "id": f"{p}-l",
                "status": "final",
                "code": {"text": "l"},
                "subject": subject,
            },
            {
                "resourceType": "MedicationRequest",
                "id": f"{p}-m",
                "status": "active",
                "intent": "order",
                "subject": subject,
            },
            {"resourceType": "Condition", "id": f"{p}-c", "subject": subject},
            {"resourceType": "Consent", "id": f"{p}-acp", "status": "active", "patient": subject},
        ]
        out[-4]["category"] = [lab]
        out[-3]["medicationCodeableConcept"] = med
        out[-1].update({"scope": {"coding": [{"code": "adr"}]}, "category": [{"text": "acp"}]})
    return out


def _task(tid: str, status: str, patient: str) -> dict[str, Any]:
    return {
        "resourceType": "Task",
        "id": tid,
        "status": status,
        "intent": "order",
        "for": {"reference": f"Patient/{patient}"},
        "owner": {"reference": "Organization/o2"},
    }


def _random_rule(rng: random.Random, n: int, broad: bool = False) -> dict[str, Any]:
    """A random rule; `broad` favours the Mitz 'yes to everything' permits (category GGC002 or none,
    any custodian) beside narrower denials, the case the SQL short-cuts (consent/decision.py)."""
    actor = rng.choice(["org", "category", None])
    broad_permit = broad and rng.random() < 0.5
    return {
        "consent_id": f"c{n}",
        "patient_id": rng.choice(PATIENTS),
        "decision": "permit" if broad_permit else rng.choice(["permit", "deny"]),
        "custodian": None if broad_permit else rng.choice([None, None, *ORGS]),
        "category": rng.choice([None, "GGC002"]) if broad_permit else rng.choice(CATEGORIES),
        "actor_org": rng.choice(ORGS) if actor == "org" else None,
        "actor_category": rng.choice(ACTOR_CATEGORIES) if actor == "category" else None,
        "purpose": rng.choice([None, None, "TREAT", "HRESCH"]),
        "period_start": rng.choice([None, None, NOW - timedelta(days=3), NOW + timedelta(days=3)]),
        "period_end": rng.choice([None, None, NOW + timedelta(days=3), NOW - timedelta(days=1)]),
    }


@pytest.mark.parametrize("seed", range(24))
def test_python_and_sql_agree(services: Services, seed: int) -> None:
    rng = random.Random(seed)
    broad = seed >= 16
    resources = _resources()
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": r, "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}} for r in resources
        ],
    }
    services.pipeline.run(Interaction(TRANSACTION, body=bundle, principal=Principal(kind="local")))
    rules = [_random_rule(rng, n, broad) for n in range(rng.randint(3, 12))]
    with services.db.transaction(write=True) as conn:
        for r in resources:
            authors = rng.sample(ORGS, rng.randint(0, 2))
            for org in authors:
                conn.execute(insert(resource_author).values(res_type=r["resourceType"], res_id=r["id"], org=org))
            if authors and rng.random() < 0.5:  # the row names one of them as its holder (the SQL's fast path)
                current = and_(resource.c.res_type == r["resourceType"], resource.c.res_id == r["id"])
                conn.execute(update(resource).where(current, resource.c.is_current).values(holder=authors[0]))
        for r in rules:
            conn.execute(insert(consent_rule).values(**r, specificity=Rule(**r).specificity))
    types = sorted({r["resourceType"] for r in resources})
    with services.db.transaction() as conn:
        for _ in range(12):
            org = rng.choice(ORGS)
            subject = Subject(
                org=org, org_category=rng.choice([*ACTOR_CATEGORIES, None]), purpose=rng.choice(["TREAT", "HRESCH"])
            )
            lookups = Lookups(conn, subject)
            constraint = visibility(subject, services.search_params, lookups.implied_patients)
            expected = set()
            one_statement = Lookups(conn, subject)  # a read's path: the row, its authors and rules at once
            for r in resources:
                stored_patient = services.indexer.patient_id(r)
                permit = lookups.decide(r, stored_patient).permit
                if permit:
                    expected.add(f"{r['resourceType']}/{r['id']}")
                stored = one_statement.read(r["resourceType"], r["id"])
                assert stored is not None and stored.patient_id == stored_patient
                assert one_statement.decide(stored.resource(), stored.patient_id).permit == permit, (subject, r, rules)
            # per type (the planner's usual case) and all types at once (system search)
            for group in [[t] for t in types] + [types]:
                rows = conn.execute(
                    select(resource.c.res_type, resource.c.res_id).where(
                        resource.c.is_current, resource.c.res_type.in_(group), constraint(group, resource)
                    )
                )
                got = {f"{t}/{i}" for t, i in rows}
                want = {x for x in expected if x.split("/")[0] in group}
                assert got == want, (subject, group, rules)
            # a chain's or _has's alias: the care-process patients come as a list, not a subquery
            alias = resource.alias("target")
            rows = conn.execute(
                select(alias.c.res_type, alias.c.res_id).where(
                    alias.c.is_current, alias.c.res_type.in_(types), constraint(types, alias)
                )
            )
            assert {f"{t}/{i}" for t, i in rows} == expected, (subject, "alias", rules)


def test_row_and_chain_constraints_compile_together(services: Services, monkeypatch: pytest.MonkeyPatch) -> None:
    """A search's row constraint and its chain's constraint go into one statement even when the
    minute turns between them and other subjects have filled the caches meanwhile (they once named
    two CTEs of one name, which SQLAlchemy refuses: a 500 on `Provenance?target._id=` in CI)."""
    import consent.decision as decision

    minutes = iter(NOW + timedelta(minutes=n) for n in range(10_000))
    monkeypatch.setattr(decision, "_minute", lambda: next(minutes))
    with services.db.transaction() as conn:
        lookups = Lookups(conn, GP)
        constraint = visibility(GP, services.search_params, lookups.implied_patients)
        outer = constraint(["Observation"], resource)
        for n in range(1_100):  # more subjects than any cache holds
            other = Subject(org=f"ura:{n}", org_category="RPZAC001")
            visibility(other, services.search_params, lambda: [])(["Observation"], resource)
        target = resource.alias("target")
        inner = select(target.c.pk).where(constraint(["Observation"], target))
        rows = conn.execute(select(resource.c.pk).where(outer, resource.c.pk.in_(inner))).all()
        assert rows == []  # compiles and runs (the store is empty)
