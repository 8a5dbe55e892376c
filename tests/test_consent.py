"""Consent enforcement through the HTTP API: a permit/deny matrix
(consulting organisation x consent state x data category x interaction), no-leak checks for
counts, includes, chains, _has, history and $everything, withdrawal, implied consent in a care
process, break-the-glass, and who may write privacy consents.

The expected outcomes are written out by hand from the rules (consent/decision.py's docstring),
not computed by the decision point, so a wrong rule fails here.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import ORIGIN, system_client, token_for
from fastapi.testclient import TestClient
from sqlalchemy import event

from hub.app import Services, create_app
from hub.pipeline import TRANSACTION, Interaction, Principal

JSON = {"Content-Type": "application/fhir+json"}
URA = "http://fhir.nl/fhir/NamingSystem/ura"
BSN = "http://fhir.nl/fhir/NamingSystem/bsn"
GGC = "http://fhir.nl/otv/CodeSystem/gegevenscategorie"
RPZAC = "http://fhir.nl/otv/CodeSystem/raadplegende-zorgaanbiedercategorie"
PROVIDER_EXT = "http://fhir.nl/StructureDefinition/OTV-ProviderCategory"

# The organisations: the hospital holds the data; the others consult it.
ORGS = {
    "hospital": ("10000001", "hospital"),
    "gp": ("10000002", "gp"),
    "hap": ("10000003", "hap"),
    "pharmacy": ("10000004", "pharmacy"),
    "vvt": ("10000005", "vvt"),
    "registry": ("10000006", "consent-registry"),
    "auditor": ("10000007", "auditor"),
}

# The patient's data held by the hospital, by data category.
DATA = {
    "Observation/vital": "GGC002",
    "Observation/lab": "GGC012",
    "MedicationRequest/med": "GGC013",
    "Consent/acp": "acp",
}


def org(name: str) -> dict[str, Any]:
    ura, _ = ORGS[name]
    return {"resourceType": "Organization", "id": name, "identifier": [{"system": URA, "value": ura}], "name": name}


def patient_data() -> list[dict[str, Any]]:
    subject = {"reference": "Patient/p1"}
    return [
        {
            "resourceType": "Patient",
            "id": "p1",
            "identifier": [{"system": BSN, "value": "999911120"}],
            "name": [{"family": "Jansen"}],
        },
        {
            "resourceType": "Observation",
            "id": "vital",
            "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
            "subject": subject,
        },
        {
            "resourceType": "Observation",
            "id": "lab",
            "status": "final",
            "category": [
                {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                            "code": "laboratory",
                        }
                    ]
                }
            ],
            "code": {"coding": [{"system": "http://loinc.org", "code": "2339-0"}]},
            "subject": subject,
        },
        {
            "resourceType": "MedicationRequest",
            "id": "med",
            "status": "active",
            "intent": "order",
            "medicationCodeableConcept": {"text": "paracetamol"},
            "subject": subject,
        },
        {
            "resourceType": "Consent",
            "id": "acp",
            "status": "active",
            "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "adr"}]},
            "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
            "patient": subject,
            "policyRule": {"text": "niet reanimeren"},
        },
    ]


def privacy_consent(
    cid: str,
    decision: str,
    *,
    categories: tuple[str, ...] = (),
    consulting: tuple[str, ...] = (),
    actor: str | None = None,
    custodian: str | None = None,
    status: str = "active",
) -> dict[str, Any]:
    actors = []
    if custodian:
        actors.append(
            {
                "role": {
                    "coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "CST"}]
                },
                "reference": {"reference": f"Organization/{custodian}"},
            }
        )
    if actor:
        actors.append(
            {
                "role": {
                    "coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "IRCP"}]
                },
                "reference": {"identifier": {"system": URA, "value": ORGS[actor][0]}},
            }
        )
    provision: dict[str, Any] = {"type": decision}
    if actors:
        provision["actor"] = actors
    consent: dict[str, Any] = {
        "resourceType": "Consent",
        "id": cid,
        "status": status,
        "scope": {
            "coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]
        },
        "category": [{"coding": [{"system": GGC, "code": c}]} for c in categories]
        or [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": "Patient/p1"},
        "provision": provision,
    }
    if consulting:
        consent["extension"] = [
            {"url": PROVIDER_EXT, "valueCodeableConcept": {"coding": [{"system": RPZAC, "code": code}]}}
            for code in consulting
        ]
    return consent


# Consent states: the consents the patient has, and who then sees which data category.
ALL = frozenset(DATA.values())
STATES: dict[str, tuple[list[dict[str, Any]], dict[str, frozenset[str]]]] = {
    "none": ([], {}),
    "gp-and-hap-behandel": (
        [privacy_consent("c1", "permit", categories=("GGC002",), consulting=("RPZAC001",), custodian="hospital")],
        {"gp": ALL, "hap": ALL},  # GGC002 covers results, medication and ACP
    ),
    "pharmacies-medication": (
        [privacy_consent("c1", "permit", categories=("GGC013",), consulting=("RPZAC005",))],
        {"pharmacy": frozenset({"GGC013"})},
    ),
    "gps-all-but-results": (
        [
            privacy_consent("c1", "permit", consulting=("RPZAC001",)),
            privacy_consent("c2", "deny", categories=("GGC012",), consulting=("RPZAC001",)),
        ],
        {"gp": ALL - {"GGC012"}, "hap": ALL - {"GGC012"}},  # a low category beats all data
    ),
    "this-hap-only": (
        [
            privacy_consent("c1", "deny", consulting=("RPZAC001",)),
            privacy_consent("c2", "permit", actor="hap"),
        ],
        {"hap": ALL},  # an individual choice beats the category
    ),
    "tie-deny-wins": (
        [
            privacy_consent("c1", "permit", consulting=("RPZAC001",)),
            privacy_consent("c2", "deny", consulting=("RPZAC001",)),
        ],
        {},
    ),
    "withdrawn": (
        [privacy_consent("c1", "permit", consulting=("RPZAC001", "RPZAC005"), status="inactive")],
        {},
    ),
    "other-custodian": (
        [privacy_consent("c1", "permit", consulting=("RPZAC001",), custodian="vvt")],
        {},  # the consent is about data the VVT holds, not the hospital's
    ),
}


@pytest.fixture
def hub(services: Services) -> Services:
    """Organisations (operator), the patient's data written by the hospital."""
    local = Principal(kind="local")
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{"resource": org(n), "request": {"method": "PUT", "url": f"Organization/{n}"}} for n in ORGS],
    }
    services.pipeline.run(Interaction(TRANSACTION, body=bundle, principal=local, base_url=f"{ORIGIN}/fhir"))
    with as_org(services, "hospital") as hospital:
        for res in patient_data():
            r = hospital.put(f"/fhir/{res['resourceType']}/{res['id']}", json=res, headers=JSON)
            assert r.status_code == 201, r.text
    return services


