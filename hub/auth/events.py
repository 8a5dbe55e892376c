"""Security events of the authorisation server (tokens issued and refused).

They go to the `hub.auth` log; the audit trail (hub/audit) records them as AuditEvents.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("hub.auth")


class AuthEvents:
    def token_issued(self, client: Any, issued: Any, **details: Any) -> None:
        log.info(
            "token issued to %s scope=%r expires_in=%s %s", client.client_id, issued.scope, issued.expires_in, details
        )

    def token_refused(self, form: dict[str, str], err: Any, address: str | None) -> None:
        who = form.get("client_id") or "(assertion)"
        log.warning("token refused for %s from %s: %s %s", who, address, err.error, err.description)
