"""The authorisation server and token checks: discovery, keys, client_credentials with a signed
client assertion, the attacks it must refuse, and 401/403 on the FHIR API."""

from __future__ import annotations

import base64
import json
import os
import stat
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from conftest import BASE, ORIGIN, patient, system_client, token_for
from fastapi.testclient import TestClient
from joserfc import jwt
from joserfc.jwk import ECKey, OctKey, RSAKey

from hub.app import Services, create_app
from hub.auth import clients
from hub.auth.keys import SigningKeys

TOKEN_URL = f"{ORIGIN}/auth/token"
ASSERTION = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
JSON = {"Content-Type": "application/fhir+json"}


@pytest.fixture(scope="module")
def rsa_key() -> RSAKey:
    return RSAKey.generate_key(2048, parameters={"kid": "hix-1"})


@pytest.fixture(scope="module")
def ec_key() -> ECKey:
    return ECKey.generate_key("P-384", parameters={"kid": "hap-1"})


@pytest.fixture
def anon(services: Services) -> Any:
    with TestClient(create_app(services=services), base_url=ORIGIN) as c:
        yield c


def register(services: Services, name: str, key: Any, scopes: str = "system/*.rs", **kw: Any) -> None:
    with services.db.transaction(write=True) as conn:
        clients.add(
            conn,
            name=name,
            organisation_type=kw.pop("organisation_type", "hospital"),
            scopes=scopes,
            ura=kw.pop("ura", "99900001"),
            jwks={"keys": [key.as_dict(private=False)]} if key is not None else None,
            **kw,
        )


def assertion(key: Any, client_id: str, alg: str = "RS384", **overrides: Any) -> str:
    now = int(time.time())
    claims = {"iss": client_id, "sub": client_id, "aud": TOKEN_URL, "exp": now + 240, "jti": uuid.uuid4().hex}
    claims.update(overrides)
    claims = {k: v for k, v in claims.items() if v is not None}
    return jwt.encode({"alg": alg, "kid": key.kid}, claims, key, algorithms=[alg])


def ask(anon: TestClient, client_assertion: str, scope: str | None = None) -> Any:
    form = {
        "grant_type": "client_credentials",
        "client_assertion_type": ASSERTION,
        "client_assertion": client_assertion,
    }
    if scope:
        form["scope"] = scope
    return anon.post("/auth/token", data=form)


