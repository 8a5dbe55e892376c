"""The patient's own view of the audit trail (Wabvpz art. 15d): who accessed my record.

GET [base]/Patient/[id]/$access-log[?_count=n]   with the patient's own PGO token only.

A Bundle (collection) of AuditEvents cut down to what a patient can read: when, which organisation
(by name), which professional role (in words), what (kinds of data, in words), what was done and
why, and whether it was allowed, with a one-line narrative. No client ids, network addresses,
tokens, hashes, queries or resource ids. The patient's own looks at this log are left out.
"""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import Connection, select

from hub.api import operations
from hub.audit.record import EVENT_TYPE, URA_SYSTEM
from hub.audit.tables import audit_record
from hub.audit.uzi_roles import UZI_ROLES
from hub.formats.outcome import FhirError
from hub.pipeline import Context, Result
from hub.store.tables import idx_token, resource

OPERATION = "access-log"
ACTIONS = {"C": "added", "R": "viewed", "U": "changed", "D": "deleted", "E": "searched"}
PURPOSES = {
    "TREAT": "your treatment",
    "ETREAT": "emergency treatment",
    "COC": "continuity of your care",
    "PATRQT": "your own request",
    "HPAYMT": "payment of care",
    "HOPERAT": "running the care organisation",
    "PUBHLTH": "public health",
    "HRESCH": "research",
    "BTG": "an emergency (break-the-glass)",
}
DATA = {
    "Patient": "your personal details",
    "Observation": "measurements and test results",
    "Condition": "health problems",
    "AllergyIntolerance": "allergies",
    "MedicationRequest": "medication",
    "MedicationStatement": "medication",
    "MedicationDispense": "medication",
    "MedicationAdministration": "medication",
    "Immunization": "vaccinations",
    "Procedure": "treatments and operations",
    "Encounter": "visits and admissions",
    "EpisodeOfCare": "care episodes",
    "Consent": "your consent choices and treatment wishes",
    "DocumentReference": "documents",
    "Composition": "documents",
    "DiagnosticReport": "test reports",
    "CarePlan": "care plans",
    "Goal": "care goals",
    "ServiceRequest": "referrals and requests",
    "Task": "referrals and transfers",
    "Flag": "alerts",
    "Appointment": "appointments",
}


def _what(event: dict[str, Any]) -> list[str]:
    kinds: list[str] = []
    for e in event.get("entity", []):
        code = e.get("role", {}).get("code")
        ref = e.get("what", {}).get("reference", "")
        rt = ref.split("/")[0] if code == "4" else None
        if code == "24":  # a search: the type searched for
            q = base64.b64decode(e.get("query", "")).decode("utf-8", "replace").split("?")[0]
            rt = q.split("/")[-1] if q and not q.split("/")[-1].startswith("$") else None
        if rt:
            label = DATA.get(rt, rt)
            if label not in kinds:
                kinds.append(label)
    return kinds or ["your record"]


def _is_own_log_read(event: dict[str, Any], patient_id: str) -> bool:
    own = any(a.get("who", {}).get("reference") == f"Patient/{patient_id}" for a in event.get("agent", []))
    query = next((e.get("query", "") for e in event.get("entity", []) if e.get("role", {}).get("code") == "24"), "")
    return own and f"${OPERATION}" in base64.b64decode(query).decode("utf-8", "replace")


class Names:
    """Organisation names by URA from the Organization resources the hub holds (cached per request)."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.cache: dict[str, str] = {}

    def organisation(self, ura: str) -> str:
        if ura not in self.cache:
            q = (
                select(resource.c.content)
                .join(idx_token, idx_token.c.resource_pk == resource.c.pk)
                .where(
                    idx_token.c.res_type == "Organization",
                    idx_token.c.param == "identifier",
                    idx_token.c.system == URA_SYSTEM,
                    idx_token.c.code == ura,
                    resource.c.is_current,
                )
                .limit(1)
            )
            content = self.conn.execute(q).scalar()
            name = orjson.loads(content).get("name") if content else None
            self.cache[ura] = name or f"a care organisation (URA {ura})"
        return self.cache[ura]


def plain(event: dict[str, Any], patient_id: str, names: Names) -> dict[str, Any]:
    who, role, org = "someone", None, None
    you = False
    for a in event.get("agent", []):
        code = a.get("type", {}).get("coding", [{}])[0].get("code")
        if code == "PROV":
            org = names.organisation(a.get("who", {}).get("identifier", {}).get("value", ""))
        elif a.get("who", {}).get("reference") == f"Patient/{patient_id}":
            you = True
        elif code == "humanuser":
            codes = [c.get("code", "") for x in a.get("role", []) for c in x.get("coding", [])]
            role = UZI_ROLES.get(codes[0], "a care professional") if codes else "a care professional"
    reasons = []
    for p in event.get("purposeOfEvent", []):
        code = next((c.get("code") for c in p.get("coding", [])), None)
        text = PURPOSES.get(code or "", code or "")
        reasons.append(f"{text}: {p['text']}" if p.get("text") else text)
    what = _what(event)
    action = ACTIONS.get(event.get("action", ""), "accessed")
    allowed = event.get("outcome") == "0"
    if you:
        who = "You, through your health app"
    elif role and org:
        who = f"{role} at {org}"
    elif org:
        who = org
    when = datetime.fromisoformat(event["recorded"].replace("Z", "+00:00"))
    sentence = f"{when:%d-%m-%Y %H:%M} UTC: {who} {action} {', '.join(what)}"
    sentence += f" for {', '.join(reasons)}" if reasons else ""
    sentence += "." if allowed else " (refused)."
    agent: dict[str, Any] = {"who": {"display": "you" if you else org or who}, "requestor": True}
    if role:
        agent["role"] = [{"text": role}]
    out: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "text": {"status": "generated", "div": f'<div xmlns="http://www.w3.org/1999/xhtml">{_escape(sentence)}</div>'},
        "type": {"system": EVENT_TYPE, "code": "rest", "display": "access to your record"},
        "action": event.get("action"),
        "recorded": event["recorded"],
        "outcome": event.get("outcome"),
        "outcomeDesc": "allowed" if allowed else "refused",
        "agent": [agent],
        "source": {"observer": {"display": "Haaglanden FHIR hub"}},
        "entity": [{"what": {"display": w}} for w in what],
    }
    if reasons:
        out["purposeOfEvent"] = [{"text": x} for x in reasons]
    return out


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def access_log(ctx: Context) -> Result:
    i = ctx.interaction
    p = i.principal
    if p.patient_id is None or p.patient_id != i.res_id:
        raise FhirError(
            403, "forbidden", "only the patient, with their own app's token, may see who accessed their record"
        )
    count_param = i.param("_count") or "100"
    count = min(int(count_param), 1000) if count_param.isdigit() else 100
    q = (
        select(audit_record.c.content)
        .where(audit_record.c.patient_id == i.res_id, audit_record.c.type == "rest")
        .order_by(audit_record.c.seq.desc())
        .limit(count * 2)  # room for the patient's own looks at this log, which are left out
    )
    names = Names(ctx.conn)
    entries = []
    for (content,) in ctx.conn.execute(q):
        event = orjson.loads(content)
        if _is_own_log_read(event, i.res_id):
            continue
        entries.append({"resource": plain(event, i.res_id, names)})
        if len(entries) == count:
            break
    return Result(200, resource={"resourceType": "Bundle", "type": "collection", "entry": entries})


operations.register(operations.Operation(OPERATION, access_log, instance=True, resource_types=("Patient",)))
