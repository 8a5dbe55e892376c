"""Seeding the demo region: one idempotent transaction through the normal pipeline, plus a
registered client for each demo organisation's system so a new user can get a token at once.

Each demo system gets an EC P-384 key pair: the public half is registered, the private half is
written to `<data dir>/demo-clients/<name>.jwk` (mode 0600) so the full private_key_jwt flow can
be tried; `hub token --client <name>` works without it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from joserfc.jwk import ECKey

from hub.auth import clients
from hub.pipeline import TRANSACTION, Interaction, Principal

# (client name, organisation id in the demo bundle, organisation type, scopes)
DEMO_SYSTEMS = [
    ("demo-hix", "demo-hospital", "hospital", "system/*.cruds"),
    ("demo-hapicom", "demo-hap", "hap", "system/*.cruds"),
    ("demo-his-vijverhof", "demo-gp-vijverhof", "gp", "system/*.cruds"),
    ("demo-his-haagse-duinen", "demo-gp-haagse-duinen", "gp", "system/*.cruds"),
    ("demo-vvt-ecd", "demo-vvt", "vvt", "system/*.rs system/Task.cru"),
    ("demo-apotheek", "demo-pharmacy", "pharmacy", "system/*.rs"),
]
DEMO_PGO = ("demo-pgo", "patient/*.rs patient/Observation.c offline_access", "http://127.0.0.1:8765/callback")


def load_demo(services: Any, base_url: str = "http://localhost:8080/fhir") -> str:
    from hub.demo.region import demo_bundle

    bundle = demo_bundle()
    bundle["entry"] += [
        {"resource": c, "request": {"method": "PUT", "url": f"Consent/{c['id']}"}} for c in demo_consents(bundle)
    ]
    result = services.pipeline.run(
        Interaction(
            TRANSACTION,
            body=bundle,
            principal=Principal(kind="local", client_id="hub demo"),
            base_url=base_url,
            prefer_return="minimal",
        )
    )
    record_holders(services, bundle)
    entries = (result.resource or {}).get("entry", [])
    created = sum(1 for e in entries if e["response"]["status"].startswith("201"))
    registered = register_demo_clients(services, bundle)
    return (
        f"demo region: {len(entries)} resources ({created} new, {len(entries) - created} already there); "
        f"demo clients: {', '.join(registered) or 'already registered'}"
    )


def _identifiers(org: dict[str, Any]) -> dict[str, str]:
    out = {}
    for ident in org.get("identifier", []):
        system = ident.get("system", "")
        if system.endswith("/ura"):
            out["ura"] = ident["value"]
        elif system.endswith("/agb-z"):
            out["agb"] = ident["value"]
    return out


def register_demo_clients(services: Any, bundle: dict[str, Any]) -> list[str]:
    orgs = {
        e["resource"]["id"]: e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Organization"
    }
    key_dir = Path(services.settings.data_dir) / "demo-clients"
    registered = []
    with services.db.transaction(write=True) as conn:
        for name, org_id, org_type, scopes in DEMO_SYSTEMS:
            if clients.get(conn, name) is not None:
                continue
            key = ECKey.generate_key("P-384", parameters={"kid": f"{name}-1"}, private=True)
            _write_private(key_dir / f"{name}.jwk", key.as_dict(private=True))
            ids = _identifiers(orgs[org_id])
            clients.add(
                conn,
                name=name,
                organisation_type=org_type,
                scopes=scopes,
                ura=ids.get("ura"),
                agb=ids.get("agb"),
                jwks={"keys": [key.as_dict(private=False)]},
            )
            registered.append(name)
        name, scopes, redirect = DEMO_PGO
        if clients.get(conn, name) is None:
            clients.add(conn, name=name, organisation_type="pgo", scopes=scopes, redirect_uris=[redirect])
            registered.append(name)
    return registered


def _write_private(path: Path, jwk: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(jwk, fh)


# -- who holds which demo data, and the demo patients' consent choices ------------------------------

GGC = "http://fhir.nl/otv/CodeSystem/gegevenscategorie"
RPZAC = "http://fhir.nl/otv/CodeSystem/raadplegende-zorgaanbiedercategorie"
# Every demo patient but the last consented (Mitz-style) to share treatment data with GPs and HAPs,
# hospitals and pharmacies; the last one did not, so the demo also shows a refusal by default.
DEMO_CONSULTING = (
    ("RPZAC001", "Huisartsen en huisartsenposten"),
    ("RPZAC104", "Ziekenhuizen"),
    ("RPZAC005", "Apotheken"),
)


def demo_consents(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    patients = [e["resource"]["id"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient"]
    return [
        {
            "resourceType": "Consent",
            "id": f"{pid}-toestemming",
            "text": {
                "status": "generated",
                "div": '<div xmlns="http://www.w3.org/1999/xhtml">De patiënt geeft toestemming om behandelgegevens '
                "beschikbaar te stellen aan huisartsen, huisartsenposten, ziekenhuizen en apotheken.</div>",
            },
            "extension": [
                {
                    "url": "http://fhir.nl/StructureDefinition/OTV-ProviderCategory",
                    "valueCodeableConcept": {"coding": [{"system": RPZAC, "code": code, "display": display}]},
                }
                for code, display in DEMO_CONSULTING
            ],
            "status": "active",
            "scope": {
                "coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]
            },
            "category": [{"coding": [{"system": GGC, "code": "GGC002", "display": "Behandelgegevens"}]}],
            "patient": {"reference": f"Patient/{pid}"},
            "provision": {
                "type": "permit",
                "purpose": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "TREAT"}],
            },
        }
        for pid in patients[:-1]
    ]


def record_holders(services: Any, bundle: dict[str, Any]) -> None:
    """Name the organisation holding each demo resource (it always sees it; others need consent):
    the organisation of the first professional role it names, else the patient's GP practice."""
    resources = [e["resource"] for e in bundle["entry"]]
    org_ura = {r["id"]: _identifiers(r).get("ura") for r in resources if r["resourceType"] == "Organization"}
    role_org = {
        r["id"]: r["organization"]["reference"].split("/", 1)[1]
        for r in resources
        if r["resourceType"] == "PractitionerRole" and "organization" in r
    }
    gp_of: dict[str, str] = {}
    for r in resources:
        if r["resourceType"] == "Patient":
            for ref in _references(r.get("generalPractitioner", [])):
                org = _org_of(ref, role_org)
                if org:
                    gp_of[r["id"]] = org
                    break
    indexer = services.indexer
    holders: list[tuple[str, str, str]] = []
    for r in resources:
        patient = indexer.patient_id(r)
        if patient is None:
            continue
        body = {k: v for k, v in r.items() if k not in ("generalPractitioner", "managingOrganization")}
        org = next((o for o in (_org_of(ref, role_org) for ref in _references(body)) if o), None) or gp_of.get(patient)
        ura = org_ura.get(org or "")
        if ura:
            holders.append((r["resourceType"], r["id"], f"ura:{ura}"))
    from sqlalchemy import select

    from hub.store.tables import resource_author

    with services.db.transaction(write=True) as conn:
        known = {tuple(row) for row in conn.execute(select(resource_author))}
        new = [dict(res_type=t, res_id=i, org=o) for t, i, o in holders if (t, i, o) not in known]
        if new:
            conn.execute(resource_author.insert(), new)


def _org_of(ref: str, role_org: dict[str, str]) -> str | None:
    kind, _, rid = ref.partition("/")
    if kind == "PractitionerRole":
        return role_org.get(rid)
    return rid if kind == "Organization" else None


def _references(node: Any) -> list[str]:
    out: list[str] = []
    if isinstance(node, dict):
        ref = node.get("reference")
        if isinstance(ref, str):
            out.append(ref)
        for v in node.values():
            out += _references(v)
    elif isinstance(node, list):
        for v in node:
            out += _references(v)
    return out
