"""The audit trail: the exact records a scripted scenario leaves, and tamper evidence (hub audit verify)."""

from __future__ import annotations

import base64
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import orjson
import pytest
from conftest import BASE, ORIGIN, fhir_json, patient, system_client, token_for
from fastapi.testclient import TestClient
from joserfc import jwt
from joserfc.jwk import RSAKey
from sqlalchemy import delete, select, text, update

from hub import cli
from hub.app import Services, create_app
from hub.audit.chain import AuditTrail, columns_of, link
from hub.audit.tables import audit_checkpoint, audit_record
from hub.audit.verify import verify
from hub.auth import clients
from hub.store.database import Database

UZI = "http://fhir.nl/fhir/NamingSystem/uzi-nr-pers"
PRACTITIONER = {"system": UZI, "id": "999300001", "role": "01.015", "name": "J. Jansen"}
BSN = "999911120"


def records(services: Services) -> list[dict[str, Any]]:
    """Every audit record in chain order (reads' records flushed from the journal first): its
    columns plus the AuditEvent as `event`."""
    services.audit.flush()
    with services.db.transaction() as conn:
        rows = conn.execute(select(audit_record).order_by(audit_record.c.seq)).mappings().all()
    return [{**row, "event": orjson.loads(row["content"])} for row in rows]


def query_of(event: dict[str, Any]) -> str | None:
    for e in event.get("entity", []):
        if e.get("role", {}).get("code") == "24":
            return base64.b64decode(e["query"]).decode()
    return None


def correlation(event: dict[str, Any]) -> dict[str, str]:
    return {
        e["what"]["identifier"]["type"]["text"]: e["what"]["identifier"]["value"]
        for e in event.get("entity", [])
        if e.get("type", {}).get("code") == "XrequestId"
    }


@pytest.fixture
def gp(services: Services) -> Iterator[TestClient]:
    """A GP system (URA 99900003) acting for a huisarts, purpose treatment, sending correlation ids."""
    token = token_for(
        services, system_client("his-vijverhof", ura="99900003"), practitioner=PRACTITIONER, purpose_of_use="TREAT"
    )
    headers = {"Authorization": f"Bearer {token}", "X-Correlation-ID": "corr-42", "MedMij-Request-ID": "mm-7"}
    with TestClient(create_app(services=services), base_url=ORIGIN, headers=headers) as c:
        yield c


