"""Tokens for patients' apps, and their revocation.

    POST /auth/token   grant_type=authorization_code  code + PKCE code_verifier -> a patient-bound
                       access token (claim `patient`, patient/ scopes, <= 15 min), the `patient` field,
                       and a refresh token when offline_access was granted
    POST /auth/token   grant_type=refresh_token       rotation: the old token becomes 'rotated'; a
                       rotated one presented again revokes the whole login (family)
    POST /auth/revoke  RFC 7009: a refresh token (with its whole login) or an access token (by jti)

PGO apps are public clients (they cannot keep a secret): they identify with client_id, and PKCE
binds the code to the app instance that asked for it. A code is burnt the first time it is
presented, even when the request fails; a second presentation revokes what was issued with it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from joserfc import jwt
from joserfc.errors import JoseError
from sqlalchemy import Connection
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from hub.auth import clients as client_store
from hub.auth import pages
from hub.auth import patient_sessions as sessions
from hub.auth.assertions import OAuthError
from hub.auth.clients import Client
from hub.auth.endpoints import EXTRA_ROUTES, GRANTS, NO_STORE, oauth_error, token_response
from hub.auth.keys import ALG
from hub.auth.scopes import ScopeError, narrow, patient_scopes
from hub.store.repository import utcnow

log = logging.getLogger("hub.auth")

_VERIFIER = re.compile(r"^[A-Za-z0-9._~-]{43,128}$")  # RFC 7636 4.1


def pkce_matches(verifier: str, challenge: str) -> bool:
    if not _VERIFIER.match(verifier):
        return False
    computed = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
    return hmac.compare_digest(computed, challenge)


def _public_client(conn: Connection, form: dict[str, str]) -> Client:
    if form.get("client_assertion") or form.get("client_secret"):
        raise OAuthError("invalid_client", "a PGO app is a public client: send client_id only (and PKCE)", 401)
    client_id = form.get("client_id")
    if not client_id:
        raise OAuthError("invalid_client", "client_id is required", 401)
    client = client_store.get(conn, client_id)
    if client is None or not client.active or client.organisation_type != "pgo":
        raise OAuthError("invalid_client", "unknown client, or not a patient's app", 401)
    return client


def _issue(
    services: Any,
    conn: Connection,
    client: Client,
    grant: sessions.Grant,
    scope: str,
    now: datetime,
    audience: str,
    issuer: str,
) -> tuple[Any, dict[str, Any]]:
    """A patient-bound access token (recorded, so it can be revoked) and, with offline_access in
    the grant, a new refresh token of the same family."""
    issued = services.tokens.issue(client, issuer=issuer, audience=audience, scope=scope, patient_id=grant.patient_id)
    sessions.record_access_token(conn, issued.jti, grant, now + timedelta(seconds=issued.expires_in), now)
    extra: dict[str, Any] = {"patient": grant.patient_id}
    if "offline_access" in grant.scopes.split():
        expires = now + timedelta(seconds=services.settings.refresh_token_lifetime)
        extra["refresh_token"] = sessions.new_refresh_token(conn, grant, expires, now)
    return issued, extra


def authorization_code(
    services: Any, form: dict[str, str], token_endpoint: str, fhir_base: str, issuer: str, address: str | None = None
) -> Any:
    for name in ("code", "redirect_uri", "code_verifier"):
        if not form.get(name):
            raise OAuthError("invalid_request", f"{name} is required")
    now = utcnow()
    error: OAuthError | None = None
    with services.db.transaction(write=True) as conn:
        client = _public_client(conn, form)
        status, grant = sessions.redeem_code(conn, form["code"])
        if grant is None:
            error = OAuthError("invalid_grant", "unknown authorization code")
        elif status == "reused":
            log.warning("code of %s for Patient/%s reused: login revoked", client.client_id, grant.patient_id)
            error = OAuthError("invalid_grant", "the code was used before; everything issued with it is revoked")
        elif grant.expires is None or grant.expires <= now:
            error = OAuthError("invalid_grant", "the authorization code has expired")
        elif grant.client_id != client.client_id:
            error = OAuthError("invalid_grant", "the code was issued to another client")
        elif grant.redirect_uri != form["redirect_uri"]:
            error = OAuthError("invalid_grant", "redirect_uri differs from the one in the authorisation request")
        elif not pkce_matches(form["code_verifier"], grant.code_challenge):
            error = OAuthError("invalid_grant", "the code_verifier does not match the code_challenge (PKCE)")
        else:
            try:
                scope = patient_scopes(grant.scopes, client.scopes)  # the registration may have shrunk since
            except ScopeError as exc:
                error = OAuthError("invalid_scope", str(exc))
            else:
                issued, extra = _issue(services, conn, client, grant, scope, now, fhir_base, issuer)
                subject = grant.subject  # the BSN that logged in: for the audit trail, never in the token
    # Outside the transaction: a burnt code and a revoked family stay so although the request fails.
    if error is not None:
        raise error
    services.auth_events.token_issued(
        client, issued, grant_type="authorization_code", patient_id=extra["patient"], subject=subject, address=address
    )
    return token_response(issued.token, issued.expires_in, issued.scope, **extra)


def refresh_token(
    services: Any, form: dict[str, str], token_endpoint: str, fhir_base: str, issuer: str, address: str | None = None
) -> Any:
    token = form.get("refresh_token")
    if not token:
        raise OAuthError("invalid_request", "refresh_token is required")
    now = utcnow()
    error: OAuthError | None = None
    with services.db.transaction(write=True) as conn:
        client = _public_client(conn, form)
        status, grant = sessions.refresh_grant(conn, token)
        if grant is None:
            error = OAuthError("invalid_grant", "unknown refresh token")
        elif status == "rotated":
            sessions.revoke_family(conn, grant.family)
            log.warning("refresh token of %s for Patient/%s reused: login revoked", client.client_id, grant.patient_id)
            error = OAuthError("invalid_grant", "the refresh token was used before; this login is revoked")
        elif status != "active":
            error = OAuthError("invalid_grant", "the refresh token has been revoked")
        elif grant.client_id != client.client_id:
            error = OAuthError("invalid_grant", "the refresh token was issued to another client")
        elif grant.expires is None or grant.expires <= now:
            error = OAuthError("invalid_grant", "the refresh token has expired; log in again")
        else:
            try:
                scope = patient_scopes(narrow(form.get("scope") or None, grant.scopes), client.scopes)
            except ScopeError as exc:
                error = OAuthError("invalid_scope", str(exc))
            else:
                if sessions.claim_refresh_token(conn, token):
                    issued, extra = _issue(services, conn, client, grant, scope, now, fhir_base, issuer)
                    subject = grant.subject
                else:  # another request rotated it a moment ago: one of the two is a copy
                    sessions.revoke_family(conn, grant.family)
                    error = OAuthError("invalid_grant", "the refresh token was used before; this login is revoked")
    if error is not None:
        raise error
    services.auth_events.token_issued(
        client, issued, grant_type="refresh_token", patient_id=extra["patient"], subject=subject, address=address
    )
    return token_response(issued.token, issued.expires_in, issued.scope, **extra)


# -- revocation (RFC 7009) --------------------------------------------------------------------------


async def revoke(request: Request, services: Any) -> Response:
    try:
        form = await pages.read_form(request)
    except pages.FormError as exc:
        return oauth_error(OAuthError("invalid_request", str(exc)))
    try:
        await run_in_threadpool(_revoke, services, form)
    except OAuthError as err:
        return oauth_error(err)
    return Response(status_code=200, headers=dict(NO_STORE))  # also for unknown tokens (RFC 7009 2.2)


def _revoke(services: Any, form: dict[str, str]) -> None:
    token = form.get("token")
    if not token:
        raise OAuthError("invalid_request", "token is required")
    if form.get("token_type_hint") not in (None, "", "access_token", "refresh_token"):
        raise OAuthError("unsupported_token_type", "token_type_hint is access_token or refresh_token")
    with services.db.transaction(write=True) as conn:
        client = _public_client(conn, form)
        if token.count(".") == 2:  # a JWT: one of the hub's access tokens
            claims = _access_claims(services, token)
            if claims is None or not claims.get("patient"):
                return
            if claims.get("sub") != client.client_id:
                raise OAuthError("unauthorized_client", "the token was issued to another client")
            expires = datetime.fromtimestamp(int(claims.get("exp", 0)), UTC).replace(tzinfo=None)
            sessions.revoke_access_token(conn, str(claims["jti"]), client.client_id, str(claims["patient"]), expires)
            log.info("access token %s of %s revoked by the app", claims["jti"], client.client_id)
            return
        _status, grant = sessions.refresh_grant(conn, token)
        if grant is None:
            return
        if grant.client_id != client.client_id:
            raise OAuthError("unauthorized_client", "the token was issued to another client")
        sessions.revoke_family(conn, grant.family)
        log.info("login of Patient/%s in %s revoked by the app", grant.patient_id, client.client_id)


def _access_claims(services: Any, token: str) -> dict[str, Any] | None:
    """The claims of a genuine access token of this hub (expired or not), else None."""
    try:
        decoded = jwt.decode(token, services.keys.keyset, algorithms=[ALG])
    except (JoseError, ValueError, KeyError):
        return None
    if decoded.header.get("typ") != "at+jwt" or not decoded.claims.get("jti"):
        return None
    return dict(decoded.claims)


GRANTS["authorization_code"] = authorization_code
GRANTS["refresh_token"] = refresh_token
EXTRA_ROUTES.append(("/auth/revoke", revoke, ["POST"]))
