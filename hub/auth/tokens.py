"""Access tokens: signed JWTs (RS256) that carry everything the pipeline needs about the caller, so
checking one costs a signature verification once and a dictionary look-up after that.

Claims: iss, aud (the FHIR base), sub (client id), iat, exp, jti, scope, `org` (type, URA, AGB of
the client's organisation), `practitioner` (the acting professional a system vouched for),
`patient` (the Patient a PGO token is bound to), `purpose_of_use`.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwt import JWTClaimsRegistry

from hub.auth.clients import Client
from hub.auth.keys import ALG, SigningKeys
from hub.formats.outcome import FhirError
from hub.pipeline import Principal

_CACHE_SIZE = 20_000
_LEEWAY = 30  # seconds of clock skew tolerated


def unauthorised(description: str, error: str = "invalid_token") -> FhirError:
    """401 with the RFC 6750 challenge."""
    challenge = f'Bearer realm="hub", error="{error}", error_description="{description}"'
    return FhirError(401, "login", description, headers={"WWW-Authenticate": challenge})


@dataclass(frozen=True)
class Issued:
    token: str
    expires_in: int
    scope: str
    jti: str = ""  # the token's id, so a revocable (patient) token can be recorded


class TokenService:
    def __init__(self, keys: SigningKeys, system_lifetime: int = 300, patient_lifetime: int = 900) -> None:
        self.keys = keys
        self.system_lifetime = system_lifetime
        self.patient_lifetime = patient_lifetime
        self._cache: OrderedDict[str, tuple[Principal, float, str, str]] = OrderedDict()
        self._lock = threading.Lock()

    def issue(
        self,
        client: Client,
        *,
        issuer: str,
        audience: str,
        scope: str,
        patient_id: str | None = None,
        subject: str | None = None,
        practitioner: dict[str, Any] | None = None,
        purpose_of_use: str | None = None,
        lifetime: int | None = None,
    ) -> Issued:
        now = int(time.time())
        default = self.patient_lifetime if patient_id else self.system_lifetime
        ttl = min(lifetime or default, default)
        claims: dict[str, Any] = {
            "iss": issuer,
            "aud": audience,
            "sub": client.client_id,
            "iat": now,
            "exp": now + ttl,
            "jti": uuid.uuid4().hex,
            "scope": scope,
            "org": {
                k: v for k, v in (("type", client.organisation_type), ("ura", client.ura), ("agb", client.agb)) if v
            },
        }
        if patient_id:
            claims["patient"] = patient_id
        if subject:
            claims["login"] = subject  # who authenticated at the identity provider (for the audit trail)
        if practitioner:
            claims["practitioner"] = practitioner
        if purpose_of_use:
            claims["purpose_of_use"] = purpose_of_use
        key = self.keys.signing
        token = jwt.encode({"alg": ALG, "kid": key.kid, "typ": "at+jwt"}, claims, key)
        return Issued(token, ttl, scope, claims["jti"])

    def verify(self, token: str, audience: str) -> Principal:
        """The caller a bearer token stands for; 401 if it is not a valid token of this hub."""
        now = time.time()
        with self._lock:
            hit = self._cache.get(token)
        if hit is not None:
            principal, exp, aud, kid = hit
            if exp + _LEEWAY < now:
                raise unauthorised("the access token has expired")
            if aud != audience:
                raise unauthorised("the access token is not for this server")
            if not self.keys.knows(kid):  # retired since it was cached (e.g. a compromised key)
                raise unauthorised("the access token's signing key has been retired")
            return principal
        try:
            decoded = jwt.decode(token, self.keys.keyset, algorithms=[ALG])
        except (JoseError, ValueError, KeyError) as exc:
            raise unauthorised(f"the access token is not valid ({type(exc).__name__})") from None
        if decoded.header.get("typ") != "at+jwt":
            raise unauthorised("this is not an access token of this hub")
        claims = decoded.claims
        if claims.get("aud") != audience:
            raise unauthorised(f"the access token is for another server ({claims.get('aud')}), not {audience}")
        try:
            JWTClaimsRegistry(
                leeway=_LEEWAY,
                exp={"essential": True},
                sub={"essential": True},
                aud={"essential": True, "value": audience},
            ).validate(claims)
        except JoseError as exc:
            raise unauthorised(f"the access token is not valid here ({exc.error})") from None
        principal = principal_from_claims(claims)
        with self._lock:
            self._cache[token] = (principal, float(claims["exp"]), audience, str(decoded.header.get("kid")))
            if len(self._cache) > _CACHE_SIZE:
                self._cache.popitem(last=False)
        return principal


def principal_from_claims(claims: dict[str, Any]) -> Principal:
    org = claims.get("org") or {}
    pract = claims.get("practitioner") or {}
    patient = claims.get("patient")
    kind = "patient" if patient else "practitioner" if pract else "system"
    return Principal(
        kind=kind,
        client_id=claims["sub"],
        organisation_ura=org.get("ura"),
        organisation_agb=org.get("agb"),
        organisation_type=org.get("type"),
        practitioner_id=pract.get("id"),
        practitioner_system=pract.get("system"),
        practitioner_name=pract.get("name"),
        role=pract.get("role"),
        patient_id=patient,
        login=claims.get("login"),
        scopes=frozenset(str(claims.get("scope", "")).split()),
        purpose_of_use=claims.get("purpose_of_use"),
        token_id=claims.get("jti"),
    )