def test_scripted_scenario_leaves_the_expected_records(services: Services, gp: TestClient) -> None:
    r = gp.post("/fhir/Patient", json=patient(), headers=fhir_json())
    assert r.status_code == 201, r.text
    pid = r.json()["id"]
    obs = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": {"reference": f"Patient/{pid}"},
    }
    oid = gp.post("/fhir/Observation", json=obs, headers=fhir_json()).json()["id"]
    assert gp.get(f"/fhir/Patient/{pid}").status_code == 200
    assert gp.get(f"/fhir/Observation?patient={pid}&code=8867-4").json()["total"] == 1
    assert gp.put(f"/fhir/Patient/{pid}", json=patient(id=pid, gender="other"), headers=fhir_json()).status_code == 200
    narrow = token_for(services, system_client("his-vijverhof", "system/Observation.rs", ura="99900003"))
    denied = gp.get(f"/fhir/Patient/{pid}", headers={"Authorization": f"Bearer {narrow}"})
    assert denied.status_code == 403
    assert gp.get(f"/fhir/Patient/{pid}", headers={"Authorization": "Bearer not-a-token"}).status_code == 401
    assert gp.delete(f"/fhir/Observation/{oid}").status_code == 204
    assert gp.delete(f"/fhir/Patient/{pid}").status_code == 204

    got = [
        (x["subtype"], x["action"], x["outcome"], x["patient_id"], x["bsn"], x["user_id"], x["organisation"])
        for x in records(services)
    ]
    user, org = PRACTITIONER["id"], "99900003"
    assert got == [
        ("create", "C", "0", pid, BSN, user, org),
        ("create", "C", "0", pid, BSN, user, org),
        ("read", "R", "0", pid, BSN, user, org),
        ("search-type", "E", "0", pid, BSN, user, org),
        ("update", "U", "0", pid, BSN, user, org),
        ("read", "R", "4", pid, BSN, "his-vijverhof", org),  # no professional in that token: the system
        ("read", "R", "4", None, None, None, None),  # no valid token: nobody known
        ("delete", "D", "0", pid, BSN, user, org),
        ("delete", "D", "0", pid, BSN, user, org),
    ]
    events = [x["event"] for x in records(services)]
    assert [e["meta"]["profile"][0].rsplit(".", 1)[1] for e in events if "meta" in e] == [
        "PatientCreate", "PatientCreate", "PatientRead", "PatientQuery", "PatientUpdate", "PatientRead",
        "Read", "PatientDelete", "PatientDelete",
    ]  # fmt: skip
    create_obs, search, refused, anonymous = events[1], events[3], events[5], events[6]
    objects = [e["what"]["reference"] for e in create_obs["entity"] if e.get("role", {}).get("code") == "4"]
    assert objects == [f"Observation/{oid}/_history/1"]
    assert query_of(search) == f"Observation?patient={pid}&code=8867-4"
    assert [e["what"]["reference"] for e in search["entity"] if e.get("role", {}).get("code") == "4"] == [
        f"Observation/{oid}/_history/1"
    ]
    user_agent = next(a for a in create_obs["agent"] if a["requestor"])
    assert user_agent["role"][0]["coding"][0]["code"] == "01.015" and user_agent["who"]["display"] == "J. Jansen"
    app = next(a for a in create_obs["agent"] if a["type"]["coding"][0]["code"] == "110150")
    assert app["who"]["identifier"]["value"] == "his-vijverhof" and app["network"]["address"]
    assert create_obs["purposeOfEvent"][0]["coding"][0]["code"] == "TREAT"
    assert correlation(create_obs) == {"X-Correlation-ID": "corr-42", "MedMij-Request-ID": "mm-7"}
    assert "403" in refused["outcomeDesc"] and "scopes" in refused["outcomeDesc"]
    assert anonymous["outcomeDesc"].startswith("401") and correlation(anonymous)["X-Correlation-ID"] == "corr-42"
    assert verify(services.db, services.keys).ok


def test_a_rolled_back_transaction_keeps_only_its_refusal(services: Services, client: TestClient) -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": patient(), "request": {"method": "POST", "url": "Patient"}},
            {"request": {"method": "DELETE", "url": "Patient/x"}},
            {"resource": {"resourceType": "AuditEvent"}, "request": {"method": "POST", "url": "AuditEvent"}},
        ],
    }
    r = client.post("/fhir", json=bundle, headers=fhir_json())
    assert r.status_code == 405, r.text
    got = [(x["subtype"], x["outcome"]) for x in records(services)]
    assert got == [("create", "4"), ("transaction", "4")]  # the AuditEvent entry, then the bundle
    ok = dict(bundle, entry=bundle["entry"][:2])
    assert client.post("/fhir", json=ok, headers=fhir_json()).status_code == 200
    done = [(x["subtype"], x["action"], x["outcome"]) for x in records(services)][2:]
    assert sorted(done) == [("create", "C", "0"), ("delete", "D", "0"), ("transaction", "E", "0")]


def test_a_batch_audits_each_entry_and_its_refusals(services: Services, client: TestClient) -> None:
    pid = client.post("/fhir/Patient", json=patient(), headers=fhir_json()).json()["id"]
    bundle = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {"request": {"method": "GET", "url": f"Patient/{pid}"}},
            {"request": {"method": "GET", "url": "Patient/nobody"}},
        ],
    }
    assert client.post("/fhir", json=bundle, headers=fhir_json()).status_code == 200
    got = [(x["subtype"], x["outcome"], x["patient_id"]) for x in records(services)][1:]
    assert got == [("read", "0", pid), ("read", "4", None), ("batch", "0", None)]