def as_org(services: Services, name: str, scopes: str = "system/*.cruds", **token: Any) -> TestClient:
    ura, kind = ORGS[name]
    c = system_client(f"{name}-system", scopes, organisation_type=kind, ura=ura)
    headers = {"Authorization": f"Bearer {token_for(services, c, **token)}"}
    return TestClient(create_app(services=services), base_url=ORIGIN, headers=headers)


@pytest.fixture
def registry(hub: Services) -> Iterator[TestClient]:
    with as_org(hub, "registry") as c:
        yield c


def put_consents(registry: TestClient, consents: list[dict[str, Any]]) -> None:
    for c in consents:
        r = registry.put(f"/fhir/Consent/{c['id']}", json=c, headers=JSON)
        assert r.status_code in (200, 201), r.text


def ids(bundle: dict[str, Any], mode: str = "match") -> set[str]:
    return {
        f"{e['resource']['resourceType']}/{e['resource']['id']}"
        for e in bundle.get("entry", [])
        if e.get("search", {}).get("mode", "match") == mode
    }


def expected_for(state: str, who: str) -> set[str]:
    if who == "hospital":
        return set(DATA)  # the data holder always sees what it wrote
    return {ref for ref, cat in DATA.items() if cat in STATES[state][1].get(who, frozenset())}


