"""Building AuditEvents (FHIR R4) the way IHE BALP shapes them, with the NEN 7513 fields.

One event per patient touched (BALP: a query that returns several patients' data makes one
PatientQuery event per patient), each holding: type `rest` + the interaction as subtype, action
C R U D E, outcome, the client application with its network address, the acting professional (UZI
or AGB id and role) or the patient logged in to a PGO app, the responsible organisation (URA/AGB),
the patient (reference and BSN), the data objects, the query (base64), purpose of use, the consent
or rule that allowed it, a break-the-glass reason and the correlation ids of the request.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from hub.pipeline import (
    CREATE,
    DELETE,
    HISTORY_INSTANCE,
    HISTORY_SYSTEM,
    HISTORY_TYPE,
    PATCH,
    READ,
    SEARCH_COMPARTMENT,
    SEARCH_SYSTEM,
    SEARCH_TYPE,
    UPDATE,
    VREAD,
    Interaction,
    Principal,
)

BSN_SYSTEM = "http://fhir.nl/fhir/NamingSystem/bsn"
URA_SYSTEM = "http://fhir.nl/fhir/NamingSystem/ura"
AGB_SYSTEM = "http://fhir.nl/fhir/NamingSystem/agb-z"
UZI_ROLE_SYSTEM = "http://fhir.nl/fhir/NamingSystem/uzi-rolcode"
CLIENT_SYSTEM = "urn:hub:client-id"  # the hub's registered client ids
LOGIN_SYSTEM = "urn:hub:login"  # who authenticated at the identity provider
EVENT_TYPE = "http://terminology.hl7.org/CodeSystem/audit-event-type"
DCM = "http://dicom.nema.org/resources/ontology/DCM"
RESTFUL = "http://hl7.org/fhir/restful-interaction"
ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
ROLE_CLASS = "http://terminology.hl7.org/CodeSystem/v3-RoleClass"
ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
BALP_ENTITY = "https://profiles.ihe.net/ITI/BALP/CodeSystem/BasicAuditEntityType"
BALP = "https://profiles.ihe.net/ITI/BALP/StructureDefinition/IHE.BasicAudit."
CORRELATION_HEADERS = ("X-Correlation-ID", "MedMij-Request-ID")
MAX_OBJECTS = 1000  # data objects listed per event; the rest are counted

_ACTION = {CREATE: "C", UPDATE: "U", PATCH: "U", DELETE: "D", READ: "R", VREAD: "R", HISTORY_INSTANCE: "R"}
_QUERIES = (SEARCH_TYPE, SEARCH_SYSTEM, SEARCH_COMPARTMENT, HISTORY_TYPE, HISTORY_SYSTEM)
_PROFILE = {"C": "Create", "R": "Read", "U": "Update", "D": "Delete", "E": "Query"}


@dataclass
class Touched:
    """What an interaction touched: patients (id -> BSN) and data objects per patient (None: no patient)."""

    patients: dict[str, str | None] = field(default_factory=dict)
    objects: dict[str | None, list[str]] = field(default_factory=dict)

    def add(self, ref: str, patient: str | None) -> None:
        if patient is not None:
            self.patients.setdefault(patient, None)
        self.objects.setdefault(patient, []).append(ref)


def now_instant() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def outcome_code(status: int) -> str:
    return "0" if status < 400 else "4" if status < 500 else "8"


def action_of(i: Interaction) -> str:
    return _ACTION.get(i.kind, "E")


def coding(system: str, code: str, display: str | None = None) -> dict[str, str]:
    return {"system": system, "code": code, **({"display": display} if display else {})}


# Codings every record repeats (a search's page lists 50 objects): built once and shared by the
# events, which are serialised and never changed after they are made.
_PERSON = coding(ENTITY_TYPE, "1", "Person")
_PATIENT = coding(OBJECT_ROLE, "1", "Patient")
_SYSTEM_OBJECT = coding(ENTITY_TYPE, "2", "System Object")
_DOMAIN_RESOURCE = coding(OBJECT_ROLE, "4", "Domain Resource")
_APPLICATION_SERVER = coding("http://terminology.hl7.org/CodeSystem/security-source-type", "4", "Application Server")


def rest_events(
    i: Interaction, status: int, touched: Touched, facts: dict[str, Any], description: str | None = None
) -> list[dict[str, Any]]:
    """The events for one interaction (or bundle entry): one per patient, or one without."""
    action = action_of(i)
    base = _event(
        coding(EVENT_TYPE, "rest", "Restful Operation"),
        [coding(RESTFUL, i.kind)],
        action,
        outcome_code(status),
        description,
    )
    base["agent"] = agents(i.principal, i.client_address)
    purpose = purpose_of_event(i.principal, facts)
    if purpose:
        base["purposeOfEvent"] = purpose
    base["source"] = source(i.base_url)
    common = [*_query_entity(i), *_consent_entity(facts), *correlation_entities(i.request_headers)]
    patients: list[tuple[str | None, str | None]] = [*touched.patients.items()] or [(None, None)]
    loose = touched.objects.get(None, [])
    events = []
    for n, (pid, bsn) in enumerate(patients):
        event = dict(base)  # the chain gives it its id (its position) when it is appended
        kind = ("Patient" if pid else "") + _PROFILE[action]
        event["meta"] = {"profile": [BALP + kind]}
        objects = touched.objects.get(pid, []) if pid else []
        if n == 0:
            objects = objects + loose  # data about no patient (Organization, Practitioner) goes once
        entities = [patient_entity(pid, bsn)] if pid else []
        entities += _object_entities(objects)
        event["entity"] = entities + common
        events.append(event)
    return events


def token_event(
    principal: Principal, address: str | None, outcome: str, description: str | None, details: dict[str, str]
) -> dict[str, Any]:
    """Token issued (outcome 0) or refused (4): DICOM 110114 User Authentication, subtype 110122 Login."""
    event = _event(
        coding(DCM, "110114", "User Authentication"), [coding(DCM, "110122", "Login")], "E", outcome, description
    )
    event["agent"] = agents(principal, address)
    purpose = purpose_of_event(principal, {})
    if purpose:
        event["purposeOfEvent"] = purpose
    event["source"] = source(details.pop("site", ""))
    entities: list[dict[str, Any]] = []
    if principal.patient_id:
        entities.append(patient_entity(principal.patient_id, details.pop("bsn", None)))
    token_detail = [{"type": k, "valueString": v} for k, v in sorted(details.items()) if v]
    if principal.token_id or token_detail:
        token: dict[str, Any] = {
            "type": coding(ENTITY_TYPE, "2", "System Object"),
            "role": coding(OBJECT_ROLE, "13", "Security Resource"),
        }
        if principal.token_id:
            token["what"] = {"identifier": {"type": {"text": "access token id (jti)"}, "value": principal.token_id}}
        if token_detail:
            token["detail"] = token_detail
        entities.append(token)
    if entities:
        event["entity"] = entities
    return event


def _event(
    type_: dict[str, str], subtype: list[dict[str, str]], action: str, outcome: str, desc: str | None
) -> dict[str, Any]:
    event: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "type": type_,
        "subtype": subtype,
        "action": action,
        "recorded": now_instant(),
        "outcome": outcome,
    }
    if desc:
        event["outcomeDesc"] = desc[:1000]
    return event


def agents(p: Principal, address: str | None) -> list[dict[str, Any]]:
    """The client application, the human user (professional or patient) and the organisation."""
    human = p.practitioner_id is not None or p.patient_id is not None
    out: list[dict[str, Any]] = []
    if p.client_id or address:
        app: dict[str, Any] = {"type": {"coding": [coding(DCM, "110150", "Application")]}, "requestor": not human}
        if p.client_id:
            app["who"] = {"identifier": {"system": CLIENT_SYSTEM, "value": p.client_id}, "display": p.client_id}
        if address:
            app["network"] = {"address": address, "type": "2"}
        if p.purpose_of_use and not human:
            app["purposeOfUse"] = [{"coding": [coding(ACT_REASON, p.purpose_of_use)]}]
        out.append(app)
    if p.practitioner_id:
        user: dict[str, Any] = {
            "type": {"coding": [coding("http://terminology.hl7.org/CodeSystem/extra-security-role-type", "humanuser")]},
            "who": {"identifier": {"system": p.practitioner_system or "", "value": p.practitioner_id}},
            "requestor": True,
        }
        if p.practitioner_name:
            user["who"]["display"] = p.practitioner_name
        if p.role:
            user["role"] = [{"coding": [coding(UZI_ROLE_SYSTEM, p.role)]}]
        if p.purpose_of_use:
            user["purposeOfUse"] = [{"coding": [coding(ACT_REASON, p.purpose_of_use)]}]
        out.append(user)
    elif p.patient_id:
        out.append(
            {
                "type": {"coding": [coding(ROLE_CLASS, "PAT", "patient")]},
                "who": {
                    "reference": f"Patient/{p.patient_id}",
                    "identifier": {"system": LOGIN_SYSTEM, "value": p.login or f"Patient/{p.patient_id}"},
                },
                "requestor": True,
            }
        )
    org_system, org_id = (URA_SYSTEM, p.organisation_ura) if p.organisation_ura else (AGB_SYSTEM, p.organisation_agb)
    if org_id:
        org: dict[str, Any] = {
            "type": {"coding": [coding(ROLE_CLASS, "PROV", "healthcare provider")]},
            "who": {"identifier": {"system": org_system, "value": org_id}},
            "requestor": False,
        }
        if p.organisation_type:
            org["who"]["display"] = p.organisation_type
        out.append(org)
    if p.kind == "local":
        out.append(
            {
                "type": {"coding": [coding(DCM, "110150", "Application")]},
                "who": {"display": "hub (operator command)"},
                "requestor": True,
            }
        )
    return out


def purpose_of_event(p: Principal, facts: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if p.purpose_of_use:
        out.append({"coding": [coding(ACT_REASON, p.purpose_of_use)]})
    btg = (facts.get("consent") or {}).get("break_the_glass")
    if btg:
        out.append({"coding": [coding(ACT_REASON, "BTG", "break the glass")], "text": str(btg)})
    return out


def source(site: str) -> dict[str, Any]:
    return {
        "site": site or "hub",
        "observer": {"display": "Haaglanden FHIR hub"},
        "type": [_APPLICATION_SERVER],
    }


def patient_entity(patient_id: str, bsn: str | None) -> dict[str, Any]:
    what: dict[str, Any] = {"reference": f"Patient/{patient_id}"}
    if bsn:
        what["identifier"] = {"system": BSN_SYSTEM, "value": bsn}
    return {"what": what, "type": _PERSON, "role": _PATIENT}


def _object_entities(refs: Sequence[str]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [
        {
            "what": {"reference": r},
            "type": _SYSTEM_OBJECT,
            "role": _DOMAIN_RESOURCE,
        }
        for r in refs[:MAX_OBJECTS]
    ]
    if len(refs) > MAX_OBJECTS:
        out[-1]["detail"] = [{"type": "more-objects-not-listed", "valueString": str(len(refs) - MAX_OBJECTS)}]
    return out


def query_string(i: Interaction) -> str | None:
    """The request as FHIR would write it: `Observation?patient=1&code=...`."""
    if i.kind not in _QUERIES and not i.operation:
        return None
    path = "/".join(x for x in (i.res_type, i.res_id, i.compartment_type or i.operation) if x)
    return f"{path}?{urlencode(i.params)}" if i.params else path


def _query_entity(i: Interaction) -> list[dict[str, Any]]:
    q = query_string(i)
    if q is None:
        return []
    return [
        {
            "type": coding(ENTITY_TYPE, "2", "System Object"),
            "role": coding(OBJECT_ROLE, "24", "Query"),
            "query": base64.b64encode(q.encode()).decode(),
        }
    ]


def _consent_entity(facts: dict[str, Any]) -> list[dict[str, Any]]:
    decision = facts.get("consent")
    hidden = facts.get("consent-hidden")
    if not decision and hidden is None:
        return []
    d = decision or {}
    entity: dict[str, Any] = {
        "type": coding(ENTITY_TYPE, "2", "System Object"),
        "role": coding(OBJECT_ROLE, "13", "Security Resource"),
    }
    if d.get("consent"):
        entity["what"] = {"reference": str(d["consent"])}
    details = [(k, d.get(k)) for k in ("decision", "rule", "reason", "break_the_glass")]
    if hidden is not None:
        details.append(("hidden-resources", str(hidden)))
    entity["detail"] = [{"type": k.replace("_", "-"), "valueString": str(v)} for k, v in details if v]
    return [entity]


def correlation_entities(headers: dict[str, str]) -> list[dict[str, Any]]:
    lower = {k.lower(): v for k, v in headers.items()}
    out = []
    for name in CORRELATION_HEADERS:
        value = lower.get(name.lower())
        if value:
            out.append(
                {
                    "what": {"identifier": {"type": {"text": name}, "value": value[:200]}},
                    "type": coding(BALP_ENTITY, "XrequestId"),
                }
            )
    return out