def _token_request(anon: TestClient, key: RSAKey, client_id: str) -> Any:
    now = int(time.time())
    claims = {"iss": client_id, "sub": client_id, "aud": f"{ORIGIN}/auth/token", "exp": now + 240}
    claims["jti"] = uuid.uuid4().hex
    claims["practitioner"] = PRACTITIONER
    form = {
        "grant_type": "client_credentials",
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": jwt.encode({"alg": "RS384", "kid": key.kid}, claims, key, algorithms=["RS384"]),
    }
    return anon.post("/auth/token", data=form)


def test_token_issuance_and_refusal_are_audited(services: Services) -> None:
    key = RSAKey.generate_key(2048, parameters={"kid": "k1"})
    with services.db.transaction(write=True) as conn:
        clients.add(
            conn,
            name="hix",
            organisation_type="hospital",
            scopes="system/*.rs",
            ura="99900001",
            jwks={"keys": [key.as_dict(private=False)]},
        )
    with TestClient(create_app(services=services), base_url=ORIGIN) as anon:
        issued = _token_request(anon, key, "hix")
        assert issued.status_code == 200, issued.text
        assert _token_request(anon, RSAKey.generate_key(2048, parameters={"kid": "k1"}), "hix").status_code == 401
    jti = services.tokens.verify(issued.json()["access_token"], BASE).token_id
    got = records(services)
    assert [(x["type"], x["subtype"], x["outcome"], x["client_id"]) for x in got] == [
        ("110114", "110122", "0", "hix"),
        ("110114", "110122", "4", "hix"),
    ]
    assert (got[0]["user_id"], got[0]["organisation"]) == (PRACTITIONER["id"], "99900001")
    token_entity = next(e for e in got[0]["event"]["entity"] if e.get("role", {}).get("code") == "13")
    assert token_entity["what"]["identifier"]["value"] == jti
    assert "invalid_client" in got[1]["event"]["outcomeDesc"]
    # NEN 7513: where each token request came from (the test client's address), issued or refused
    networks = [[a["network"] for a in x["event"]["agent"] if "network" in a] for x in got]
    assert networks == [[{"address": "testclient", "type": "2"}]] * 2, networks


# -- tamper evidence ------------------------------------------------------------------------------


def _fill(services: Services, n: int = 6) -> None:
    with TestClient(create_app(services=services), base_url=ORIGIN) as anon:
        for _ in range(n):
            anon.get("/fhir/Patient")  # 401s: one record each
    assert len(records(services)) == n


def _edit(db: Database, seq: int) -> None:
    with db.transaction(write=True) as conn:
        content = conn.execute(select(audit_record.c.content).where(audit_record.c.seq == seq)).scalar_one()
        forged = content.replace('"outcome":"4"', '"outcome":"0"')
        assert forged != content
        conn.execute(update(audit_record).where(audit_record.c.seq == seq).values(content=forged))


def _delete(db: Database, seq: int) -> None:
    with db.transaction(write=True) as conn:
        conn.execute(delete(audit_record).where(audit_record.c.seq == seq))


def _swap(db: Database, seq: int) -> None:
    """Swap the places of records seq and seq+1, by hand, as a forger reordering the trail would."""
    with db.transaction(write=True) as conn:
        conn.execute(update(audit_record).where(audit_record.c.seq == seq).values(seq=-1))
        conn.execute(update(audit_record).where(audit_record.c.seq == seq + 1).values(seq=seq))
        conn.execute(update(audit_record).where(audit_record.c.seq == -1).values(seq=seq + 1))


def _edit_column(db: Database, seq: int) -> None:
    with db.transaction(write=True) as conn:
        conn.execute(update(audit_record).where(audit_record.c.seq == seq).values(patient_id="someone-else"))


