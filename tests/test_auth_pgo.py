"""Patients' apps (PGO, MedMij style): the whole authorisation-code + PKCE flow through HTTP, as a
browser and an app would do it, and the attacks it must refuse."""

from __future__ import annotations

import base64
import hashlib
import html
import re
import secrets
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
import pytest
from conftest import ORIGIN, patient
from fastapi.testclient import TestClient
from sqlalchemy import select

from hub.app import Services, create_app
from hub.audit.tables import audit_record
from hub.auth import clients, patient_sessions
from hub.pipeline import Context, Result
from hub.store.tables import auth_code, auth_refresh

BSN = "http://fhir.nl/fhir/NamingSystem/bsn"
APP = "test-pgo"
REDIRECT = "http://127.0.0.1:8765/callback"
BSN_A, BSN_B = "999911120", "999909587"
JSON = {"Content-Type": "application/fhir+json"}


def obs(oid: str, subject: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": oid,
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": {"reference": f"Patient/{subject}"},
    }


@pytest.fixture
def dev(services: Services, client: TestClient) -> Services:
    """A development set-up with two patients (a: BSN_A, b: BSN_B), their observations, and an app."""
    services.settings = services.settings.with_(allow_development_secrets=True)
    for res in (
        patient(id="a"),
        patient(id="b", identifier=[{"system": BSN, "value": BSN_B}], name=[{"family": "Bakker"}]),
        obs("a1", "a"),
        obs("b1", "b"),
    ):
        r = client.put(f"/fhir/{res['resourceType']}/{res['id']}", json=res, headers=JSON)
        assert r.status_code in (200, 201), r.text
    with services.db.transaction(write=True) as conn:
        clients.add(
            conn,
            name=APP,
            organisation_type="pgo",
            scopes="patient/*.rs patient/Observation.c offline_access",
            redirect_uris=[REDIRECT],
        )
        clients.add(conn, name="other-pgo", organisation_type="pgo", scopes="patient/*.rs", redirect_uris=[REDIRECT])
    return services


@pytest.fixture
def browser(dev: Services) -> Iterator[TestClient]:
    with TestClient(create_app(services=dev), base_url=ORIGIN) as c:
        yield c


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
    return verifier, challenge


def auth_params(challenge: str, **over: str | None) -> dict[str, str]:
    params: dict[str, str | None] = {
        "response_type": "code",
        "client_id": APP,
        "redirect_uri": REDIRECT,
        "scope": "launch/patient patient/*.rs offline_access",
        "state": "st-123",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "aud": f"{ORIGIN}/fhir",
    }
    params.update(over)
    return {k: v for k, v in params.items() if v is not None}


def hidden(page: str, name: str) -> str:
    m = re.search(rf'name="{name}" value="([^"]*)"', page)
    assert m, page
    return html.unescape(m.group(1))


def query(location: str) -> dict[str, str]:
    parts = urlsplit(location)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == REDIRECT
    return {k: v[0] for k, v in parse_qs(parts.query).items()}


def login(browser: TestClient, challenge: str, bsn: str = BSN_A, **over: Any) -> str:
    """authorize -> development login; returns the consent page."""
    r = browser.get("/auth/authorize", params=auth_params(challenge, **over), follow_redirects=False)
    assert r.status_code == 200, r.text
    assert "DEVELOPMENT LOGIN" in r.text
    r = browser.post("/auth/login", data={"transaction": hidden(r.text, "transaction"), "bsn": bsn})
    assert r.status_code == 200, r.text
    return r.text


def approve(browser: TestClient, challenge: str, decision: str = "approve", **over: Any) -> dict[str, str]:
    page = login(browser, challenge, **over)
    r = browser.post(
        "/auth/consent", data={"consent": hidden(page, "consent"), "decision": decision}, follow_redirects=False
    )
    assert r.status_code == 303, r.text
    return query(r.headers["location"])


