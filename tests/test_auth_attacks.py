"""Attacks on the hub's tokens that tests/test_auth.py does not already try: algorithm confusion
with a real public key (the hub's own and a client's), alg none on an access token, a token signed
by a retired key (also after it was cached), an expiry reached while cached, and a client
assertion whose audience list leaves out the token endpoint."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import BASE, ORIGIN, token_for
from fastapi.testclient import TestClient
from joserfc import jwt
from joserfc.jwk import RSAKey

from hub.app import Services, create_app
from hub.auth import clients
from hub.store.database import Database

TOKEN_URL = f"{ORIGIN}/auth/token"
ASSERTION = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def hand_made(header: dict[str, Any], claims: dict[str, Any], secret: bytes | None) -> str:
    """A JWT built by hand, the way an attacker would: HS256 with `secret`, or unsigned."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    if secret is None:
        return f"{signing_input}."
    return f"{signing_input}.{b64(hmac.new(secret, signing_input.encode(), hashlib.sha256).digest())}"


def access_claims(**extra: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {"iss": ORIGIN, "aud": BASE, "sub": "mallory", "iat": now, "exp": now + 200, "jti": uuid.uuid4().hex}
    claims.update(scope="system/*.cruds", org={"type": "hospital", "ura": "99900001"}, **extra)
    return claims


def public_forms(jwk: dict[str, Any]) -> list[bytes]:
    """The ways a confused verifier might turn a published RSA key into an HMAC secret."""
    key = RSAKey.import_key(jwk)
    return [key.as_pem(private=False), json.dumps(jwk).encode(), key.as_der(private=False)]


@pytest.fixture
def anon(services: Services) -> Iterator[TestClient]:
    with TestClient(create_app(services=services), base_url=ORIGIN) as c:
        yield c


def get(c: TestClient, token: str) -> Any:
    return c.get("/fhir/Patient", headers={"Authorization": f"Bearer {token}"})


def assert_refused(r: Any) -> None:
    assert r.status_code == 401, r.text
    assert r.headers["WWW-Authenticate"].startswith('Bearer realm="hub", error="invalid_token"')
    assert r.json()["issue"][0]["code"] == "login"


# -- access tokens --------------------------------------------------------------------------------


def test_access_token_alg_none_is_refused(services: Services, anon: TestClient) -> None:
    kid = services.keys.signing.kid
    for header in ({"alg": "none", "typ": "at+jwt", "kid": kid}, {"alg": "None", "typ": "at+jwt"}):
        assert_refused(get(anon, hand_made(header, access_claims(), None)))
        assert_refused(get(anon, hand_made(header, access_claims(), None) + "AAAA"))


def test_access_token_hs256_with_the_hubs_public_key_is_refused(services: Services, anon: TestClient) -> None:
    """Algorithm confusion: the hub's public key is published at /auth/jwks; a verifier that took
    the token's alg at its word would accept an HMAC made with it."""
    published = anon.get("/auth/jwks").json()["keys"][0]
    for secret in public_forms(published):
        token = hand_made({"alg": "HS256", "typ": "at+jwt", "kid": published["kid"]}, access_claims(), secret)
        assert_refused(get(anon, token))
    assert get(anon, token_for(services)).status_code == 200  # the real thing still works


@pytest.fixture
def own_keys(signing_keys: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private copy of the session's key file, so rotating and retiring touch no other test."""
    path = tmp_path / "own-keys.json"
    shutil.copy(signing_keys, path)
    monkeypatch.setenv("HUB_SIGNING_KEYS_FILE", str(path))
    return path


def test_a_token_signed_by_a_retired_key_is_refused_even_once_cached(
    database: Database, services: Services, own_keys: Path
) -> None:
    hub = Services(services.settings, database)
    old_kid = str(hub.keys.signing.kid)
    used = token_for(hub)  # verified (and cached) before the key is retired
    unused = token_for(hub)
    with TestClient(create_app(services=hub), base_url=ORIGIN) as c:
        assert get(c, used).status_code == 200
        hub.keys.rotate()
        assert get(c, used).status_code == 200  # rotation alone keeps old tokens working
        hub.keys.retire(old_kid)
        assert_refused(get(c, unused))
        assert_refused(get(c, used))
        assert get(c, token_for(hub)).status_code == 200  # tokens of the new key work


def test_expiry_is_checked_on_cached_tokens(services: Services, anon: TestClient, monkeypatch: Any) -> None:
    token = token_for(services)
    assert get(anon, token).status_code == 200  # now cached
    import hub.auth.tokens as tokens_module

    real = time.time
    monkeypatch.setattr(tokens_module.time, "time", lambda: real() + services.tokens.system_lifetime + 31)
    assert_refused(get(anon, token))


def test_a_cached_token_is_not_accepted_for_another_audience(services: Services) -> None:
    token = token_for(services)
    assert services.tokens.verify(token, BASE).client_id == "test-hix"  # cached for BASE
    with pytest.raises(Exception, match="not for this server"):
        services.tokens.verify(token, "https://other-hub.example/fhir")


# -- client assertions ----------------------------------------------------------------------------


@pytest.fixture
def hix_key(services: Services) -> RSAKey:
    key = RSAKey.generate_key(2048, parameters={"kid": "hix-1"})
    with services.db.transaction(write=True) as conn:
        clients.add(
            conn,
            name="hix",
            organisation_type="hospital",
            scopes="system/*.rs",
            ura="99900001",
            jwks={"keys": [key.as_dict(private=False)]},
        )
    return key


def ask(anon: TestClient, client_assertion: str) -> Any:
    form = {
        "grant_type": "client_credentials",
        "client_assertion_type": ASSERTION,
        "client_assertion": client_assertion,
    }
    return anon.post("/auth/token", data=form)


def assertion_claims(**overrides: Any) -> dict[str, Any]:
    claims = {"iss": "hix", "sub": "hix", "aud": TOKEN_URL, "exp": int(time.time()) + 240, "jti": uuid.uuid4().hex}
    claims.update(overrides)
    return claims


def test_assertion_hs256_with_the_clients_public_key_is_refused(
    services: Services, anon: TestClient, hix_key: RSAKey
) -> None:
    """The client's public key is no secret (it may sit at a public jwks_url)."""
    for secret in public_forms(hix_key.as_dict(private=False)):
        r = ask(anon, hand_made({"alg": "HS256", "kid": "hix-1"}, assertion_claims(), secret))
        assert r.status_code == 401 and r.json()["error"] == "invalid_client", r.text
        assert "access_token" not in r.json()
    good = jwt.encode({"alg": "RS384", "kid": "hix-1"}, assertion_claims(), hix_key, algorithms=["RS384"])
    assert ask(anon, good).status_code == 200


def test_assertion_signed_with_an_allowed_alg_outside_the_list_is_refused(
    services: Services, anon: TestClient, hix_key: RSAKey
) -> None:
    """RS256 is a fine algorithm, but the hub advertises RS384/ES384 only for assertions."""
    token = jwt.encode({"alg": "RS256", "kid": "hix-1"}, assertion_claims(), hix_key, algorithms=["RS256"])
    r = ask(anon, token)
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"


def test_assertion_audience_list_without_the_token_endpoint_is_refused(
    services: Services, anon: TestClient, hix_key: RSAKey
) -> None:
    def signed(aud: Any) -> str:
        return jwt.encode({"alg": "RS384", "kid": "hix-1"}, assertion_claims(aud=aud), hix_key, algorithms=["RS384"])

    r = ask(anon, signed([f"{ORIGIN}/fhir", "https://elsewhere.example/token"]))
    assert r.status_code == 401 and "aud" in r.json()["error_description"]
    assert ask(anon, signed(["https://elsewhere.example/token", TOKEN_URL])).status_code == 200