def _cli(services: Services, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    url = services.db.engine.url.render_as_string(hide_password=False)
    code = cli.main(["audit", "verify", "--database", url, "--data-dir", str(services.settings.data_dir)])
    return code, capsys.readouterr().out


@pytest.mark.parametrize(
    ("tamper", "seq", "words"),
    [(_edit, 3, "edited"), (_delete, 4, "missing (deleted)"), (_swap, 2, "reordered"), (_edit_column, 5, "patient_id")],
    ids=["edit", "delete", "swap", "edit-column"],
)
def test_verify_names_the_record_tampered_with(
    services: Services, capsys: pytest.CaptureFixture[str], tamper: Any, seq: int, words: str
) -> None:
    _fill(services)
    assert verify(services.db, services.keys).ok
    code, out = _cli(services, capsys)
    assert code == 0 and out.startswith("OK: 6 audit records"), out
    tamper(services.db, seq)
    report = verify(services.db, services.keys)
    assert not report.ok and report.seq == seq and words in (report.problem or ""), report
    code, out = _cli(services, capsys)
    assert code == 1 and out.startswith(f"FAILED at record {seq}:") and words in out, out


def test_a_recomputed_chain_is_caught_by_the_signed_checkpoint(services: Services) -> None:
    services.audit.checkpoint_every = 3
    _fill(services)
    with services.db.transaction() as conn:
        sealed = conn.execute(select(audit_checkpoint.c.seq)).scalars().all()
    assert sealed == [3, 6]
    # The forger edits record 2 and recomputes every hash after it (but cannot sign).
    with services.db.transaction(write=True) as conn:
        rows = conn.execute(select(audit_record).order_by(audit_record.c.seq)).mappings().all()
        prev = rows[0]["hash"]
        for row in rows[1:]:
            content = row["content"].replace('"outcome":"4"', '"outcome":"0"') if row["seq"] == 2 else row["content"]
            digest = link(prev, content)
            cols = columns_of(orjson.loads(content))
            conn.execute(
                update(audit_record)
                .where(audit_record.c.seq == row["seq"])
                .values(content=content, prev_hash=prev, hash=digest, outcome=cols["outcome"])
            )
            prev = digest
    report = verify(services.db, services.keys)
    assert not report.ok and report.seq == 1 and "checkpoint" in (report.problem or ""), report
    # Deleting the tail that a checkpoint sealed is caught too.
    _delete(services.db, 6)
    with services.db.transaction(write=True) as conn:
        conn.execute(delete(audit_checkpoint).where(audit_checkpoint.c.seq == 3))
    report = verify(services.db, services.keys)
    assert not report.ok and report.seq == 6 and "missing" in (report.problem or ""), report


def test_checkpoint_signatures_are_checked(services: Services) -> None:
    services.audit.checkpoint_every = 2
    _fill(services, 2)
    with services.db.transaction(write=True) as conn:
        conn.execute(text("UPDATE audit_checkpoint SET hash = :h"), {"h": "0" * 64})
    report = verify(services.db, services.keys)
    assert not report.ok and report.seq == 2 and "checkpoint 2" in (report.problem or ""), report


def test_concurrent_writers_keep_the_chain_linear(services: Services) -> None:
    errors: list[BaseException] = []

    def write(n: int) -> None:
        try:
            for k in range(10):
                event = {**_minimal_event(), "id": f"t{n}-{k}"}
                services.audit.write([event])
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert [x["seq"] for x in records(services)] == list(range(1, 41))
    assert verify(services.db, services.keys).ok


def _minimal_event() -> dict[str, Any]:
    return {
        "resourceType": "AuditEvent",
        "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest"},
        "action": "R",
        "recorded": "2026-11-23T12:00:00.000000Z",
        "outcome": "0",
        "agent": [{"requestor": True, "who": {"identifier": {"value": "x"}}}],
        "source": {"observer": {"display": "test"}},
    }