CONSULTING = ("hospital", "gp", "hap", "pharmacy", "vvt", "auditor")


@pytest.mark.parametrize("state", sorted(STATES))
def test_permit_deny_matrix(hub: Services, registry: TestClient, state: str) -> None:
    put_consents(registry, STATES[state][0])
    for who in CONSULTING:
        expected = expected_for(state, who)
        with as_org(hub, who) as c:
            where = f"{state}/{who}"
            # read and vread: a hidden resource looks like one that does not exist
            for ref in DATA:
                r = c.get(f"/fhir/{ref}")
                assert r.status_code == (200 if ref in expected else 404), f"{where} read {ref}: {r.status_code}"
                r = c.get(f"/fhir/{ref}/_history/1")
                assert r.status_code == (200 if ref in expected else 404), f"{where} vread {ref}"
                r = c.get(f"/fhir/{ref}/_history")
                assert r.status_code == (200 if ref in expected else 404), f"{where} history {ref}"
            # the patient itself (identification) is visible to care providers and the auditor alike
            assert c.get("/fhir/Patient/p1").status_code == 200
            # searches: matches and totals count only what may be seen
            found: set[str] = set()
            for rt in ("Observation", "MedicationRequest", "Consent"):
                b = c.get(f"/fhir/{rt}", params={"patient": "p1", "_total": "accurate"}).json()
                assert b["total"] == len(ids(b)), where
                found |= ids(b)
            assert found == expected, where
            # compartment search, chain, system search with _type
            b = c.get("/fhir/Patient/p1/Observation").json()
            assert ids(b) == {x for x in expected if x.startswith("Observation/")}, where
            b = c.get("/fhir/Observation", params={"patient.identifier": f"{BSN}|999911120"}).json()
            assert ids(b) == {x for x in expected if x.startswith("Observation/")}, where
            b = c.get("/fhir/", params={"_type": "Observation,MedicationRequest", "_total": "accurate"}).json()
            assert ids(b) == {x for x in expected if x.split("/")[0] in ("Observation", "MedicationRequest")}
            assert b["total"] == len(ids(b)), where
            # _revinclude and $everything
            b = c.get(
                "/fhir/Patient",
                params={"_id": "p1", "_revinclude": ["Observation:patient", "MedicationRequest:patient"]},
            ).json()
            assert ids(b, "include") == {x for x in expected if not x.startswith("Consent/")}, where
            b = c.get("/fhir/Patient/p1/$everything").json()
            assert b["total"] == len(b["entry"]), where  # the count reveals nothing hidden
            patient_data_types = ("Observation", "MedicationRequest", "Consent")
            assert {x for x in ids(b) if x.split("/")[0] in patient_data_types} == expected, where
            # _has does not reveal hidden lab results through the patient
            b = c.get("/fhir/Patient", params={"_has:Observation:patient:code": "2339-0"}).json()
            assert ids(b) == ({"Patient/p1"} if "Observation/lab" in expected else set()), where
            # GET entries in a batch
            batch = {
                "resourceType": "Bundle",
                "type": "batch",
                "entry": [{"request": {"method": "GET", "url": ref}} for ref in DATA],
            }
            out = c.post("/fhir", json=batch, headers=JSON).json()
            statuses = [e["response"]["status"].split()[0] for e in out["entry"]]
            assert statuses == [("200" if ref in expected else "404") for ref in DATA], where


def test_withdrawal_counts_from_the_next_request(hub: Services, registry: TestClient) -> None:
    consent = privacy_consent("c1", "permit", consulting=("RPZAC001",))
    put_consents(registry, [consent])
    with as_org(hub, "gp") as gp:
        assert gp.get("/fhir/Observation/vital").status_code == 200
        put_consents(registry, [{**consent, "status": "inactive"}])
        assert gp.get("/fhir/Observation/vital").status_code == 404
        put_consents(registry, [consent])
        assert gp.get("/fhir/Observation/vital").status_code == 200
        assert registry.delete("/fhir/Consent/c1").status_code == 204
        assert gp.get("/fhir/Observation/vital").status_code == 404
        assert gp.get("/fhir/Observation", params={"_summary": "count"}).json()["total"] == 0