def exchange(browser: TestClient, code: str, verifier: str, **over: str) -> Any:
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT,
        "code_verifier": verifier,
        "client_id": APP,
        **over,
    }
    return browser.post("/auth/token", data=form)


def refresh(browser: TestClient, token: str, **over: str) -> Any:
    return browser.post(
        "/auth/token", data={"grant_type": "refresh_token", "refresh_token": token, "client_id": APP, **over}
    )


def tokens(browser: TestClient, **over: Any) -> dict[str, Any]:
    verifier, challenge = pkce()
    back = approve(browser, challenge, **over)
    r = exchange(browser, back["code"], verifier)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def fhir(browser: TestClient, path: str, token: str, **headers: str) -> Any:
    return browser.get(f"/fhir/{path}", headers={"Authorization": f"Bearer {token}", **headers})


# -- the flow ----------------------------------------------------------------------------------------


def test_whole_flow_reaches_only_the_own_patient(browser: TestClient) -> None:
    verifier, challenge = pkce()
    page = login(browser, challenge)
    assert "Jan Jansen" in page and APP in page  # who is logged in, and which app asks
    assert "Al uw gegevens inzien" in page and "Read all your data" in page
    assert "Toegang houden als u niet ingelogd bent" in page
    assert BSN_A not in page  # the BSN is not in the page (nor readable in the sealed form field)
    r = browser.post(
        "/auth/consent", data={"consent": hidden(page, "consent"), "decision": "approve"}, follow_redirects=False
    )
    assert r.status_code == 303
    back = query(r.headers["location"])
    assert back["state"] == "st-123" and back["iss"] == ORIGIN and len(back["code"]) >= 40
    with browser.app.state.services.db.transaction() as conn:  # type: ignore[attr-defined]
        stored = conn.execute(select(auth_code.c.code_hash)).scalars().all()
    assert back["code"] not in stored and patient_sessions.digest(back["code"]) in stored  # hashed

    r = exchange(browser, back["code"], verifier)
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "no-store"
    body = r.json()
    assert body["patient"] == "a" and body["token_type"] == "Bearer"
    assert body["scope"] == "launch/patient patient/*.rs offline_access"
    assert 0 < body["expires_in"] <= 900 and body["refresh_token"]
    token = body["access_token"]
    assert BSN_A not in base64.urlsafe_b64decode(token.split(".")[1] + "==").decode()  # no BSN for the app

    assert fhir(browser, "Patient/a", token).status_code == 200
    assert fhir(browser, "Patient/b", token).status_code == 404
    found = fhir(browser, "Observation", token).json()
    assert [e["resource"]["id"] for e in found["entry"]] == ["a1"] and found["total"] == 1
    assert fhir(browser, "Patient", token).json()["total"] == 1
    r = browser.post("/fhir/Observation", json=obs("x", "a"), headers={**JSON, "Authorization": f"Bearer {token}"})
    assert r.status_code == 403  # asked for read scopes only, although the app may add observations


def test_the_other_patient_gets_their_own_record(browser: TestClient) -> None:
    body = tokens(browser, bsn=BSN_B)
    assert body["patient"] == "b"
    assert fhir(browser, "Observation/b1", body["access_token"]).status_code == 200
    assert fhir(browser, "Observation/a1", body["access_token"]).status_code == 404


