"""`hub serve --demo`: the region and its systems' clients, idempotent, usable at once."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

from conftest import ORIGIN
from fastapi.testclient import TestClient
from joserfc import jwt
from joserfc.jwk import ECKey

from hub.app import Services, create_app
from hub.auth import clients
from hub.demo.seed import load_demo


def test_demo_seed_is_idempotent_and_its_clients_can_log_in(services: Services) -> None:
    first = load_demo(services)
    assert "94 new" in first
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
