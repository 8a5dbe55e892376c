"""A patient-privacy Consent, flattened into rules the decision point can evaluate (and index).

Shape (Mitz "Consent-Mitz-Notify" and the hub's own consent profile):
- `scope` patient-privacy; `status` active (anything else: no rules, so a withdrawn or inactive
  consent stops counting at once);
- `category` codings from the Mitz gegevenscategorie (or the hub's) system: the data categories
  (none: all data); `provision.code` may also name them;
- extension OTV-ProviderCategory: the consulting organisation categories (RPZAC codes);
- `provision.type` permit | deny (absent: deny, the cautious reading); `provision.period`;
  `provision.purpose`; `provision.actor`: role CST (custodian) names the data-holding organisation,
  any other role a single consulting organisation; either as a reference to an Organization or as
  a logical reference by URA / AGB identifier;
- nested `provision.provision`: exceptions, each its own rule, inheriting what it does not state.

Specificity, highest first wins and deny wins a tie: one named consulting organisation (20) over a
care-process relation (19, see decision.py) over a consulting category (10) over anyone (0); plus a
named custodian (4); plus a low data category (2) over a high one (1) over all data (0).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from itertools import product
from typing import Any

from consent.categories import (
    BEHANDEL,
    GEGEVENSCATEGORIE,
    HUB_CATEGORY,
    KNOWN,
    PROVIDER_CATEGORY,
    PROVIDER_CATEGORY_EXT,
)
from hub.formats.dates import parse_range
from hub.formats.outcome import FhirError

URA_SYSTEM = "http://fhir.nl/fhir/NamingSystem/ura"
AGB_SYSTEM = "http://fhir.nl/fhir/NamingSystem/agb-z"
ORG_KEY_SYSTEMS = {URA_SYSTEM: "ura", AGB_SYSTEM: "agb"}
CUSTODIAN_ROLES = frozenset({"CST"})


@dataclass(frozen=True, slots=True)
class Rule:
    consent_id: str
    patient_id: str
    decision: str  # permit | deny
    custodian: str | None
    category: str | None
    actor_org: str | None
    actor_category: str | None
    purpose: str | None
    period_start: datetime | None
    period_end: datetime | None

    @property
    def specificity(self) -> int:
        actor = 20 if self.actor_org else 10 if self.actor_category else 0
        data = 0 if self.category is None else 1 if self.category == BEHANDEL else 2
        return actor + (4 if self.custodian else 0) + data

    def row(self) -> dict[str, Any]:
        return {
            "consent_id": self.consent_id,
            "patient_id": self.patient_id,
            "decision": self.decision,
            "custodian": self.custodian,
            "category": self.category,
            "actor_org": self.actor_org,
            "actor_category": self.actor_category,
            "purpose": self.purpose,
            "period_start": self.period_start,
            "period_end": self.period_end,
            "specificity": self.specificity,
        }


def is_privacy_consent(res: dict[str, Any]) -> bool:
    return res.get("resourceType") == "Consent" and "patient-privacy" in _codes(res.get("scope"))


def org_key_from_identifier(ident: dict[str, Any] | None) -> str | None:
    if not isinstance(ident, dict):
        return None
    prefix = ORG_KEY_SYSTEMS.get(str(ident.get("system")))
    value = ident.get("value")
    return f"{prefix}:{value}" if prefix and isinstance(value, str) and value else None


# resolve(reference string) -> "ura:..." for an Organization the hub holds, or None.
OrgResolver = Callable[[str], "str | None"]


def rules_of(consent: dict[str, Any], resolve_org: OrgResolver) -> list[Rule]:
    """The rules an active patient-privacy Consent states (empty for any other resource)."""
    if not is_privacy_consent(consent) or consent.get("status") != "active":
        return []
    ref = (consent.get("patient") or {}).get("reference")
    if not isinstance(ref, str) or not ref.startswith("Patient/"):
        raise FhirError(422, "invariant", "a privacy Consent must name its patient (Patient/[id])", "Consent.patient")
    patient_id = ref.split("/")[1]
    consent_id = str(consent.get("id"))
    provider_categories = [
        c.get("code")
        for ext in consent.get("extension") or []
        if ext.get("url") == PROVIDER_CATEGORY_EXT
        for c in ((ext.get("valueCodeableConcept") or {}).get("coding") or [])
        if c.get("system") == PROVIDER_CATEGORY and c.get("code")
    ]
    categories = _data_categories(consent.get("category"))
    out: list[Rule] = []
    root = consent.get("provision") or {}
    base = _Scope(patient_id, consent_id, categories, provider_categories, [], [], [], (None, None), "deny")
    _collect(root, base, resolve_org, out, "Consent.provision")
    return out


@dataclass(slots=True)
class _Scope:
    patient_id: str
    consent_id: str
    categories: list[str]
    provider_categories: list[str]
    actor_orgs: list[str]
    custodians: list[str]
    purposes: list[str]
    period: tuple[datetime | None, datetime | None]
    decision: str


def _collect(prov: dict[str, Any], inherited: _Scope, resolve_org: OrgResolver, out: list[Rule], path: str) -> None:
    decision = prov.get("type") or inherited.decision
    if decision not in ("permit", "deny"):
        raise FhirError(422, "value", f"provision.type must be permit or deny, not {decision!r}", f"{path}.type")
    custodians: list[str] = []
    actors: list[str] = []
    for n, actor in enumerate(prov.get("actor") or []):
        key = _actor_org(actor.get("reference") or {}, resolve_org)
        if key is None:
            raise FhirError(
                422,
                "value",
                "a consent actor must be an Organization the hub knows, or carry its URA or AGB identifier",
                f"{path}.actor[{n}].reference",
            )
        (custodians if _codes(actor.get("role")) & CUSTODIAN_ROLES else actors).append(key)
    codes = _data_categories([prov["code"]] if isinstance(prov.get("code"), dict) else prov.get("code"))
    period = prov.get("period") or {}
    scope = _Scope(
        inherited.patient_id,
        inherited.consent_id,
        codes or inherited.categories,
        inherited.provider_categories,
        actors or inherited.actor_orgs,
        custodians or inherited.custodians,
        [p.get("code") for p in prov.get("purpose") or [] if p.get("code")] or inherited.purposes,
        (
            _instant(period.get("start"), f"{path}.period.start", 0) or inherited.period[0],
            _instant(period.get("end"), f"{path}.period.end", 1) or inherited.period[1],
        ),
        decision,
    )
    # One named consulting organisation is more specific than the categories beside it: each is a rule.
    consulting: list[tuple[str | None, str | None]] = [(o, None) for o in scope.actor_orgs]
    consulting += [(None, c) for c in scope.provider_categories if not scope.actor_orgs]
    anything: list[str | None] = [None]
    for (org, cat), custodian, data, purpose in product(
        consulting or [(None, None)],
        scope.custodians or anything,
        scope.categories or anything,
        scope.purposes or anything,
    ):
        out.append(
            Rule(
                scope.consent_id,
                scope.patient_id,
                decision,
                custodian,
                data,
                org,
                cat,
                purpose,
                scope.period[0],
                scope.period[1],
            )
        )
    for n, nested in enumerate(prov.get("provision") or []):
        _collect(nested, scope, resolve_org, out, f"{path}.provision[{n}]")


def _actor_org(ref: dict[str, Any], resolve_org: OrgResolver) -> str | None:
    key = org_key_from_identifier(ref.get("identifier"))
    if key is None and isinstance(ref.get("reference"), str):
        key = resolve_org(ref["reference"])
    return key


def _data_categories(concepts: Any) -> list[str]:
    out = []
    for cc in concepts or []:
        for c in (cc or {}).get("coding") or []:
            if c.get("system") in (GEGEVENSCATEGORIE, HUB_CATEGORY) and c.get("code") in KNOWN:
                out.append(c["code"])
    return list(dict.fromkeys(out))


def _codes(concept: Any) -> set[str]:
    concepts = concept if isinstance(concept, list) else [concept]
    return {c.get("code") for cc in concepts if isinstance(cc, dict) for c in cc.get("coding") or []}


def _instant(value: Any, path: str, end: int) -> datetime | None:
    if not isinstance(value, str):
        return None
    return parse_range(value, path)[end]
