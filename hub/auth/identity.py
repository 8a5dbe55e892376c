"""Who the patient behind a PGO app is: the identity-provider seam of the patient login.

The authorisation endpoint (hub/auth/pgo.py) hands the browser to an `IdentityProvider` with an
opaque, signed `transaction` string; the provider shows its page or redirects to the real login
service, and when the browser comes back (to /auth/login, GET or POST) the provider answers which
transaction it was and who logged in: an `Authenticated` subject with a BSN.

Providers:

- `development` (DevelopmentIdentityProvider): a form where you type a TEST BSN (999xxxxxx that passes
  the 11-proof). No password: anybody can be any test patient. It runs only in development set-ups
  (Settings.allow_development_secrets, i.e. HUB_DEVELOPMENT=1) and refuses every other BSN.
- `digid`: the real one, not built here. A DigiD provider (SAML 2.0 via a DigiD connection, or OIDC
  through a broker) implements the same two methods: `start` redirects to DigiD carrying the
  transaction as RelayState/state; `finish` validates the signed answer (issuer, audience, time,
  assurance level at least "substantieel" as MedMij requires) and returns the BSN. Register it in
  PROVIDERS and set HUB_IDENTITY_PROVIDER=digid.

Without a configured provider the hub refuses patient login with a clear page (503).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from starlette.requests import Request
from starlette.responses import Response


@dataclass(frozen=True)
class Authenticated:
    """A person the identity provider vouches for."""

    bsn: str
    provider: str  # the provider's name, for the audit trail
    assurance: str  # the level of assurance (eIDAS/DigiD): "none" for the development provider


class LoginFailed(Exception):
    """The login did not succeed; the message is shown to the person (in Dutch and English)."""

    def __init__(self, message: str, transaction: str | None = None) -> None:
        super().__init__(message)
        self.transaction = transaction


class IdentityConfigError(Exception):
    """The configured provider cannot run in this set-up."""


class IdentityProvider(Protocol):
    name: str
    development: bool  # True: labelled as such on every page; never in production

    def start(self, request: Request, transaction: str) -> Response:
        """The login page, or a redirect to the external login service, for one authorisation."""

    async def finish(self, request: Request) -> tuple[str, Authenticated]:
        """(transaction, who logged in) from the browser's return to /auth/login; raises LoginFailed."""

    def failed(self, request: Request, failure: LoginFailed) -> Response:
        """The page after a failed login (try again, or an explanation)."""


def bsn_passes_11_proof(bsn: str) -> bool:
    """9 digits d1..d9 with 9*d1 + 8*d2 + ... + 2*d8 - d9 divisible by 11 (and not all zero)."""
    if len(bsn) != 9 or not bsn.isascii() or not bsn.isdigit():
        return False
    total = sum(int(d) * w for d, w in zip(bsn, (9, 8, 7, 6, 5, 4, 3, 2, -1), strict=True))
    return total % 11 == 0 and int(bsn) != 0


def is_test_bsn(bsn: str) -> bool:
    """BSNs of the 999 series are issued for testing only; real citizens never have one."""
    return bsn.startswith("999") and bsn_passes_11_proof(bsn)


class DevelopmentIdentityProvider:
    """DEVELOPMENT ONLY: log in as any test patient by typing a test BSN. No authentication at all."""

    name = "development"
    development = True

    def start(self, request: Request, transaction: str) -> Response:
        from hub.auth import pages

        return pages.html(pages.development_login(transaction))

    async def finish(self, request: Request) -> tuple[str, Authenticated]:
        from hub.auth import pages

        if request.method != "POST":
            raise LoginFailed("Log in with the form. / Log in met het formulier.")
        try:
            form = await pages.read_form(request)
        except pages.FormError as exc:
            raise LoginFailed(str(exc)) from None
        transaction = form.get("transaction", "")
        bsn = form.get("bsn", "").strip().replace(" ", "").replace(".", "")
        if not transaction:
            raise LoginFailed("The login form is incomplete. / Het inlogformulier is onvolledig.")
        if not bsn_passes_11_proof(bsn):
            raise LoginFailed(
                "This is not a valid BSN (9 digits that pass the 11-proof). / "
                "Dit is geen geldig BSN (9 cijfers die de elfproef doorstaan).",
                transaction,
            )
        if not is_test_bsn(bsn):
            raise LoginFailed(
                "The development login accepts test BSNs (999xxxxxx) only. / "
                "De ontwikkel-login accepteert alleen test-BSN's (999xxxxxx).",
                transaction,
            )
        return transaction, Authenticated(bsn=bsn, provider=self.name, assurance="none")

    def failed(self, request: Request, failure: LoginFailed) -> Response:
        from hub.auth import pages

        if failure.transaction:
            return pages.html(pages.development_login(failure.transaction, str(failure)), 400)
        return pages.error_page(400, "Inloggen mislukt / Login failed", str(failure))


# name -> factory(settings). A DigiD provider registers itself here.
PROVIDERS: dict[str, Callable[[Any], IdentityProvider]] = {}


def configured_provider(settings: Any) -> IdentityProvider | None:
    """The provider the settings ask for; None when patient login is not configured."""
    name = settings.identity_provider or ("development" if settings.allow_development_secrets else "")
    if not name:
        return None
    if name == "development":
        if not settings.allow_development_secrets:
            raise IdentityConfigError(
                "the development identity provider runs only in development set-ups (HUB_DEVELOPMENT=1)"
            )
        return DevelopmentIdentityProvider()
    factory = PROVIDERS.get(name)
    if factory is None:
        raise IdentityConfigError(f"unknown identity provider {name!r} (HUB_IDENTITY_PROVIDER)")
    return factory(settings)