class StatedConsent:
    """Stands in for the consent step: states its decision in ctx.facts as the consent step does."""

    def before(self, ctx: Any) -> None:
        ctx.facts["consent"] = {
            "decision": "permit",
            "reason": "emergency",
            "rule": "break-the-glass",
            "consent": "Consent/c1",
            "break_the_glass": "unconscious at the SEH",
        }
        ctx.facts["consent-hidden"] = 2

    def after(self, ctx: Any, result: Any) -> None:
        return None

    def failed(self, ctx: Any, error: Any) -> None:
        return None


def test_the_consent_decision_and_break_the_glass_are_recorded(services: Services) -> None:
    stated = Services(services.settings, services.db, interceptors=[StatedConsent()])
    with TestClient(create_app(services=stated), base_url=ORIGIN) as c:
        c.headers["Authorization"] = f"Bearer {token_for(stated)}"
        pid = c.post("/fhir/Patient", json=patient(), headers=fhir_json()).json()["id"]
        assert c.get(f"/fhir/Patient/{pid}").status_code == 200
    event = records(services)[-1]["event"]
    consent = next(e for e in event["entity"] if e.get("role", {}).get("code") == "13")
    assert consent["what"] == {"reference": "Consent/c1"}
    assert {d["type"]: d["valueString"] for d in consent["detail"]} == {
        "decision": "permit",
        "rule": "break-the-glass",
        "reason": "emergency",
        "break-the-glass": "unconscious at the SEH",
        "hidden-resources": "2",
    }
    btg = event["purposeOfEvent"][-1]
    assert btg["coding"][0]["code"] == "BTG" and btg["text"] == "unconscious at the SEH"


def test_a_bundle_of_writes_makes_one_record_per_patient_and_kind(services: Services, client: TestClient) -> None:
    def obs(ref: str) -> dict[str, Any]:
        return {"resourceType": "Observation", "status": "final", "code": {"text": "x"}, "subject": {"reference": ref}}

    entries = [
        {"fullUrl": "urn:uuid:a", "resource": patient(), "request": {"method": "POST", "url": "Patient"}},
        {
            "fullUrl": "urn:uuid:b",
            "resource": patient(identifier=[{"system": "urn:x", "value": "1"}]),
            "request": {"method": "POST", "url": "Patient"},
        },
        *({"resource": obs("urn:uuid:a"), "request": {"method": "POST", "url": "Observation"}} for _ in range(3)),
        {"resource": obs("urn:uuid:b"), "request": {"method": "POST", "url": "Observation"}},
    ]
    r = client.post(
        "/fhir", json={"resourceType": "Bundle", "type": "transaction", "entry": entries}, headers=fhir_json()
    )
    assert r.status_code == 200, r.text
    got = records(services)
    assert [(x["subtype"], x["bsn"]) for x in got] == [("create", BSN), ("create", None), ("transaction", None)]
    objects = [
        [e["what"]["reference"].split("/")[0] for e in x["event"]["entity"] if e["role"]["code"] == "4"] for x in got
    ]
    assert objects[0] == ["Patient", "Observation", "Observation", "Observation"]
    assert objects[1] == ["Patient", "Observation"]


def test_a_refusal_inside_the_pipeline_is_recorded_once(services: Services) -> None:
    from hub.store.tables import auth_access_token

    app = system_client("pgo-app", "patient/*.rs", organisation_type="pgo", ura=None)
    token = token_for(services, app, patient_id="p1", subject=BSN)
    jti = services.tokens.verify(token, BASE).token_id
    with services.db.transaction(write=True) as conn:
        conn.execute(
            auth_access_token.insert().values(
                jti=jti, family="f", client_id="pgo-app", patient_id="p1", expires=datetime(2100, 1, 1), revoked=True
            )
        )
    with TestClient(create_app(services=services), base_url=ORIGIN) as c:
        assert c.get("/fhir/Patient/p1", headers={"Authorization": f"Bearer {token}"}).status_code == 401
    got = [(x["subtype"], x["outcome"], x["user_id"], x["client_id"]) for x in records(services)]
    assert got == [("read", "4", BSN, "pgo-app")]


