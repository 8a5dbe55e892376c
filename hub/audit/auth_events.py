"""Token issuance and refused token requests as audit records (the AuthEvents interface of hub/auth).

Each event is written in a transaction of its own, after the authorisation server's own work, and
still goes to the `hub.auth` log as before.
"""

from __future__ import annotations

import base64
import logging
from typing import Any

import orjson

from hub.audit.chain import AuditTrail
from hub.audit.record import token_event
from hub.auth.events import AuthEvents
from hub.pipeline import Principal

log = logging.getLogger("hub.audit")


def _claims(jwt: str | None) -> dict[str, Any]:
    """The payload of a JWT, unverified: only to name who asked (a verified token or a refused assertion)."""
    try:
        payload = (jwt or "").split(".")[1]
        data = orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return data if isinstance(data, dict) else {}
    except (IndexError, ValueError, orjson.JSONDecodeError):
        return {}


class AuditedAuthEvents(AuthEvents):
    def __init__(self, trail: AuditTrail) -> None:
        self.trail = trail

    def token_issued(self, client: Any, issued: Any, **details: Any) -> None:
        super().token_issued(client, issued, **details)
        pract = details.get("practitioner") or {}
        claims = _claims(getattr(issued, "token", None))
        principal = Principal(
            kind="patient" if claims.get("patient") else "practitioner" if pract else "system",
            client_id=client.client_id,
            organisation_ura=client.ura,
            organisation_agb=client.agb,
            organisation_type=client.organisation_type,
            practitioner_id=pract.get("id"),
            practitioner_system=pract.get("system"),
            practitioner_name=pract.get("name"),
            role=pract.get("role"),
            patient_id=claims.get("patient") or details.get("patient_id"),
            login=claims.get("login") or details.get("subject"),
            purpose_of_use=claims.get("purpose_of_use") or details.get("purpose_of_use"),
            token_id=claims.get("jti"),
        )
        extra = {"scope": str(issued.scope), "expires-in": str(issued.expires_in), "site": str(claims.get("aud", ""))}
        if details.get("grant_type"):
            extra["grant-type"] = str(details["grant_type"])
        self.trail.write([token_event(principal, details.get("address"), "0", "access token issued", extra)])

    def token_refused(self, form: dict[str, str], err: Any, address: str | None) -> None:
        super().token_refused(form, err, address)
        claimed = form.get("client_id") or str(_claims(form.get("client_assertion")).get("iss") or "") or None
        principal = Principal(kind="anonymous", client_id=claimed)
        extra = {"grant-type": form.get("grant_type", ""), "requested-scope": form.get("scope", "")}
        desc = f"token refused: {err.error}: {err.description}"
        self.trail.write([token_event(principal, address, "4", desc, extra)])
