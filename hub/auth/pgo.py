"""The patient's side of the authorisation server (PGO apps, MedMij style): authorisation code + PKCE.

    GET       /auth/authorize   check the app's request, start the login at the identity provider
    GET|POST  /auth/login       the identity provider hands back who logged in; BSN -> Patient; consent page
    POST      /auth/consent     approve: a code (60 s, single use, stored hashed) to the redirect URI;
                                deny: error=access_denied

Errors found before the redirect URI is known to be registered are shown as a page (never sent to
an unchecked address); later ones go back to the app as `error=`. The state between the steps
travels in the browser as sealed transaction tokens (AES-GCM with a key derived from the hub's
signing key: the page holds no readable BSN, and a PGO may not process BSNs), valid for 10 minutes
and bound to a random cookie of the browser that started the flow, so a form submitted from another
site or browser is refused (CSRF). The token grants and /auth/revoke are in pgo_grants.py.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import re
import secrets
import time
from typing import Any
from urllib.parse import urlencode

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from hub.auth import clients as client_store
from hub.auth import pages
from hub.auth import patient_sessions as sessions
from hub.auth.clients import Client
from hub.auth.endpoints import EXTRA_ROUTES, origin
from hub.auth.identity import IdentityConfigError, IdentityProvider, LoginFailed, configured_provider
from hub.auth.scopes import ScopeError, patient_scopes
from hub.pipeline import SEARCH_TYPE, Interaction, Principal
from hub.store.repository import Stored, utcnow

log = logging.getLogger("hub.auth")

BSN_SYSTEM = "http://fhir.nl/fhir/NamingSystem/bsn"
COOKIE = "hub_authz"
FLOW_LIFETIME = 600  # seconds from the app's request to the patient's decision
_CHALLENGE = re.compile(r"^[A-Za-z0-9_-]{43}$")  # base64url(SHA-256), no padding (RFC 7636)
_MAX_STATE = 2048


class FlowError(Exception):
    """An error to send back to the app at its (checked) redirect URI."""

    def __init__(self, error: str, description: str) -> None:
        super().__init__(description)
        self.error = error
        self.description = description


# -- sealed transaction tokens ------------------------------------------------------------------------


class Sealer:
    """Seals small JSON payloads for one step of the flow. Keys are derived per signing key, so all
    hub processes agree, and a key rotation only ends the flows in progress."""

    def __init__(self, keys: Any) -> None:
        self.keys = keys
        self._derived: dict[str, bytes] = {}

    def _key(self, jwk: Any) -> bytes:
        kid = str(jwk.kid)
        if kid not in self._derived:
            secret = jwk.as_dict(private=True)["d"].encode()
            hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=kid.encode(), info=b"hub authz transaction v1")
            self._derived[kid] = hkdf.derive(secret)
        return self._derived[kid]

    def seal(self, step: str, payload: dict[str, Any]) -> str:
        key = self.keys.signing
        nonce = secrets.token_bytes(12)
        body = json.dumps({**payload, "exp": int(time.time()) + FLOW_LIFETIME}).encode()
        sealed = AESGCM(self._key(key)).encrypt(nonce, body, f"{step}|{key.kid}".encode())
        kid = base64.urlsafe_b64encode(str(key.kid).encode()).decode().rstrip("=")
        return f"{kid}.{base64.urlsafe_b64encode(nonce + sealed).decode().rstrip('=')}"

    def open(self, step: str, token: str) -> dict[str, Any] | None:
        """The payload, or None if it is forged, for another step, or expired."""
        try:
            kid_part, _, data_part = token.partition(".")
            kid = base64.urlsafe_b64decode(kid_part + "=" * (-len(kid_part) % 4)).decode()
            data = base64.urlsafe_b64decode(data_part + "=" * (-len(data_part) % 4))
            jwk = next(k for k in self.keys.keyset.keys if str(k.kid) == kid)
            body = AESGCM(self._key(jwk)).decrypt(data[:12], data[12:], f"{step}|{kid}".encode())
            payload: dict[str, Any] = json.loads(body)
        except (ValueError, StopIteration, InvalidTag, UnicodeDecodeError):
            return None
        return payload if payload.get("exp", 0) >= time.time() else None


def _sealer(services: Any) -> Sealer:
    sealer = getattr(services, "_pgo_sealer", None)
    if sealer is None or sealer.keys is not services.keys:
        sealer = Sealer(services.keys)
        services._pgo_sealer = sealer
    return sealer


def _binding(request: Request) -> str | None:
    cookie = request.cookies.get(COOKIE)
    return hashlib.sha256(cookie.encode()).hexdigest() if cookie else None


def _open_flow(request: Request, services: Any, step: str, token: str) -> dict[str, Any] | None:
    flow = _sealer(services).open(step, token)
    bound = _binding(request)
    if flow is None or bound is None or not hmac.compare_digest(flow.get("bnd", ""), bound):
        return None
    return flow


# -- redirects back to the app ------------------------------------------------------------------------


def app_url(redirect_uri: str, issuer: str, **params: str | None) -> str:
    query = urlencode({k: v for k, v in {**params, "iss": issuer}.items() if v is not None})
    return f"{redirect_uri}{'&' if '?' in redirect_uri else '?'}{query}"


def _to_app(redirect_uri: str, issuer: str, status: int = 302, **params: str | None) -> Response:
    return RedirectResponse(app_url(redirect_uri, issuer, **params), status, headers={"Cache-Control": "no-store"})


def _expired_page() -> Response:
    return pages.error_page(
        400,
        "Sessie verlopen / Session expired",
        "Deze inlogsessie is verlopen of hoort niet bij deze browser. Begin opnieuw vanuit de app. "
        "/ This login session has expired or belongs to another browser. Start again from the app.",
    )


def _provider(services: Any) -> IdentityProvider | Response:
    try:
        provider = configured_provider(services.settings)
    except IdentityConfigError as exc:
        log.error("patient login refused: %s", exc)
        provider = None
    if provider is None:
        return pages.error_page(
            503,
            "Inloggen niet beschikbaar / Login not available",
            "Deze hub heeft geen identiteitsprovider (DigiD) ingesteld; apps van patiënten kunnen nog niet "
            "inloggen. / This hub has no identity provider (DigiD) configured; patients' apps cannot log in "
            "yet. Operators: see hub/auth/identity.py (HUB_IDENTITY_PROVIDER; HUB_DEVELOPMENT=1 for the "
            "development provider).",
        )
    return provider


# -- the steps ------------------------------------------------------------------------------------------


async def authorize(request: Request, services: Any) -> Response:
    provider = _provider(services)
    if isinstance(provider, Response):
        return provider
    here = origin(request, services.settings.base_url)
    items = list(request.query_params.multi_items())
    q = dict(items)
    client_id, redirect_uri = q.get("client_id", "")[:100], q.get("redirect_uri", "")
    client = await run_in_threadpool(_client, services, client_id) if client_id else None
    if client is None or not client.active or client.organisation_type != "pgo":
        return pages.error_page(
            400,
            "Onbekende app / Unknown app",
            f"De app {client_id!r} is niet aangemeld bij deze hub. / The app {client_id!r} is not registered here.",
        )
    twice = {k for k in q if sum(1 for name, _ in items if name == k) > 1}
    if not redirect_uri or redirect_uri not in client.redirect_uris or twice & {"client_id", "redirect_uri"}:
        return pages.error_page(
            400,
            "Ongeldig terugkeeradres / Invalid redirect URI",
            "Het terugkeeradres (redirect_uri) van de app is niet exact zoals aangemeld. "
            "/ The app's redirect_uri is not exactly as registered.",
        )
    state = q.get("state")
    try:
        if twice:
            raise FlowError("invalid_request", f"parameters given more than once: {', '.join(sorted(twice))}")
        if q.get("response_type") != "code":
            raise FlowError("unsupported_response_type", "response_type must be code")
        if not state or len(state) > _MAX_STATE:
            raise FlowError("invalid_request", "state is required (at most 2048 characters)")
        if q.get("code_challenge_method") != "S256":
            raise FlowError("invalid_request", "PKCE with code_challenge_method=S256 is required; plain is refused")
        if not _CHALLENGE.match(q.get("code_challenge", "")):
            raise FlowError("invalid_request", "code_challenge must be the base64url SHA-256 of the code_verifier")
        aud = q.get("aud")
        if aud and aud.rstrip("/") != f"{here}/fhir":
            raise FlowError("invalid_request", f"aud {aud!r} is not this FHIR server ({here}/fhir)")
        try:
            scope = patient_scopes(q.get("scope"), client.scopes)
        except ScopeError as exc:
            raise FlowError("invalid_scope", str(exc)) from None
    except FlowError as err:
        return _to_app(redirect_uri, here, error=err.error, error_description=err.description, state=state)
    cookie = secrets.token_urlsafe(32)
    flow = {
        "cid": client.client_id,
        "ruri": redirect_uri,
        "scope": scope,
        "state": state,
        "cc": q["code_challenge"],
        "bnd": hashlib.sha256(cookie.encode()).hexdigest(),
    }
    response = provider.start(request, _sealer(services).seal("login", flow))
    response.set_cookie(
        COOKIE,
        cookie,
        max_age=FLOW_LIFETIME,
        path="/auth",
        httponly=True,
        samesite="lax",
        secure=here.startswith("https"),
    )
    return response


async def login(request: Request, services: Any) -> Response:
    provider = _provider(services)
    if isinstance(provider, Response):
        return provider
    here = origin(request, services.settings.base_url)
    try:
        transaction, who = await provider.finish(request)
    except LoginFailed as failure:
        log.info("patient login failed at %s: %s", provider.name, failure)
        if failure.transaction and _open_flow(request, services, "login", failure.transaction) is None:
            return _expired_page()
        return provider.failed(request, failure)
    flow = _open_flow(request, services, "login", transaction)
    if flow is None:
        return _expired_page()
    matches = await run_in_threadpool(find_patients, services, who.bsn, f"{here}/fhir")
    back = app_url(flow["ruri"], here, error="access_denied", state=flow["state"])
    if len(matches) != 1:
        log.warning("patient login by %s: %d records for the BSN", who.provider, len(matches))
        message = (
            "Er is bij deze zorgregio geen dossier met uw BSN. / This care region holds no record with your BSN."
            if not matches
            else "Er zijn meerdere dossiers met uw BSN; neem contact op met uw zorgverlener. "
            "/ More than one record holds your BSN; please contact your care provider."
        )
        return pages.error_page(404 if not matches else 409, "Geen dossier / No record", message, back)
    patient = matches[0]
    client = await run_in_threadpool(_client, services, flow["cid"])
    app_name = client.client_id if client else flow["cid"]
    hours = max(1, services.settings.refresh_token_lifetime // 3600)
    permissions = [d for d in (pages.describe_scope(s, hours) for s in flow["scope"].split()) if d]
    consent_token = _sealer(services).seal(
        "consent", {**flow, "pid": patient["id"], "sub": who.bsn, "prov": who.provider}
    )
    body = pages.consent(app_name, _display(patient), permissions, consent_token, provider.development)
    return pages.html(body)


async def consent(request: Request, services: Any) -> Response:
    here = origin(request, services.settings.base_url)
    sent_from = request.headers.get("origin")
    if sent_from and sent_from != here:
        return pages.error_page(403, "Geweigerd / Refused", "This form was sent from another site.")
    try:
        form = await pages.read_form(request)
    except pages.FormError as exc:
        return pages.error_page(400, "Ongeldig formulier / Invalid form", str(exc))
    flow = _open_flow(request, services, "consent", form.get("consent", ""))
    if flow is None:
        return _expired_page()
    decision = form.get("decision")
    if decision == "deny":
        log.info("patient Patient/%s denied %s scope=%r", flow["pid"], flow["cid"], flow["scope"])
        response = _to_app(flow["ruri"], here, 303, error="access_denied", state=flow["state"])
    elif decision == "approve":
        grant = sessions.Grant(
            family="",
            client_id=flow["cid"],
            patient_id=flow["pid"],
            subject=flow["sub"],
            scopes=flow["scope"],
            redirect_uri=flow["ruri"],
            code_challenge=flow["cc"],
        )
        code = await run_in_threadpool(_new_code, services, grant)
        log.info(
            "patient Patient/%s allowed %s scope=%r (via %s)", flow["pid"], flow["cid"], flow["scope"], flow["prov"]
        )
        response = _to_app(flow["ruri"], here, 303, code=code, state=flow["state"])
    else:
        return pages.error_page(400, "Ongeldig formulier / Invalid form", "Choose allow or deny.")
    response.delete_cookie(COOKIE, path="/auth")  # the flow is over: its forms cannot be sent again
    return response


def _client(services: Any, client_id: str) -> Client | None:
    with services.db.transaction() as conn:
        return client_store.get(conn, client_id)


def _new_code(services: Any, grant: sessions.Grant) -> str:
    with services.db.transaction(write=True) as conn:
        return sessions.new_code(conn, grant, utcnow())


def find_patients(services: Any, bsn: str, fhir_base: str) -> list[dict[str, Any]]:
    """The active Patient records holding this BSN, found through the pipeline like any search."""
    result = services.pipeline.run(
        Interaction(
            SEARCH_TYPE,
            res_type="Patient",
            params=[("identifier", f"{BSN_SYSTEM}|{bsn}"), ("_count", "10")],
            principal=Principal(kind="local", client_id="hub patient login"),
            base_url=fhir_base,
        )
    )
    entries = (result.resource or {}).get("entry", [])
    found = [e["resource"] for e in entries if e.get("search", {}).get("mode", "match") == "match"]
    patients = [r.resource() if isinstance(r, Stored) else r for r in found]  # entries may hold stored rows
    return [p for p in patients if p.get("active") is not False]


def _display(patient: dict[str, Any]) -> str:
    names = patient.get("name") or [{}]
    name = names[0].get("text") or " ".join([*names[0].get("given", []), names[0].get("family", "")]).strip()
    born = patient.get("birthDate")
    return f"{name or 'Patient/' + str(patient.get('id'))}" + (f" (geboren / born {born})" if born else "")


EXTRA_ROUTES.extend(
    [
        ("/auth/authorize", authorize, ["GET"]),
        ("/auth/login", login, ["GET", "POST"]),
        ("/auth/consent", consent, ["POST"]),
    ]
)