def test_a_checkpoint_is_also_made_after_some_time(services: Services) -> None:
    services.audit.checkpoint_seconds = 0.0  # every append is "late"
    _fill(services, 2)
    with services.db.transaction() as conn:
        sealed = conn.execute(select(audit_checkpoint.c.seq).order_by(audit_checkpoint.c.seq)).scalars().all()
    assert sealed == [1, 2]
    assert verify(services.db, services.keys).checkpoints == 2


def test_two_processes_and_a_rollback_keep_the_chain_whole(services: Services) -> None:
    """Each process remembers the head it wrote; another process's records or a rolled-back append
    must make it read the real head instead."""
    other = AuditTrail(services.db, services.keys, services.settings.data_dir / "other-journal")  # a 2nd process
    mine = services.audit
    mine.write([_minimal_event()])
    other.write([_minimal_event()])  # mine's remembered head is now stale
    mine.write([_minimal_event(), _minimal_event()])
    with pytest.raises(RuntimeError), services.db.transaction(write=True) as conn:
        mine.append(conn, [_minimal_event()])  # remembered, then rolled back
        raise RuntimeError("the interaction failed after its audit record was appended")
    mine.write([_minimal_event()])
    other.write([_minimal_event()])
    assert [int(x["event"]["id"]) for x in records(services)] == [1, 2, 3, 4, 5, 6]
    assert verify(services.db, services.keys).ok


def test_a_corrected_bsn_is_recorded_from_then_on(services: Services, client: TestClient) -> None:
    pid = client.post("/fhir/Patient", json=patient(), headers=fhir_json()).json()["id"]
    obs = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "x"},
        "subject": {"reference": f"Patient/{pid}"},
    }
    oid = client.post("/fhir/Observation", json=obs, headers=fhir_json()).json()["id"]
    client.get(f"/fhir/Observation/{oid}")
    corrected = patient(id=pid, identifier=[{"system": "http://fhir.nl/fhir/NamingSystem/bsn", "value": "999909587"}])
    transaction = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{"resource": corrected, "request": {"method": "PUT", "url": f"Patient?_id={pid}"}}],
    }
    assert client.post("/fhir", json=transaction, headers=fhir_json()).status_code == 200
    client.get(f"/fhir/Observation/{oid}")
    got = [(x["subtype"], x["bsn"]) for x in records(services)]
    assert got == [
        ("create", BSN),
        ("create", BSN),
        ("read", BSN),
        ("update", "999909587"),
        ("transaction", None),
        ("read", "999909587"),
    ]


class Broken:
    """An interceptor with a bug: every read fails with an unexpected exception."""

    def before(self, ctx: Any) -> None:
        if ctx.interaction.kind == "read":
            raise RuntimeError("a bug")

    def after(self, ctx: Any, result: Any) -> None:
        return None

    def failed(self, ctx: Any, error: Any) -> None:
        return None


def test_an_internal_error_is_recorded_too(services: Services) -> None:
    broken = Services(services.settings, services.db, interceptors=[Broken()])
    with TestClient(create_app(services=broken), base_url=ORIGIN, raise_server_exceptions=False) as c:
        c.headers["Authorization"] = f"Bearer {token_for(broken)}"
        pid = c.post("/fhir/Patient", json=patient(), headers=fhir_json()).json()["id"]
        r = c.get(f"/fhir/Patient/{pid}")
        assert r.status_code == 500 and r.json()["resourceType"] == "OperationOutcome"
    event = records(services)[-1]["event"]
    assert event["action"] == "R" and event["outcome"] == "8"  # serious failure
    assert any(e.get("what", {}).get("reference", "").startswith(f"Patient/{pid}") for e in event["entity"])