def test_the_patient_withdraws_through_the_pgo(hub: Services) -> None:
    consent = privacy_consent("c9", "permit", consulting=("RPZAC001",))
    app = system_client("pgo-app", "patient/*.rs patient/Consent.cu", organisation_type="pgo", ura=None)
    token = token_for(hub, app, patient_id="p1", subject="999911120")
    with (
        TestClient(create_app(services=hub), base_url=ORIGIN, headers={"Authorization": f"Bearer {token}"}) as pgo,
        as_org(hub, "gp") as gp,
    ):
        assert pgo.put("/fhir/Consent/c9", json=consent, headers=JSON).status_code == 201
        assert gp.get("/fhir/MedicationRequest/med").status_code == 200
        assert pgo.put("/fhir/Consent/c9", json={**consent, "status": "inactive"}, headers=JSON).status_code == 200
        assert gp.get("/fhir/MedicationRequest/med").status_code == 404
        # the patient always sees their own data
        assert pgo.get("/fhir/Observation/lab").status_code == 200


def test_only_the_patient_and_the_registry_write_privacy_consents(hub: Services) -> None:
    consent = privacy_consent("c1", "permit", consulting=("RPZAC001",))
    with as_org(hub, "gp") as gp:
        r = gp.put("/fhir/Consent/c1", json=consent, headers=JSON)
        assert r.status_code == 403
        assert r.json()["resourceType"] == "OperationOutcome"
        assert gp.get("/fhir/Observation/vital").status_code == 404  # nothing was written


def test_a_malformed_privacy_consent_is_refused_and_leaves_nothing(registry: TestClient) -> None:
    bad = privacy_consent("c1", "permit", consulting=("RPZAC001",))
    bad["provision"]["actor"] = [{"role": {"text": "x"}, "reference": {"reference": "Organization/unknown"}}]
    r = registry.put("/fhir/Consent/c1", json=bad, headers=JSON)
    assert r.status_code == 422
    assert "actor" in r.json()["issue"][0]["expression"][0]
    assert registry.get("/fhir/Consent/c1").status_code in (404, 410)


def referral_task(owner: str, status: str = "requested") -> dict[str, Any]:
    return {
        "resourceType": "Task",
        "id": f"task-{owner}",
        "status": status,
        "intent": "order",
        "for": {"reference": "Patient/p1"},
        "owner": {"reference": f"Organization/{owner}"},
    }


def test_implied_consent_in_a_care_process(hub: Services, registry: TestClient) -> None:
    with as_org(hub, "hospital") as hospital, as_org(hub, "vvt") as vvt:
        assert vvt.get("/fhir/Observation/vital").status_code == 404
        assert hospital.put("/fhir/Task/task-vvt", json=referral_task("vvt"), headers=JSON).status_code == 201
        assert vvt.get("/fhir/Observation/vital").status_code == 200
        b = vvt.get("/fhir/Observation", params={"patient": "p1", "_total": "accurate"}).json()
        assert b["total"] == 2
        # a category-level refusal does not stop the care process ...
        put_consents(registry, [privacy_consent("c1", "deny", consulting=("RPZAC004",))])
        assert vvt.get("/fhir/Observation/vital").status_code == 200
        # ... a refusal naming this organisation does
        put_consents(registry, [privacy_consent("c2", "deny", actor="vvt")])
        assert vvt.get("/fhir/Observation/vital").status_code == 404
        assert vvt.get("/fhir/Observation", params={"patient": "p1", "_summary": "count"}).json()["total"] == 0
        registry.delete("/fhir/Consent/c2")
        cancelled = referral_task("vvt", status="cancelled")
        assert hospital.put("/fhir/Task/task-vvt", json=cancelled, headers=JSON).status_code == 200
        assert vvt.get("/fhir/Observation/vital").status_code == 404  # a cancelled task implies nothing