def test_refresh_rotates_and_a_reused_token_revokes_the_login(browser: TestClient) -> None:
    first = tokens(browser)
    r = refresh(browser, first["refresh_token"])
    assert r.status_code == 200, r.text
    second = r.json()
    assert second["patient"] == "a" and second["refresh_token"] != first["refresh_token"]
    assert fhir(browser, "Patient/a", second["access_token"]).status_code == 200
    r = refresh(browser, second["refresh_token"], scope="patient/Observation.rs offline_access")
    third = r.json()
    assert third["scope"] == "patient/Observation.rs offline_access"  # narrowed for this access token
    assert fhir(browser, "Patient/a", third["access_token"]).status_code == 403
    with browser.app.state.services.db.transaction() as conn:  # type: ignore[attr-defined]
        statuses = sorted(conn.execute(select(auth_refresh.c.status)).scalars())
    assert statuses == ["active", "rotated", "rotated"]

    # An old, rotated token comes back: somebody has a copy. The whole login is revoked.
    r = refresh(browser, first["refresh_token"])
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
    assert refresh(browser, third["refresh_token"]).json()["error"] == "invalid_grant"
    for body in (first, second, third):
        r = fhir(browser, "Patient?_count=1", body["access_token"])
        assert r.status_code == 401 and "revoked" in r.json()["issue"][0]["diagnostics"]


def test_refresh_needs_offline_access_and_the_same_client(browser: TestClient) -> None:
    online = tokens(browser, scope="patient/*.rs")
    assert "refresh_token" not in online
    body = tokens(browser)
    assert refresh(browser, body["refresh_token"], client_id="other-pgo").json()["error"] == "invalid_grant"
    assert refresh(browser, body["refresh_token"], scope="patient/*.cruds").json()["error"] == "invalid_scope"
    assert refresh(browser, body["refresh_token"]).status_code == 200  # the failed attempts did not use it up
    assert refresh(browser, "made-up").json()["error"] == "invalid_grant"


def test_expired_refresh_token(browser: TestClient, dev: Services) -> None:
    dev.settings = dev.settings.with_(refresh_token_lifetime=-1)
    body = tokens(browser)
    r = refresh(browser, body["refresh_token"])
    assert r.status_code == 400 and "expired" in r.json()["error_description"]


def test_revoking_a_refresh_token_ends_the_login(browser: TestClient) -> None:
    body = tokens(browser)
    r = browser.post("/auth/revoke", data={"token": body["refresh_token"], "client_id": APP})
    assert r.status_code == 200 and r.content == b""
    assert refresh(browser, body["refresh_token"]).json()["error"] == "invalid_grant"
    assert fhir(browser, "Patient/a", body["access_token"]).status_code == 401
    # Unknown tokens answer 200 too (RFC 7009); another app may not revoke this app's tokens.
    assert browser.post("/auth/revoke", data={"token": "nonsense", "client_id": APP}).status_code == 200
    other = tokens(browser)
    r = browser.post("/auth/revoke", data={"token": other["refresh_token"], "client_id": "other-pgo"})
    assert r.status_code == 400 and r.json()["error"] == "unauthorized_client"
    assert browser.post("/auth/revoke", data={"token": "x", "client_id": "nobody"}).status_code == 401


def test_revoking_an_access_token_by_its_id(browser: TestClient) -> None:
    body = tokens(browser)
    assert fhir(browser, "Patient/a", body["access_token"]).status_code == 200
    r = browser.post(
        "/auth/revoke", data={"token": body["access_token"], "token_type_hint": "access_token", "client_id": APP}
    )
    assert r.status_code == 200
    assert fhir(browser, "Patient/a", body["access_token"]).status_code == 401
    fresh = refresh(browser, body["refresh_token"]).json()  # the login itself goes on
    assert fhir(browser, "Patient/a", fresh["access_token"]).status_code == 200


# -- attacks -----------------------------------------------------------------------------------------


def test_code_used_twice_revokes_what_it_gave(browser: TestClient) -> None:
    verifier, challenge = pkce()
    code = approve(browser, challenge)["code"]
    first = exchange(browser, code, verifier).json()
    r = exchange(browser, code, verifier)
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
    assert fhir(browser, "Patient/a", first["access_token"]).status_code == 401
    assert refresh(browser, first["refresh_token"]).json()["error"] == "invalid_grant"


