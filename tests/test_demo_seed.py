"""`hub serve --demo`: the region and its systems' clients, idempotent, usable at once."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

from conftest import ORIGIN, token_for
from fastapi.testclient import TestClient
from joserfc import jwt
from joserfc.jwk import ECKey
from sqlalchemy import func, select

from hub.app import Services, create_app
from hub.auth import clients
from hub.demo.region import demo_bundle
from hub.demo.seed import demo_consents, load_demo
from hub.store.tables import resource


def test_demo_seed_is_idempotent_and_its_clients_can_log_in(services: Services) -> None:
    first = load_demo(services)
    assert "101 new" in first  # 94 resources of the region + 7 consents
    second = load_demo(services)
    assert "0 new" in second and "already registered" in second
    with services.db.transaction() as conn:
        hix = clients.get(conn, "demo-hix")
    assert hix is not None and hix.ura == "99900001" and hix.organisation_type == "hospital"

    key_file = Path(services.settings.data_dir) / "demo-clients" / "demo-hix.jwk"
    assert oct(key_file.stat().st_mode)[-3:] == "600"
    key = ECKey.import_key(json.loads(key_file.read_text()))
    claims = {
        "iss": "demo-hix",
        "sub": "demo-hix",
        "aud": f"{ORIGIN}/auth/token",
        "exp": int(time.time()) + 120,
        "jti": uuid.uuid4().hex,
    }
    assertion = jwt.encode({"alg": "ES384", "kid": key.kid}, claims, key, algorithms=["ES384"])
    with TestClient(create_app(services=services), base_url=ORIGIN) as c:
        form = {
            "grant_type": "client_credentials",
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": assertion,
        }
        token = c.post("/auth/token", data=form).json()["access_token"]
        r = c.get("/fhir/Patient", params={"_summary": "count"}, headers={"Authorization": f"Bearer {token}"})
        assert r.json()["total"] == 8


def test_demo_consents_and_data_holders(services: Services) -> None:
    """The demo shows consent at work: the HAP sees the GP's data of patients who consented, not of
    the one who did not; each practice sees what it holds; the VVT (no consent for VVT) sees none."""
    load_demo(services)
    with services.db.transaction() as conn:
        hap, gp, vvt = (clients.get(conn, n) for n in ("demo-hapicom", "demo-his-vijverhof", "demo-vvt-ecd"))
    assert hap is not None and gp is not None and vvt is not None

    def conditions(client: clients.Client) -> dict[str, int]:
        headers = {"Authorization": f"Bearer {token_for(services, client)}"}
        with TestClient(create_app(services=services), base_url=ORIGIN, headers=headers) as c:
            bundle = c.get("/fhir/Condition", params={"_count": 200}).json()
        counts: dict[str, int] = {}
        for e in bundle.get("entry", []):
            pid = e["resource"]["subject"]["reference"]
            counts[pid] = counts.get(pid, 0) + 1
        return counts

    with services.db.transaction() as conn:
        total = conn.execute(select(func.count()).select_from(resource).where(
            resource.c.res_type == "Condition", resource.c.is_current)).scalar_one()  # fmt: skip
        refused = [c["id"] for c in demo_consents(demo_bundle())]
    seen_by_hap = conditions(hap)
    seen_by_gp = conditions(gp)
    assert sum(seen_by_hap.values()) > 0 and sum(seen_by_hap.values()) < total
    assert seen_by_gp  # the practice sees what it holds
    assert conditions(vvt) == {}
    last = [e["resource"]["id"] for e in demo_bundle()["entry"] if e["resource"]["resourceType"] == "Patient"][-1]
    with services.db.transaction() as conn:
        of_last = (resource.c.res_type == "Condition", resource.c.patient_id == last, resource.c.is_current)
        held = conn.execute(select(func.count()).select_from(resource).where(*of_last)).scalar_one()
    assert held > 0 and f"Patient/{last}" not in seen_by_hap
    assert f"{last}-toestemming" not in refused