def test_implied_consent_follows_the_named_organisation_and_the_carrier(hub: Services) -> None:
    """The care-process relation is kept as rows (consent/care.py): it must follow later writes of
    the Organization the Task names, deletes (also conditional ones) and ServiceRequests."""

    def vvt_sees(client: TestClient) -> tuple[int, int]:
        read = client.get("/fhir/Observation/vital").status_code
        total = client.get("/fhir/Observation", params={"patient": "p1", "_total": "accurate"}).json()["total"]
        return read, total

    home = {"resourceType": "Organization", "id": "thuiszorg", "name": "Thuiszorg West"}
    with as_org(hub, "hospital") as hospital, as_org(hub, "vvt") as vvt:
        # The Task names an Organization the hub does not hold yet: no relation.
        assert hospital.put("/fhir/Task/task-home", json={**referral_task("thuiszorg"), "id": "task-home"}).is_success
        assert vvt_sees(vvt) == (404, 0)
        # It is written later, carrying the VVT's URA: the relation holds without touching the Task.
        assert hospital.put("/fhir/Organization/thuiszorg", json=home, headers=JSON).status_code == 201
        assert vvt_sees(vvt) == (404, 0)  # no identifier yet
        with_ura = {**home, "identifier": [{"system": URA, "value": ORGS["vvt"][0]}]}
        assert hospital.put("/fhir/Organization/thuiszorg", json=with_ura, headers=JSON).status_code == 200
        assert vvt_sees(vvt) == (200, 2)
        # Its URA changes to another organisation's: the VVT loses it, the pharmacy is not given it (a pharmacy
        # is named, but hospital data needs the pharmacy's own relation: it gets one through this Task).
        moved = {**home, "identifier": [{"system": URA, "value": ORGS["pharmacy"][0]}]}
        assert hospital.put("/fhir/Organization/thuiszorg", json=moved, headers=JSON).status_code == 200
        assert vvt_sees(vvt) == (404, 0)
        with as_org(hub, "pharmacy") as pharmacy:
            assert vvt_sees(pharmacy) == (200, 2)
        assert hospital.put("/fhir/Organization/thuiszorg", json=with_ura, headers=JSON).status_code == 200
        assert vvt_sees(vvt) == (200, 2)
        # A conditional delete of the Task ends it.
        assert hospital.delete("/fhir/Task", params={"_id": "task-home"}).status_code == 204
        assert vvt_sees(vvt) == (404, 0)
        # A ServiceRequest naming the performer by identifier only; revoked, it implies nothing.
        request = {
            "resourceType": "ServiceRequest",
            "id": "verwijzing",
            "status": "active",
            "intent": "order",
            "subject": {"reference": "Patient/p1"},
            "performer": [{"identifier": {"system": URA, "value": ORGS["vvt"][0]}}],
        }
        assert hospital.put("/fhir/ServiceRequest/verwijzing", json=request, headers=JSON).status_code == 201
        assert vvt_sees(vvt) == (200, 2)
        revoked = {**request, "status": "revoked"}
        assert hospital.put("/fhir/ServiceRequest/verwijzing", json=revoked, headers=JSON).status_code == 200
        assert vvt_sees(vvt) == (404, 0)
        # Organization and Task in one transaction, the Task first in the bundle.
        bundle = {
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [
                {
                    "fullUrl": "urn:uuid:8f0e7a52-4a4c-4b7e-9f57-3c1f2b9d1a01",
                    "resource": {**referral_task("x"), "id": None, "owner": {"reference": "urn:uuid:org-new"}},
                    "request": {"method": "POST", "url": "Task"},
                },
                {
                    "fullUrl": "urn:uuid:org-new",
                    "resource": {"resourceType": "Organization", "identifier": with_ura["identifier"]},
                    "request": {"method": "POST", "url": "Organization"},
                },
            ],
        }
        del bundle["entry"][0]["resource"]["id"]  # type: ignore[index]
        r = hospital.post("/fhir", json=bundle, headers=JSON)
        assert r.status_code == 200, r.text
        assert vvt_sees(vvt) == (200, 2)