def b64(obj: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")


# -- discovery and keys ---------------------------------------------------------------------------


def test_discovery_documents_and_jwks_are_public(anon: TestClient) -> None:
    smart = anon.get("/fhir/.well-known/smart-configuration").json()
    assert smart["token_endpoint"] == TOKEN_URL
    assert "S256" in smart["code_challenge_methods_supported"]
    assert "private_key_jwt" in smart["token_endpoint_auth_methods_supported"]
    oidc = anon.get("/.well-known/openid-configuration").json()
    assert oidc["jwks_uri"] == f"{ORIGIN}/auth/jwks"
    keys = anon.get("/auth/jwks").json()["keys"]
    assert keys and all("d" not in k and "p" not in k for k in keys)
    assert anon.get("/fhir/metadata").status_code == 200


def test_keys_are_created_private_and_rotate(tmp_path: Path) -> None:
    keys = SigningKeys(tmp_path / "keys" / "signing-keys.json")
    assert stat.S_IMODE(os.stat(tmp_path / "keys").st_mode) == 0o700
    assert stat.S_IMODE(os.stat(tmp_path / "keys" / "signing-keys.json").st_mode) == 0o600
    old_kid = keys.signing.kid
    client = system_client()
    from hub.auth.tokens import TokenService

    tokens = TokenService(keys)
    old_token = tokens.issue(client, issuer=ORIGIN, audience=BASE, scope="system/*.rs").token
    new_kid = keys.rotate()
    assert keys.signing.kid == new_kid != old_kid
    fresh = TokenService(keys)  # no cache: the old token verifies with the kept key
    assert fresh.verify(old_token, BASE).client_id == client.client_id
    keys.retire(old_kid)
    with pytest.raises(Exception, match="not valid"):
        TokenService(keys).verify(old_token, BASE)


# -- client_credentials ---------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["RS384", "ES384"])
def test_client_credentials_with_a_signed_assertion(
    services: Services, anon: TestClient, rsa_key: RSAKey, ec_key: ECKey, alg: str
) -> None:
    key = rsa_key if alg == "RS384" else ec_key
    register(services, "hix", key, scopes="system/*.rs system/Task.cru")
    r = ask(anon, assertion(key, "hix", alg), scope="system/Patient.rs")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["token_type"] == "Bearer" and body["scope"] == "system/Patient.rs"
    assert 0 < body["expires_in"] <= 300
    assert r.headers["Cache-Control"] == "no-store"
    auth = {"Authorization": f"Bearer {body['access_token']}"}
    assert anon.get("/fhir/Patient", headers=auth).status_code == 200
    denied = anon.get("/fhir/Observation", headers=auth)
    assert denied.status_code == 403
    assert denied.json()["issue"][0]["code"] == "forbidden"


def test_acting_professional_travels_in_the_token(services: Services, anon: TestClient, rsa_key: RSAKey) -> None:
    register(services, "hix", rsa_key)
    pract = {
        "system": "http://fhir.nl/fhir/NamingSystem/uzi-nr-pers",
        "id": "999300001",
        "role": "01.071",
        "name": "S. de Vries",
    }
    r = ask(anon, assertion(rsa_key, "hix", practitioner=pract, purpose_of_use="TREAT"))
    assert r.status_code == 200, r.text
    principal = services.tokens.verify(r.json()["access_token"], BASE)
    assert (principal.kind, principal.practitioner_id, principal.role) == ("practitioner", "999300001", "01.071")
    assert principal.organisation_ura == "99900001" and principal.purpose_of_use == "TREAT"
    bad = ask(anon, assertion(rsa_key, "hix", practitioner={"id": "1"}))
    assert bad.status_code == 400 and bad.json()["error"] == "invalid_request"


def test_scopes_beyond_the_registration_are_refused(services: Services, anon: TestClient, rsa_key: RSAKey) -> None:
    register(services, "hix", rsa_key, scopes="system/Patient.rs")
    r = ask(anon, assertion(rsa_key, "hix"), scope="system/Patient.cruds")
    assert r.status_code == 400 and r.json()["error"] == "invalid_scope"
    r = ask(anon, assertion(rsa_key, "hix"), scope="patient/*.rs")
    assert r.status_code == 400


# -- attacks --------------------------------------------------------------------------------------


def attacks(rsa_key: RSAKey) -> dict[str, Any]:
    other = RSAKey.generate_key(2048, parameters={"kid": "hix-1"})
    now = int(time.time())
    good = assertion(rsa_key, "hix")
    header, payload, signature = good.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    return {
        "alg none": f"{b64({'alg': 'none', 'kid': 'hix-1'})}.{payload}.",
        "alg HS256 with the public key": jwt.encode({"alg": "HS256"}, claims, OctKey.import_key(b"x" * 32)),
        "wrong key": assertion(other, "hix"),
        "expired": assertion(rsa_key, "hix", exp=now - 600),
        "exp too far ahead": assertion(rsa_key, "hix", exp=now + 3600),
        "no exp": assertion(rsa_key, "hix", exp=None),
        "wrong audience": assertion(rsa_key, "hix", aud="https://elsewhere.example/token"),
        "sub differs": assertion(rsa_key, "hix", sub="hap"),
        "no jti": assertion(rsa_key, "hix", jti=None),
        "tampered payload": f"{header}.{b64({**claims, 'sub': 'hix', 'exp': now + 200, 'jti': 'x'})}.{signature}",
        "unknown client": assertion(rsa_key, "nobody", iss="nobody", sub="nobody"),
        "not a jwt": "hello",
    }


ATTACKS = [
    "alg none", "alg HS256 with the public key", "wrong key", "expired", "exp too far ahead", "no exp",
    "wrong audience", "sub differs", "no jti", "tampered payload", "unknown client", "not a jwt",
]  # fmt: skip


@pytest.mark.parametrize("name", ATTACKS)
def test_bad_assertions_are_refused(services: Services, anon: TestClient, rsa_key: RSAKey, name: str) -> None:
    register(services, "hix", rsa_key)
    r = ask(anon, attacks(rsa_key)[name])
    assert r.status_code in (400, 401), (name, r.text)
    assert r.json()["error"] in ("invalid_client", "invalid_request"), name
    assert "access_token" not in r.json()


def test_a_replayed_assertion_is_refused(services: Services, anon: TestClient, rsa_key: RSAKey) -> None:
    register(services, "hix", rsa_key)
    once = assertion(rsa_key, "hix")
    assert ask(anon, once).status_code == 200
    again = ask(anon, once)
    assert again.status_code == 401 and "used before" in again.json()["error_description"]


def test_a_revoked_client_gets_no_token(services: Services, anon: TestClient, rsa_key: RSAKey) -> None:
    register(services, "hix", rsa_key)
    with services.db.transaction(write=True) as conn:
        clients.revoke(conn, "hix")
    assert ask(anon, assertion(rsa_key, "hix")).status_code == 401


def test_development_secrets_only_in_development(services: Services, anon: TestClient) -> None:
    with services.db.transaction(write=True) as conn:
        clients.add(
            conn,
            name="dev",
            organisation_type="hap",
            ura="99900002",
            scopes="system/*.rs",
            development_secret="s3cret-enough",
        )
    form = {"grant_type": "client_credentials", "client_id": "dev", "client_secret": "s3cret-enough"}
    assert anon.post("/auth/token", data=form).status_code == 401
    dev = Services(services.settings.with_(allow_development_secrets=True), services.db)
    with TestClient(create_app(services=dev), base_url=ORIGIN) as c:
        assert c.post("/auth/token", data=form).status_code == 200
        assert c.post("/auth/token", data={**form, "client_secret": "wrong"}).status_code == 401


def test_token_endpoint_input_errors(anon: TestClient) -> None:
    assert anon.post("/auth/token", data={"grant_type": "password"}).json()["error"] == "unsupported_grant_type"
    assert anon.post("/auth/token", json={"grant_type": "client_credentials"}).status_code == 400
    assert anon.post("/auth/token", data={"grant_type": "client_credentials"}).status_code == 401


# -- bearer tokens on the FHIR API ----------------------------------------------------------------


def test_missing_and_bad_tokens_are_401_with_a_challenge(services: Services, anon: TestClient) -> None:
    r = anon.get("/fhir/Patient")
    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"].startswith("Bearer")
    assert r.json()["resourceType"] == "OperationOutcome"
    good = token_for(services)
    head, body, sig = good.split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=="))
    forged = f"{head}.{b64({**claims, 'scope': 'system/*.cruds', 'sub': 'mallory'})}.{sig}"
    other_hub = SigningKeys(Path(services.settings.data_dir) / "elsewhere.json")
    from hub.auth.tokens import TokenService

    foreign = TokenService(other_hub).issue(system_client(), issuer=ORIGIN, audience=BASE, scope="system/*.rs").token
    wrong_aud = services.tokens.issue(
        system_client(), issuer=ORIGIN, audience="https://x/fhir", scope="system/*.rs"
    ).token
    for bad in (forged, foreign, wrong_aud, "not-a-token", f"{head}.{body}."):
        resp = anon.get("/fhir/Patient", headers={"Authorization": f"Bearer {bad}"})
        assert resp.status_code == 401, bad
        assert "invalid_token" in resp.headers["WWW-Authenticate"]
    assert anon.get("/fhir/Patient", headers={"Authorization": "Basic abc"}).status_code == 401


def test_an_expired_access_token_is_refused(
    services: Services, anon: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = token_for(services)
    import hub.auth.tokens as tokens_module

    real = time.time
    monkeypatch.setattr(tokens_module.time, "time", lambda: real() + 400)
    r = anon.get("/fhir/Patient", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 401


def test_body_is_not_read_without_a_token(anon: TestClient) -> None:
    r = anon.post("/fhir/Patient", content=b"{broken", headers=JSON)
    assert r.status_code == 401  # refused before parsing anything


def test_update_that_creates_needs_create(services: Services) -> None:
    token = token_for(services, system_client(scopes="system/Patient.rus"))
    with TestClient(create_app(services=services), base_url=ORIGIN, headers={"Authorization": f"Bearer {token}"}) as c:
        r = c.put("/fhir/Patient/new", json=patient(id="new"), headers=JSON)
        assert r.status_code == 403
