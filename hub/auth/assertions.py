"""SMART Backend Services client authentication: a `private_key_jwt` client assertion.

Checked (RFC 7523, SMART backend services): signed with RS384 or ES384 by a key the client
registered; iss == sub == the client id; aud == the token endpoint; exp present and at most five
minutes ahead; jti present and never seen before for that client (replays are refused).

The assertion may name the acting professional, so the audit trail records the real user:

    "practitioner": {"system": "http://fhir.nl/fhir/NamingSystem/uzi-nr-pers", "id": "999300001",
                     "role": "01.015", "name": "P.W. Jansen"}

and a `purpose_of_use` (e.g. TREAT; ETREAT for break-the-glass).
"""

from __future__ import annotations

import base64
import json
import time
from datetime import UTC, datetime
from typing import Any

import httpx
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from sqlalchemy import Connection, delete, insert
from sqlalchemy.exc import IntegrityError

from hub.auth import clients as client_store
from hub.auth.clients import Client
from hub.store.tables import auth_jti

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ALGORITHMS = ["RS384", "ES384"]
MAX_AHEAD = 300  # seconds: an assertion may not be valid for longer than five minutes
_LEEWAY = 30
PRACTITIONER_SYSTEMS = {
    "http://fhir.nl/fhir/NamingSystem/uzi-nr-pers",
    "http://fhir.nl/fhir/NamingSystem/agb-z",
}


class OAuthError(Exception):
    """An RFC 6749 error response."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status


_JWKS_CACHE: dict[str, tuple[float, dict[str, Any]]] = {}


def _client_keys(client: Client) -> KeySet:
    if client.jwks is not None:
        return client.keyset()
    if client.jwks_url:
        cached = _JWKS_CACHE.get(client.jwks_url)
        if cached is None or cached[0] < time.time():
            try:
                resp = httpx.get(client.jwks_url, timeout=5.0)
                resp.raise_for_status()
                jwks = resp.json()
            except (httpx.HTTPError, ValueError) as exc:
                raise OAuthError("invalid_client", f"cannot fetch the client's JWKS: {exc}", 401) from None
            cached = (time.time() + 300, jwks)
            _JWKS_CACHE[client.jwks_url] = cached
        return KeySet.import_key_set(cached[1])  # type: ignore[arg-type]
    raise OAuthError("invalid_client", "the client has no registered keys; it cannot use private_key_jwt", 401)


def _unverified_issuer(assertion: str) -> str:
    """The claimed client id, read before verification only to know whose keys to verify with."""
    try:
        payload = assertion.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        raise OAuthError("invalid_client", "client_assertion is not a JWT", 401) from None
    iss = claims.get("iss") if isinstance(claims, dict) else None
    if not isinstance(iss, str):
        raise OAuthError("invalid_client", "client_assertion has no iss", 401)
    return iss


def verify_assertion(conn: Connection, assertion: str, token_endpoint: str) -> tuple[Client, dict[str, Any]]:
    """The client a valid assertion authenticates, and the assertion's claims."""
    client_id = _unverified_issuer(assertion)
    client = client_store.get(conn, client_id)
    if client is None or not client.active:
        raise OAuthError("invalid_client", "unknown or revoked client", 401)
    try:
        token = jwt.decode(assertion, _client_keys(client), algorithms=ALGORITHMS)
    except (JoseError, ValueError) as exc:
        raise OAuthError(
            "invalid_client", f"the client assertion's signature is not valid ({type(exc).__name__})", 401
        ) from None
    claims = token.claims
    now = time.time()
    if claims.get("iss") != client.client_id or claims.get("sub") != client.client_id:
        raise OAuthError("invalid_client", "iss and sub of the client assertion must both be the client id", 401)
    aud = claims.get("aud")
    if aud != token_endpoint and not (isinstance(aud, list) and token_endpoint in aud):
        raise OAuthError("invalid_client", f"the client assertion's aud must be {token_endpoint}", 401)
    exp = claims.get("exp")
    if not isinstance(exp, (int, float)):
        raise OAuthError("invalid_client", "the client assertion has no exp", 401)
    if exp < now - _LEEWAY:
        raise OAuthError("invalid_client", "the client assertion has expired", 401)
    if exp > now + MAX_AHEAD + _LEEWAY:
        raise OAuthError("invalid_client", "the client assertion's exp is more than five minutes ahead", 401)
    nbf = claims.get("nbf")
    if isinstance(nbf, (int, float)) and nbf > now + _LEEWAY:
        raise OAuthError("invalid_client", "the client assertion is not valid yet", 401)
    jti = claims.get("jti")
    if not isinstance(jti, str) or not jti or len(jti) > 255:
        raise OAuthError("invalid_client", "the client assertion needs a jti", 401)
    _remember_jti(conn, client.client_id, jti, float(exp))
    return client, claims


def _remember_jti(conn: Connection, client_id: str, jti: str, exp: float) -> None:
    now = datetime.now(UTC).replace(tzinfo=None)
    conn.execute(delete(auth_jti).where(auth_jti.c.expires < now))
    expires = datetime.fromtimestamp(exp + _LEEWAY, UTC).replace(tzinfo=None)
    try:
        with conn.begin_nested():
            conn.execute(insert(auth_jti).values(client_id=client_id, jti=jti, expires=expires))
    except IntegrityError:
        raise OAuthError("invalid_client", "this client assertion (jti) was used before", 401) from None


def acting_practitioner(claims: dict[str, Any]) -> dict[str, Any] | None:
    """The professional the system vouches for, checked for shape."""
    pract = claims.get("practitioner")
    if pract is None:
        return None
    if not isinstance(pract, dict) or pract.get("system") not in PRACTITIONER_SYSTEMS or not pract.get("id"):
        raise OAuthError(
            "invalid_request",
            "practitioner must be {system: UZI or AGB naming system, id, role?, name?}",
        )
    return {k: str(pract[k]) for k in ("system", "id", "role", "name") if pract.get(k)}
