"""Registered clients: who may ask the hub for a token, with which keys and for which scopes."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
from dataclasses import dataclass
from typing import Any

from joserfc.jwk import KeySet
from sqlalchemy import Connection, insert, select, update

from hub.auth.scopes import ScopeError, parse_scopes
from hub.store.repository import utcnow
from hub.store.tables import auth_client

ORGANISATION_TYPES = ("hospital", "hap", "gp", "vvt", "pharmacy", "pgo", "consent-registry", "auditor")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_URA = re.compile(r"^\d{8}$")
_AGB = re.compile(r"^\d{8}$")


class ClientError(ValueError):
    pass


@dataclass(frozen=True)
class Client:
    client_id: str
    organisation_type: str
    ura: str | None
    agb: str | None
    scopes: str
    jwks: dict[str, Any] | None
    jwks_url: str | None
    secret_hash: str | None
    redirect_uris: tuple[str, ...]
    status: str

    @property
    def active(self) -> bool:
        return self.status == "active"

    def keyset(self) -> KeySet:
        if self.jwks is None:
            raise ClientError(f"client {self.client_id} has no registered public keys")
        return KeySet.import_key_set(self.jwks)  # type: ignore[arg-type]

    def check_secret(self, secret: str) -> bool:
        return self.secret_hash is not None and hmac.compare_digest(
            self.secret_hash, hash_secret(secret, self.secret_hash)
        )


def hash_secret(secret: str, stored: str | None = None) -> str:
    """scrypt with a per-client salt: `scrypt$<salt hex>$<hash hex>`."""
    salt = bytes.fromhex(stored.split("$")[1]) if stored else secrets.token_bytes(16)
    digest = hashlib.scrypt(secret.encode(), salt=salt, n=2**14, r=8, p=1)
    return f"scrypt${salt.hex()}${digest.hex()}"


def _row_to_client(row: Any) -> Client:
    return Client(
        client_id=row.client_id,
        organisation_type=row.organisation_type,
        ura=row.ura,
        agb=row.agb,
        scopes=row.scopes,
        jwks=json.loads(row.jwks) if row.jwks else None,
        jwks_url=row.jwks_url,
        secret_hash=row.secret_hash,
        redirect_uris=tuple((row.redirect_uris or "").split()),
        status=row.status,
    )


def _check_public_jwks(jwks: dict[str, Any]) -> dict[str, Any]:
    keys = jwks.get("keys")
    if not isinstance(keys, list) or not keys:
        raise ClientError("the JWKS holds no keys")
    for k in keys:
        if any(p in k for p in ("d", "p", "q", "dp", "dq", "qi")):
            raise ClientError("the JWKS holds a PRIVATE key; register only the public key")
        if k.get("kty") not in ("RSA", "EC"):
            raise ClientError(f"key type {k.get('kty')!r} is not supported (RSA for RS384, EC P-384 for ES384)")
    try:
        KeySet.import_key_set(jwks)  # type: ignore[arg-type]
    except Exception as exc:  # joserfc raises several types for malformed keys
        raise ClientError(f"the JWKS is not usable: {exc}") from None
    return {"keys": keys}


def add(
    conn: Connection,
    *,
    name: str,
    organisation_type: str,
    scopes: str,
    ura: str | None = None,
    agb: str | None = None,
    jwks: dict[str, Any] | None = None,
    jwks_url: str | None = None,
    development_secret: str | None = None,
    redirect_uris: list[str] | None = None,
) -> Client:
    if not _NAME.match(name):
        raise ClientError("the name must be 1-100 characters: letters, digits, . _ -")
    if organisation_type not in ORGANISATION_TYPES:
        raise ClientError(f"organisation type must be one of {', '.join(ORGANISATION_TYPES)}")
    if ura is not None and not _URA.match(ura):
        raise ClientError("a URA number has 8 digits")
    if agb is not None and not _AGB.match(agb):
        raise ClientError("an AGB code has 8 digits")
    if organisation_type not in ("pgo",) and not (ura or agb):
        raise ClientError("a care organisation needs its URA and/or AGB code")
    try:
        resource_scopes, _ = parse_scopes(scopes)
    except ScopeError as exc:
        raise ClientError(str(exc)) from None
    if not resource_scopes:
        raise ClientError("give at least one resource scope, e.g. system/*.rs")
    if organisation_type == "pgo" and any(s.context != "patient" for s in resource_scopes):
        raise ClientError("a PGO app may only hold patient/ scopes")
    credentials = sum(x is not None for x in (jwks, jwks_url, development_secret))
    if credentials > 1 or (credentials == 0 and organisation_type != "pgo"):
        raise ClientError("give exactly one of: a JWKS, a JWKS URL, a development secret")
    if organisation_type == "pgo" and not redirect_uris:
        raise ClientError("a PGO app needs at least one redirect URI")
    if conn.execute(select(auth_client.c.client_id).where(auth_client.c.client_id == name)).first():
        raise ClientError(f"a client named {name!r} exists already")
    conn.execute(
        insert(auth_client).values(
            client_id=name,
            organisation_type=organisation_type,
            ura=ura,
            agb=agb,
            scopes=" ".join(scopes.split()),
            jwks=json.dumps(_check_public_jwks(jwks)) if jwks is not None else None,
            jwks_url=jwks_url,
            secret_hash=hash_secret(development_secret) if development_secret else None,
            redirect_uris=" ".join(redirect_uris or []) or None,
            status="active",
            created=utcnow(),
        )
    )
    found = get(conn, name)
    assert found is not None
    return found


def get(conn: Connection, client_id: str) -> Client | None:
    row = conn.execute(select(auth_client).where(auth_client.c.client_id == client_id)).first()
    return _row_to_client(row) if row else None


def all_clients(conn: Connection) -> list[Client]:
    return [_row_to_client(r) for r in conn.execute(select(auth_client).order_by(auth_client.c.client_id))]


def revoke(conn: Connection, client_id: str) -> bool:
    res = conn.execute(update(auth_client).where(auth_client.c.client_id == client_id).values(status="revoked"))
    return bool(res.rowcount)
