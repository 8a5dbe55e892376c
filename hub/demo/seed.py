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
    result = services.pipeline.run(
        Interaction(
            TRANSACTION,
            body=bundle,
            principal=Principal(kind="local", client_id="hub demo"),
            base_url=base_url,
            prefer_return="minimal",
        )
    )
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