def test_break_the_glass(hub: Services) -> None:
    with as_org(hub, "hap", purpose_of_use="ETREAT") as hap:
        r = hap.get("/fhir/Observation/vital")
        assert r.status_code == 403
        assert "reason" in r.json()["issue"][0]["diagnostics"]
        r = hap.get("/fhir/Observation/vital", headers={"X-Break-Glass-Reason": "bewusteloos op de SEH"})
        assert r.status_code == 200
        b = hap.get(
            "/fhir/Observation", params={"patient": "p1"}, headers={"X-Break-Glass-Reason": "bewusteloos op de SEH"}
        ).json()
        assert ids(b) == {"Observation/vital", "Observation/lab"}
    # Flagged for review: the auditor finds the break-the-glass accesses and their reason.
    with as_org(hub, "auditor", "system/AuditEvent.rs") as auditor:
        b = auditor.get("/fhir/AuditEvent", params={"break-the-glass": "true", "_count": "100"}).json()
        events = [e["resource"] for e in b["entry"]]
        assert events and all(ORGS["hap"][0] in json.dumps(e["agent"]) for e in events)  # the HAP's accesses
        details = {d["valueString"] for e in events for x in e["entity"] for d in x.get("detail", [])}
        assert "bewusteloos op de SEH" in details
        others = auditor.get("/fhir/AuditEvent", params={"break-the-glass": "false", "_count": "100"}).json()
        assert others["entry"] and not {e["resource"]["id"] for e in others["entry"]} & {e["id"] for e in events}
    with as_org(hub, "hap") as hap:  # the reason alone, without an emergency purpose in the token: no
        r = hap.get("/fhir/Observation/vital", headers={"X-Break-Glass-Reason": "curious"})
        assert r.status_code == 404
    with as_org(hub, "auditor", purpose_of_use="ETREAT") as auditor:  # not a care provider
        r = auditor.get("/fhir/Observation/vital", headers={"X-Break-Glass-Reason": "x"})
        assert r.status_code == 404


def test_writes_to_hidden_data_look_like_404(hub: Services) -> None:
    with as_org(hub, "gp") as gp:
        r = gp.put(
            "/fhir/Observation/vital",
            json={**patient_data()[1], "status": "amended"},
            headers=JSON,
        )
        assert r.status_code == 404
        assert gp.delete("/fhir/Observation/lab").status_code == 404
        # data the GP writes itself it sees, whatever the consent
        own = {**patient_data()[1], "id": "gp-vital"}
        assert gp.put("/fhir/Observation/gp-vital", json=own, headers=JSON).status_code == 201
        assert gp.get("/fhir/Observation/gp-vital").status_code == 200
    with as_org(hub, "hospital") as hospital:
        assert hospital.get("/fhir/Observation/gp-vital").status_code == 404


def test_type_and_system_history_show_only_what_may_be_seen(hub: Services, registry: TestClient) -> None:
    with as_org(hub, "hospital") as hospital:
        assert hospital.delete("/fhir/Observation/lab").status_code == 204
    with as_org(hub, "gp") as gp:
        for path in ("/fhir/Observation/_history", "/fhir/_history"):
            b = gp.get(path).json()
            assert "total" not in b, path  # a count would reveal the hidden versions
            shown = {e["fullUrl"].split("/fhir/")[1].split("/_history")[0] for e in b.get("entry", [])}
            assert not shown & set(DATA) and "Observation/lab" not in shown, path  # not even the deletion
        put_consents(registry, [privacy_consent("c1", "permit", consulting=("RPZAC001",))])
        b = gp.get("/fhir/Observation/_history").json()
        methods = {(e["fullUrl"].split("/fhir/")[1].split("/_history")[0], e["request"]["method"]) for e in b["entry"]}
        # consented: both observations' versions, but the deletion only its holder sees
        assert methods == {("Observation/vital", "PUT"), ("Observation/lab", "PUT")}