def test_pkce_verifier_mismatch_burns_the_code(browser: TestClient) -> None:
    verifier, challenge = pkce()
    code = approve(browser, challenge)["code"]
    wrong, _ = pkce()
    r = exchange(browser, code, wrong)
    assert r.status_code == 400 and "PKCE" in r.json()["error_description"]
    assert exchange(browser, code, verifier).json()["error"] == "invalid_grant"  # single use, even after failing
    assert exchange(browser, "unknown", verifier).json()["error"] == "invalid_grant"
    r = browser.post("/auth/token", data={"grant_type": "authorization_code", "code": "x", "client_id": APP})
    assert r.json()["error"] == "invalid_request"  # no verifier, no redirect_uri


@pytest.mark.parametrize("method", ["plain", None])
def test_plain_or_missing_pkce_is_refused(browser: TestClient, method: str | None) -> None:
    verifier, challenge = pkce()
    params = auth_params(challenge if method else None, code_challenge_method=method)  # type: ignore[arg-type]
    if method == "plain":
        params["code_challenge"] = verifier
    r = browser.get("/auth/authorize", params=params, follow_redirects=False)
    assert r.status_code == 302
    back = query(r.headers["location"])
    assert back["error"] == "invalid_request" and "S256" in back["error_description"] and back["state"] == "st-123"


def test_redirect_uri_mismatch(browser: TestClient) -> None:
    _, challenge = pkce()
    for uri in ("http://evil.example/callback", REDIRECT + "/x", REDIRECT + "?a=1", None):
        r = browser.get("/auth/authorize", params=auth_params(challenge, redirect_uri=uri), follow_redirects=False)
        assert r.status_code == 400 and "location" not in r.headers  # a page, never a redirect to it
        assert "redirect_uri" in r.text
    verifier, challenge = pkce()
    code = approve(browser, challenge)["code"]
    r = exchange(browser, code, verifier, redirect_uri="http://127.0.0.1:8765/other")
    assert r.json()["error"] == "invalid_grant" and "redirect_uri" in r.json()["error_description"]


def test_unknown_client_and_wrong_client(browser: TestClient) -> None:
    _, challenge = pkce()
    r = browser.get("/auth/authorize", params=auth_params(challenge, client_id="nobody"), follow_redirects=False)
    assert r.status_code == 400 and "location" not in r.headers and "nobody" in r.text
    r = browser.get("/auth/authorize", params=auth_params(challenge, client_id="<b>x</b>"), follow_redirects=False)
    assert "<b>x</b>" not in r.text and "&lt;b&gt;" in r.text  # escaped
    verifier, challenge = pkce()
    code = approve(browser, challenge)["code"]
    r = exchange(browser, code, verifier, client_id="nobody")
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"
    r = exchange(browser, code, verifier, client_id="other-pgo")
    assert r.json()["error"] == "invalid_grant"


