"""Consent/$mitz-notify: take a Mitz consent notification Bundle as it arrives from the registry.

The notification (see Mitz's "Consent-Mitz-Notify" profile) is a transaction of Consents plus the
Patient (by BSN) and Organizations (by URA) they point at, all as plain POSTs with urn:uuid
fullUrls. Replayed as such it would create a new Patient and Organization every time. Here the
Patient and Organization entries become conditional creates on their BSN / URA (the hub's own
record is used when it exists) and each Consent a PUT under its Mitz id, so a later notification
about the same consent (e.g. status inactive: withdrawn) replaces it. The result is one ordinary
transaction through the pipeline: scopes, consent-write rights and audit apply as to any write.
"""

from __future__ import annotations

from typing import Any

from hub.api.operations import Operation, register
from hub.auth.enforce import OPERATION_NEEDS
from hub.formats.outcome import invalid
from hub.pipeline import TRANSACTION, Context, Interaction, Result

BSN_SYSTEM = "http://fhir.nl/fhir/NamingSystem/bsn"
URA_SYSTEM = "http://fhir.nl/fhir/NamingSystem/ura"
KEYS = {"Patient": BSN_SYSTEM, "Organization": URA_SYSTEM}


def as_transaction(notification: dict[str, Any]) -> dict[str, Any]:
    """The notification Bundle rewritten to conditional creates (Patient, Organization) and PUTs."""
    if notification.get("resourceType") != "Bundle" or not isinstance(notification.get("entry"), list):
        raise invalid("$mitz-notify expects the notification Bundle", "Bundle")
    entries = []
    for n, entry in enumerate(notification["entry"]):
        res = entry.get("resource") or {}
        rt = res.get("resourceType")
        where = f"Bundle.entry[{n}]"
        if rt in KEYS:
            value = next((i.get("value") for i in res.get("identifier") or [] if i.get("system") == KEYS[rt]), None)
            if not value:
                raise invalid(f"the {rt} entry has no identifier of {KEYS[rt]}", f"{where}.resource.identifier")
            request = {"method": "POST", "url": rt, "ifNoneExist": f"identifier={KEYS[rt]}|{value}"}
            res = {k: v for k, v in res.items() if k != "id"}
        elif rt == "Consent":
            cid = res.get("id")
            if not isinstance(cid, str) or not cid:
                raise invalid("a Consent entry needs its Mitz id", f"{where}.resource.id")
            request = {"method": "PUT", "url": f"Consent/{cid}"}
        else:
            raise invalid(f"a Mitz notification carries Consents, Patients and Organizations, not {rt}", where)
        entries.append({"fullUrl": entry.get("fullUrl"), "resource": res, "request": request})
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def _mitz_notify(ctx: Context) -> Result:
    i = ctx.interaction
    if not isinstance(i.body, dict):
        raise invalid("$mitz-notify expects the notification Bundle in the body")
    sub = Interaction(
        TRANSACTION,
        body=as_transaction(i.body),
        principal=i.principal,
        base_url=i.base_url,
        request_headers=i.request_headers,
        client_address=i.client_address,
        prefer_return="minimal",
    )
    return ctx.services.pipeline.run_nested(sub, ctx)


register(Operation("mitz-notify", _mitz_notify, type_level=True, resource_types=("Consent",), affects_state=True))
OPERATION_NEEDS["mitz-notify"] = ("cu", "Consent")
