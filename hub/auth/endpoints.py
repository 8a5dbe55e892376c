"""The authorisation server's HTTP endpoints: token, JWKS and the discovery documents.

POST /auth/token                              client_credentials (+ authorization_code, refresh_token)
GET  /auth/jwks                               the hub's public signing keys
GET  /.well-known/openid-configuration
GET  /fhir/.well-known/smart-configuration
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from hub.auth import assertions
from hub.auth.assertions import OAuthError
from hub.auth.clients import Client
from hub.auth.scopes import ScopeError, narrow

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
MAX_FORM = 64 * 1024


def origin(request: Request, configured_base: str | None) -> str:
    """The public origin of the hub: HUB_BASE_URL without /fhir, or what the request came in on."""
    if configured_base:
        base = configured_base.rstrip("/")
        return base[: -len("/fhir")] if base.endswith("/fhir") else base
    return str(request.base_url).rstrip("/")


def oauth_error(err: OAuthError) -> JSONResponse:
    headers = dict(NO_STORE)
    if err.status == 401:
        headers["WWW-Authenticate"] = 'Basic realm="hub"' if err.error == "invalid_client" else "Bearer"
    return JSONResponse({"error": err.error, "error_description": err.description}, err.status, headers)


def token_response(token: str, expires_in: int, scope: str, **extra: Any) -> JSONResponse:
    body = {"access_token": token, "token_type": "Bearer", "expires_in": expires_in, "scope": scope, **extra}
    return JSONResponse(body, 200, NO_STORE)


def client_credentials(
    services: Any, form: dict[str, str], token_endpoint: str, fhir_base: str, issuer: str, address: str | None = None
) -> Any:
    """SMART Backend Services: a signed client assertion, or a secret in development set-ups."""
    with services.db.transaction(write=True) as conn:
        practitioner = purpose = None
        if form.get("client_assertion_type") == assertions.ASSERTION_TYPE and form.get("client_assertion"):
            client, claims = assertions.verify_assertion(conn, form["client_assertion"], token_endpoint)
            practitioner = assertions.acting_practitioner(claims)
            purpose = claims.get("purpose_of_use") if isinstance(claims.get("purpose_of_use"), str) else None
        elif form.get("client_secret"):
            client = _secret_client(services, conn, form)
        else:
            raise OAuthError("invalid_client", "authenticate with a private_key_jwt client_assertion", 401)
    if client.organisation_type == "pgo":
        raise OAuthError("unauthorized_client", "a PGO app obtains tokens through the patient's login", 400)
    try:
        scope = narrow(form.get("scope"), client.scopes)
    except ScopeError as exc:
        raise OAuthError("invalid_scope", str(exc)) from None
    if any(s.startswith("patient/") for s in scope.split()):
        raise OAuthError("invalid_scope", "patient/ scopes need a patient's login (authorization_code)")
    issued = services.tokens.issue(
        client, issuer=issuer, audience=fhir_base, scope=scope, practitioner=practitioner, purpose_of_use=purpose
    )
    services.auth_events.token_issued(client, issued, practitioner=practitioner, address=address)
    return issued


def _secret_client(services: Any, conn: Any, form: dict[str, str]) -> Client:
    from hub.auth import clients as client_store

    if not services.settings.allow_development_secrets:
        raise OAuthError("invalid_client", "client secrets are accepted only in development set-ups", 401)
    client = client_store.get(conn, form.get("client_id", ""))
    if client is None or not client.active or not client.check_secret(form["client_secret"]):
        raise OAuthError("invalid_client", "unknown client or wrong secret", 401)
    return client


def auth_routes(services: Any) -> list[Route]:
    settings = services.settings

    async def token(request: Request) -> Response:
        raw = await request.body()
        if len(raw) > MAX_FORM:
            return oauth_error(OAuthError("invalid_request", "the request is too large"))
        if not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
            return oauth_error(
                OAuthError("invalid_request", "send the token request as a form (x-www-form-urlencoded)")
            )
        form = dict(parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True))
        address = request.client.host if request.client else None  # NEN 7513: where the request came from
        here = origin(request, settings.base_url)
        grant = form.get("grant_type")
        try:
            handler: Callable[..., Any] | None = GRANTS.get(grant or "")
            if handler is None:
                raise OAuthError("unsupported_grant_type", f"grant_type {grant!r} is not supported")
            issued = await run_in_threadpool(
                handler, services, form, f"{here}/auth/token", f"{here}/fhir", here, address
            )
        except OAuthError as err:
            services.auth_events.token_refused(form, err, address)
            return oauth_error(err)
        if isinstance(issued, Response):
            return issued
        return token_response(issued.token, issued.expires_in, issued.scope)

    async def jwks(request: Request) -> Response:
        return JSONResponse(services.keys.public_jwks(), headers={"Cache-Control": "max-age=300"})

    async def smart_configuration(request: Request) -> Response:
        here = origin(request, settings.base_url)
        return JSONResponse(smart_config(here))

    async def openid_configuration(request: Request) -> Response:
        here = origin(request, settings.base_url)
        config = smart_config(here)
        return JSONResponse(
            {
                "issuer": here,
                "jwks_uri": config["jwks_uri"],
                "token_endpoint": config["token_endpoint"],
                "authorization_endpoint": config["authorization_endpoint"],
                "revocation_endpoint": config["revocation_endpoint"],
                "response_types_supported": ["code"],
                "grant_types_supported": config["grant_types_supported"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "token_endpoint_auth_methods_supported": config["token_endpoint_auth_methods_supported"],
                "token_endpoint_auth_signing_alg_values_supported": assertions.ALGORITHMS,
                "code_challenge_methods_supported": ["S256"],
                "scopes_supported": config["scopes_supported"],
            }
        )

    routes = [
        Route("/auth/token", token, methods=["POST"]),
        Route("/auth/jwks", jwks, methods=["GET"]),
        Route("/.well-known/openid-configuration", openid_configuration, methods=["GET"]),
        Route("/fhir/.well-known/smart-configuration", smart_configuration, methods=["GET"]),
    ]
    for path, endpoint, methods in EXTRA_ROUTES:
        routes.append(Route(path, _bind(endpoint, services), methods=methods))
    return routes


def _bind(endpoint: Callable[..., Awaitable[Response]], services: Any) -> Callable[[Request], Awaitable[Response]]:
    async def bound(request: Request) -> Response:
        return await endpoint(request, services)

    return bound


def smart_config(here: str) -> dict[str, Any]:
    return {
        "issuer": here,
        "jwks_uri": f"{here}/auth/jwks",
        "authorization_endpoint": f"{here}/auth/authorize",
        "token_endpoint": f"{here}/auth/token",
        "revocation_endpoint": f"{here}/auth/revoke",
        "grant_types_supported": ["client_credentials", "authorization_code", "refresh_token"],
        "token_endpoint_auth_methods_supported": ["private_key_jwt", "none"],  # none: PGO apps (public, PKCE)
        "token_endpoint_auth_signing_alg_values_supported": assertions.ALGORITHMS,
        "code_challenge_methods_supported": ["S256"],
        "scopes_supported": [
            "system/*.rs",
            "system/*.cruds",
            "user/*.rs",
            "patient/*.rs",
            "patient/*.read",
            "patient/Observation.c",
            "offline_access",
            "openid",
            "fhirUser",
            "launch/patient",
        ],
        "response_types_supported": ["code"],
        "capabilities": [
            "client-confidential-asymmetric",
            "client-public",
            "launch-standalone",
            "context-standalone-patient",
            "permission-offline",
            "permission-patient",
            "permission-v1",
            "permission-v2",
            "permission-user",
        ],
    }


# Grant handlers (grant_type -> function(services, form, token_endpoint, fhir_base, issuer)) and extra
# routes (path, endpoint(request, services), methods); the PGO login flow registers its own.
GRANTS: dict[str, Callable[..., Any]] = {"client_credentials": client_credentials}
EXTRA_ROUTES: list[tuple[str, Callable[..., Awaitable[Response]], list[str]]] = []

from hub.auth import pgo, pgo_grants  # noqa: E402, F401  (register the PGO apps' login, grants and routes)