def test_expired_code(browser: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(patient_sessions, "CODE_LIFETIME", -1)
    verifier, challenge = pkce()
    code = approve(browser, challenge)["code"]
    r = exchange(browser, code, verifier)
    assert r.status_code == 400 and "expired" in r.json()["error_description"]


def test_authorize_errors_go_back_to_the_app(browser: TestClient) -> None:
    _, challenge = pkce()
    cases: list[tuple[dict[str, str | None], str]] = [
        ({"response_type": "token"}, "unsupported_response_type"),
        ({"state": None}, "invalid_request"),
        ({"code_challenge": "short"}, "invalid_request"),
        ({"aud": "http://elsewhere.example/fhir"}, "invalid_request"),
        ({"scope": "system/*.rs"}, "invalid_scope"),
        ({"scope": "patient/*.cruds"}, "invalid_scope"),  # more than the app registered
        ({"scope": "openid fhirUser"}, "invalid_scope"),  # no resource scope left
    ]
    for over, error in cases:
        r = browser.get("/auth/authorize", params=auth_params(challenge, **over), follow_redirects=False)
        assert r.status_code == 302, (over, r.text)
        assert query(r.headers["location"])["error"] == error, over


def test_deny_and_unknown_patient(browser: TestClient) -> None:
    _, challenge = pkce()
    back = approve(browser, challenge, decision="deny")
    assert back == {"error": "access_denied", "state": "st-123", "iss": ORIGIN}
    r = browser.get("/auth/authorize", params=auth_params(challenge), follow_redirects=False)
    r = browser.post("/auth/login", data={"transaction": hidden(r.text, "transaction"), "bsn": "999951750"})
    assert r.status_code == 404 and "no record with your BSN" in r.text
    assert "error=access_denied" in r.text  # a way back to the app


def test_development_login_takes_test_bsns_only(browser: TestClient) -> None:
    _, challenge = pkce()
    r = browser.get("/auth/authorize", params=auth_params(challenge), follow_redirects=False)
    transaction = hidden(r.text, "transaction")
    for bsn, words in (("123456782", "test BSNs"), ("999911121", "11-proof"), ("abc", "11-proof")):
        r = browser.post("/auth/login", data={"transaction": transaction, "bsn": bsn})
        assert r.status_code == 400 and words in r.text and 'name="bsn"' in r.text  # the form again


def test_consent_form_is_bound_to_the_browser(browser: TestClient, dev: Services) -> None:
    _, challenge = pkce()
    page = login(browser, challenge)
    consent = hidden(page, "consent")
    with TestClient(create_app(services=dev), base_url=ORIGIN) as attacker:  # no cookie of this flow
        r = attacker.post("/auth/consent", data={"consent": consent, "decision": "approve"}, follow_redirects=False)
        assert r.status_code == 400 and "location" not in r.headers
    r = browser.post(
        "/auth/consent",
        data={"consent": consent, "decision": "approve"},
        headers={"Origin": "http://evil.example"},
        follow_redirects=False,
    )
    assert r.status_code == 403
    r = browser.post("/auth/consent", data={"consent": consent[:-4] + "AAAA", "decision": "approve"})
    assert r.status_code == 400  # tampered
    r = browser.post("/auth/login", data={"transaction": consent, "bsn": BSN_A})
    assert r.status_code == 400  # a consent token is no login transaction
    r = browser.post("/auth/consent", data={"consent": consent, "decision": "approve"}, follow_redirects=False)
    assert r.status_code == 303 and "code=" in r.headers["location"]
    r = browser.post("/auth/consent", data={"consent": consent, "decision": "approve"}, follow_redirects=False)
    assert r.status_code == 400  # the flow's cookie is gone: one code per login


def test_pages_cannot_be_framed(browser: TestClient) -> None:
    _, challenge = pkce()
    r = browser.get("/auth/authorize", params=auth_params(challenge), follow_redirects=False)
    assert r.headers["x-frame-options"] == "DENY" and "frame-ancestors 'none'" in r.headers["content-security-policy"]
    assert r.headers["cache-control"] == "no-store"
    cookie = r.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie and "path=/auth" in cookie


def test_no_login_without_an_identity_provider(browser: TestClient, dev: Services) -> None:
    _, challenge = pkce()
    for settings in (
        dev.settings.with_(allow_development_secrets=False),
        dev.settings.with_(allow_development_secrets=False, identity_provider="development"),
        dev.settings.with_(identity_provider="digid"),  # not built: no such provider registered
    ):
        dev.settings = settings
        r = browser.get("/auth/authorize", params=auth_params(challenge), follow_redirects=False)
        assert r.status_code == 503 and "identity provider" in r.text and "DEVELOPMENT LOGIN" not in r.text
        assert browser.post("/auth/login", data={"transaction": "x", "bsn": BSN_A}).status_code == 503


# -- MedMij headers ---------------------------------------------------------------------------------


class Recorder:
    def __init__(self) -> None:
        self.headers: list[dict[str, str]] = []

    def before(self, ctx: Context) -> None:
        self.headers.append(ctx.interaction.request_headers)

    def after(self, ctx: Context, result: Result) -> None:
        return None

    def failed(self, ctx: Context, error: Any) -> None:
        return None


def test_medmij_headers_are_echoed_and_kept(browser: TestClient, dev: Services) -> None:
    recorder = Recorder()
    dev.pipeline.interceptors.append(recorder)
    token = tokens(browser)["access_token"]
    ids = {"MedMij-Request-ID": "6c3b9a1e-2f7d-4c1a-9e3b-0d5f8a7c6b21", "X-Correlation-ID": "corr-42"}
    r = fhir(browser, "Patient/a", token, **ids)
    assert r.status_code == 200
    assert r.headers["medmij-request-id"] == ids["MedMij-Request-ID"] and r.headers["x-correlation-id"] == "corr-42"
    kept = recorder.headers[-1]
    assert kept["medmij-request-id"] == ids["MedMij-Request-ID"] and kept["x-correlation-id"] == "corr-42"
    r = fhir(browser, "Patient/b", "not-a-token", **ids)
    assert r.status_code == 401 and r.headers["x-correlation-id"] == "corr-42"  # errors too
    r = fhir(browser, "Patient/a", token)
    assert "x-correlation-id" not in r.headers and "medmij-request-id" not in r.headers  # none invented
    r = fhir(browser, "Patient/a", token, **{"X-Correlation-ID": "x" * 200})
    assert "x-correlation-id" not in r.headers  # oversized: not echoed


def test_code_presented_twice_at_once_gives_nothing_usable(browser: TestClient, dev: Services) -> None:
    verifier, challenge = pkce()
    code = approve(browser, challenge)["code"]
    apps = [TestClient(create_app(services=dev), base_url=ORIGIN) for _ in range(2)]
    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(lambda app: exchange(app, code, verifier), apps))
    assert sorted(r.status_code for r in answers) == [200, 400]
    issued = next(r.json() for r in answers if r.status_code == 200)
    assert fhir(browser, "Patient/a", issued["access_token"]).status_code == 401  # the loser revoked it
    assert refresh(browser, issued["refresh_token"]).json()["error"] == "invalid_grant"