def test_pages_hold_only_visible_matches_forward_and_back(hub: Services, registry: TestClient) -> None:
    """Searches test consent on a page's candidates first (hub/search/engine.py paged): where a
    hidden match sits among them the page must still be the next visible ones, in order, with
    cursors that neither skip nor repeat, both ways, and the same as the data holder's view
    with the hidden ones taken out."""
    ids_by_patient: dict[str, list[str]] = {"p1": [], "p2": []}
    with as_org(hub, "hospital") as hospital:
        r = hospital.put("/fhir/Patient/p2", json={"resourceType": "Patient", "id": "p2"}, headers=JSON)
        assert r.status_code == 201, r.text
        for n in range(13):  # the two patients interleave in the default (write) order
            pid = "p1" if n % 3 else "p2"
            oid = f"hr-{n:02d}"
            body = {
                "resourceType": "Observation",
                "id": oid,
                "status": "final",
                "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
                "subject": {"reference": f"Patient/{pid}"},
            }
            assert hospital.put(f"/fhir/Observation/{oid}", json=body, headers=JSON).status_code == 201
            ids_by_patient[pid].append(f"Observation/{oid}")
    put_consents(registry, [privacy_consent("c1", "permit", consulting=("RPZAC001",))])  # p1 only
    visible = ["Observation/vital", *ids_by_patient["p1"]]  # the fixture wrote `vital` first

    def walk(client: TestClient, url: str, relation: str) -> tuple[list[list[str]], str]:
        """The pages following `relation` links from `url`, and the last page's own URL."""
        pages = []
        while True:
            r = client.get(url)
            assert r.status_code == 200, r.text
            b = r.json()
            pages.append([f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in b.get("entry", [])])
            following = next((link["url"] for link in b["link"] if link["relation"] == relation), None)
            if following is None:
                return pages, url
            url = following

    search = "/fhir/Observation?code=http://loinc.org|8867-4&_count="
    with as_org(hub, "gp") as gp:
        for count in (1, 2, 3, 5):
            pages, last = walk(gp, f"{search}{count}", "next")
            assert [x for page in pages for x in page] == visible, (count, pages)
            assert all(len(page) == count for page in pages[:-1]), pages
            back, _ = walk(gp, last, "previous")
            assert back == list(reversed(pages)), (count, back)
        first = gp.get(f"{search}2&_total=accurate").json()  # page and total in one statement
        assert first["total"] == len(visible)
        assert [f"Observation/{e['resource']['id']}" for e in first["entry"]] == visible[:2]
        following = next(link["url"] for link in first["link"] if link["relation"] == "next")
        assert gp.get(following).json()["total"] == len(visible)  # a later page counts on its own


def test_included_resources_are_decided_without_a_query_each(hub: Services, registry: TestClient) -> None:
    """_revinclude: the consent decisions for a batch of included resources fetch their authors and
    their patients' rules once (consent/decision.py Lookups.prefetch), not once per resource; the
    decisions themselves are those of a single read."""
    put_consents(  # GPs see everything but lab results
        registry,
        [
            privacy_consent("c1", "permit", consulting=("RPZAC001",)),
            privacy_consent("c2", "deny", consulting=("RPZAC001",), categories=("GGC012",)),
        ],
    )
    statements: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    def revinclude(client: TestClient) -> tuple[set[str], int]:
        statements.clear()
        event.listen(hub.db.engine, "before_cursor_execute", record)
        try:
            r = client.get("/fhir/Patient?_id=p1&_revinclude=Observation:subject")
        finally:
            event.remove(hub.db.engine, "before_cursor_execute", record)
        assert r.status_code == 200, r.text
        return ids(r.json(), "include"), len(statements)

    def add_observations(names: list[str]) -> None:
        with as_org(hub, "hospital") as hospital:
            for oid in names:
                body = {
                    "resourceType": "Observation",
                    "id": oid,
                    "status": "final",
                    "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
                    "subject": {"reference": "Patient/p1"},
                }
                assert hospital.put(f"/fhir/Observation/{oid}", json=body, headers=JSON).status_code == 201

    add_observations(["few-1", "few-2"])
    with as_org(hub, "gp") as gp:
        few, few_statements = revinclude(gp)
        assert few == {"Observation/vital", "Observation/few-1", "Observation/few-2"}
        for ref in few | {"Observation/lab"}:  # as single reads decide
            assert gp.get(f"/fhir/{ref}").status_code == (200 if ref in few else 404), ref
    more = [f"more-{n}" for n in range(10)]
    add_observations(more)
    with as_org(hub, "gp") as gp:
        many, many_statements = revinclude(gp)
    assert many == few | {f"Observation/{oid}" for oid in more}
    assert many_statements == few_statements, (few_statements, many_statements)