def test_discovery_names_the_patient_endpoints(browser: TestClient) -> None:
    smart = browser.get("/fhir/.well-known/smart-configuration").json()
    assert "none" in smart["token_endpoint_auth_methods_supported"] and smart["code_challenge_methods_supported"] == [
        "S256"
    ]
    for key in ("authorization_endpoint", "revocation_endpoint"):
        path = urlsplit(smart[key]).path
        r = browser.request("GET" if key == "authorization_endpoint" else "POST", path, follow_redirects=False)
        assert r.status_code not in (404, 405), key


def test_patient_token_issuance_is_audited_with_patient_and_address(browser: TestClient, dev: Services) -> None:
    """NEN 7513 for a PGO login: each issued token (code exchange and refresh) is a record naming
    the patient, the app, the grant and where the request came from."""
    first = tokens(browser)
    assert refresh(browser, first["refresh_token"]).status_code == 200
    dev.audit.flush()
    with dev.db.transaction() as conn:
        rows = conn.execute(
            select(audit_record.c.content).where(audit_record.c.subtype == "110122").order_by(audit_record.c.seq)
        ).all()
    issued = [e for e in (orjson.loads(r[0]) for r in rows) if e["outcome"] == "0"]
    assert len(issued) == 2, issued
    for event, grant in zip(issued, ("authorization_code", "refresh_token"), strict=True):
        details = {d["type"]: d.get("valueString") for e in event["entity"] for d in e.get("detail", [])}
        assert details.get("grant-type") == grant, details
        assert any(e.get("what", {}).get("reference") == "Patient/a" for e in event["entity"]), event["entity"]
        assert [a["network"] for a in event["agent"] if "network" in a] == [{"address": "testclient", "type": "2"}]
