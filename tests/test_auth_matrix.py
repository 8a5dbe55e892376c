"""A generated access-control matrix: token kind x scope x interaction x resource type -> status.

Every route of the FHIR API is tried with every kind of token. The expected answer comes from
`expected()` below: a plain restatement of the SMART App Launch v2 permission table and the hub's
own stricter rules, written here without calling hub.auth.scopes.

    c  create   type-level create
    r  read     read, vread, instance history
    u  update   update, patch
    d  delete   delete
    s  search   type, system and compartment search; type and system history
    SMART v1:   read = rs, write = cud, * = cruds

The hub's rules on top of SMART:
  - update-as-create needs c as well as u (SMART lets a server allow it with u alone);
  - a conditional create / update / patch / delete searches, so it needs s as well;
  - system history needs s on every type (`*`); a system search shows only the types with s;
  - a chain or _has looks only into the types the token may search (it finds nothing elsewhere); an
    included resource is shown only when the token may read or search its type;
  - $everything needs r on Patient (type level: r and s); $validate of a resource in the body needs
    only a valid token, of a stored instance r on its type;
  - a token bound to a patient (PGO) counts only its patient/ scopes, any other token only its
    system/ and user/ ones; a patient-bound token never reads type or system history, never creates
    a Patient, and another patient's data looks like 404 (scopes are checked first: 403);
  - metadata is public; everything else without a valid token is 401 with a WWW-Authenticate.

The hub is seeded once per module; every case that writes gets its own target resource, and every
case checks that nothing was written when it was refused (and something when it was allowed).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from conftest import BASE, ORIGIN, empty, system_client
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from hub.app import Services, create_app
from hub.config import Settings
from hub.store.database import Database
from hub.store.tables import metadata, resource

FHIR = "application/fhir+json"
TYPES = ("Patient", "Observation", "Practitioner")
SHARED = {"Patient": "pa", "Observation": "oa", "Practitioner": "dr"}  # read-only targets (patient pa)
PRACTITIONER = {"system": "http://fhir.nl/fhir/NamingSystem/uzi-nr-pers", "id": "999300001", "role": "01.015"}


# -- token kinds ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Token:
    name: str
    scope: str | None  # None: no Authorization header at all
    patient_bound: bool = False
    practitioner: bool = False
    forged: bool = False  # a real token whose payload was changed (signature no longer matches)


TOKENS = [
    Token("none", None),
    Token("forged", "system/Patient.rs", forged=True),
    Token("sys-Patient.rs", "system/Patient.rs"),
    Token("sys-all.cruds", "system/*.cruds"),
    Token("sys-Observation.c", "system/Observation.c"),
    Token("sys-Patient+Observation.rs", "system/Patient.rs system/Observation.rs"),
    Token("sys-mixed", "system/Observation.rs system/Practitioner.cud system/Patient.ru"),
    Token("sys-v1-Patient.read", "system/Patient.read"),
    Token("sys-v1-all.write", "system/*.write"),
    Token("sys-v1-all.all", "system/*.*"),
    Token("sys-holding-patient-scopes", "patient/*.cruds"),
    Token("user-all.rs", "user/*.rs", practitioner=True),
    Token("user-Observation.cruds", "user/Observation.cruds", practitioner=True),
    Token("pat-all.rs", "patient/*.rs", patient_bound=True),
    Token("pat-Observation.c", "patient/Observation.c", patient_bound=True),
    Token("pat-all.cruds", "patient/*.cruds", patient_bound=True),
    Token("pat-v1-Observation.read", "patient/Observation.read", patient_bound=True),
    Token("pat-holding-system-scopes", "system/*.cruds", patient_bound=True),
]


def grants(token: Token) -> set[tuple[str, str]]:
    """(type or *, letter) pairs the token's usable scopes grant."""
    usable = {"patient"} if token.patient_bound else {"system", "user"}
    out: set[tuple[str, str]] = set()
    for item in (token.scope or "").split():
        context, _, rest = item.partition("/")
        rtype, _, perms = rest.partition(".")
        letters = {"read": "rs", "write": "cud", "*": "cruds"}.get(perms, perms)
        if context in usable:
            out |= {(rtype, letter) for letter in letters}
    return out


def may(token: Token, rtype: str, letters: str) -> bool:
    g = grants(token)
    return all((rtype, x) in g or ("*", x) in g for x in letters)


# -- routes ---------------------------------------------------------------------------------------

# What each interaction needs on the URL's type (SMART table + the hub's rules above).
NEEDS = {
    "read": "r", "vread": "r", "history-instance": "r", "validate-instance": "r",
    "update": "u", "patch": "u", "update-as-create": "uc", "delete": "d", "create": "c",
    "cond-create": "cs", "cond-update": "us", "cond-patch": "us", "cond-delete": "ds",
    "history-type": "s", "search": "s", "search-post": "s", "search-compartment": "s",
    "search-system": "s", "search-system-post": "s", "search-include": "s", "search-revinclude": "s",
    "validate": "",
}  # fmt: skip
SUCCESS = {
    "read": 200, "vread": 200, "history-instance": 200, "validate-instance": 200, "update": 200,
    "patch": 200, "update-as-create": 201, "delete": 204, "create": 201, "cond-create": 201,
    "cond-update": 200, "cond-patch": 200, "cond-delete": 204, "history-type": 200, "search": 200,
    "search-post": 200, "search-compartment": 200, "search-system": 200, "search-system-post": 200,
    "search-include": 200, "search-revinclude": 200, "validate": 200, "search-chain": 200,
    "search-has": 200, "search-system-has": 200, "everything": 200, "everything-type": 200, "history-system": 200,
    "search-system-all": 200, "metadata": 200,
}  # fmt: skip
PER_TYPE = [
    "read", "vread", "history-instance", "update", "update-as-create", "patch", "delete", "create",
    "cond-create", "cond-update", "cond-patch", "cond-delete", "history-type", "search", "search-post",
    "search-system", "search-system-post", "validate", "validate-instance",
    "batch-read", "batch-search", "batch-create", "batch-update", "batch-patch", "batch-delete",
    "tx-read", "tx-create", "tx-update", "tx-patch", "tx-delete", "tx-cond-create", "tx-cond-update",
]  # fmt: skip
ONLY = {  # routes that exist for some types only ("" = system level)
    "search-compartment": ("Patient", "Observation"),
    "search-include": ("Observation",),
    "search-chain": ("Observation",),
    "search-revinclude": ("Patient",),
    "search-has": ("Patient",),
    "search-system-has": ("Patient",),
    "everything": ("Patient",),
    "everything-type": ("Patient",),
    "history-system": ("",),
    "search-system-all": ("",),
    "metadata": ("",),
}
# Another patient's data, for patient-bound tokens (the reads are in tests/test_auth_patient.py).
OTHER = ["other-update", "other-patch", "other-delete", "other-cond-update", "other-cond-patch",
         "other-cond-delete", "other-validate-instance", "other-compartment"]  # fmt: skip
# Routes that change an existing resource get one of their own, named w<n>.
OWN_TARGET = {"update", "patch", "delete", "cond-update", "cond-patch", "cond-delete"}
CREATES = {"create", "cond-create"}


def base(route: str) -> str:
    for prefix in ("batch-", "tx-", "other-"):
        if route.startswith(prefix):
            return route[len(prefix) :]
    return route


@dataclass(frozen=True)
class Case:
    n: int
    token: Token
    route: str
    rtype: str  # "" for system-level routes

    @property
    def target(self) -> str:
        if self.route.startswith("other-"):
            return ""
        return f"w{self.n}" if base(self.route) in OWN_TARGET or base(self.route) == "update-as-create" else ""

    @property
    def home(self) -> str:
        """The patient a patient-bound token is bound to: its own Patient for Patient writes."""
        if self.rtype == "Patient" and self.target and not self.route.startswith("other-"):
            return self.target
        return "pa"

    @property
    def writes(self) -> bool:
        b = base(self.route)
        return b in OWN_TARGET or b in CREATES or b == "update-as-create"

    def __str__(self) -> str:
        return f"{self.token.name}:{self.route}:{self.rtype or 'system'}"


def _cases() -> list[Case]:
    out: list[Case] = []
    for token in TOKENS:
        routes = [(r, t) for r in PER_TYPE for t in TYPES]
        routes += [(r, t) for r, types in ONLY.items() for t in types]
        if token.patient_bound:
            routes += [(r, "Observation") for r in OTHER]
        for route, rtype in routes:
            out.append(Case(len(out), token, route, rtype))
    return out


CASES = _cases()


# -- expected outcome -----------------------------------------------------------------------------


def expected(case: Case) -> int:
    """The status of the interaction itself (for a batch: of its one entry)."""
    t, route, rt = case.token, base(case.route), case.rtype
    if route == "metadata":
        return 200
    if t.scope is None or t.forged:
        return 401
    if route == "history-system":
        ok = may(t, "*", "s")
    elif route == "search-system-all":
        ok = any(letter == "s" for _, letter in grants(t))
    elif route == "everything":
        ok = may(t, "Patient", "r")
    elif route == "everything-type":
        ok = may(t, "Patient", "rs")
    elif route == "search-chain":
        ok = may(t, "Observation", "s")
    elif route in ("search-has", "search-system-has"):
        ok = may(t, "Patient", "s")
    elif route == "compartment":  # other-compartment: Patient/pb/Observation
        ok = may(t, "Observation", "s")
    else:
        ok = may(t, rt, NEEDS[route])
    if not ok:
        return 403
    if t.patient_bound:
        if route in ("history-type", "history-system", "everything-type"):
            return 403
        if rt == "Patient" and route in CREATES:
            return 403  # a new Patient is never the token's own patient
        if case.route.startswith("other-"):
            return 204 if route == "cond-delete" else 404  # a conditional delete simply matches nothing
    return SUCCESS[route]


# -- requests -------------------------------------------------------------------------------------


def body(rtype: str, rid: str | None = None, subject: str = "pa", **extra: Any) -> dict[str, Any]:
    res: dict[str, Any] = {"resourceType": rtype}
    if rid:
        res["id"] = rid
    if rtype == "Patient":
        res.update(name=[{"family": "Jansen"}], gender="male")
    elif rtype == "Observation":
        res.update(status="final", code={"text": "bloeddruk"}, subject={"reference": f"Patient/{subject}"})
    else:
        res.update(name=[{"family": "Arts"}])
    res.update(extra)
    return res


PATCH_DOC = [{"op": "add", "path": "/language", "value": "nl"}]
PATCH_BINARY = {
    "resourceType": "Binary",
    "contentType": "application/json-patch+json",
    "data": base64.b64encode(json.dumps(PATCH_DOC).encode()).decode(),
}


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str] = field(default_factory=dict)
    json_body: Any = None
    form: dict[str, str] | None = None
    raw: bytes | None = None


def entry(case: Case) -> dict[str, Any]:
    """The one entry of a batch or transaction case."""
    route, rt, w = base(case.route), case.rtype, case.target
    shared = SHARED[rt]
    if route == "read":
        return {"request": {"method": "GET", "url": f"{rt}/{shared}"}}
    if route == "search":
        return {"request": {"method": "GET", "url": f"{rt}?_id={shared}"}}
    if route == "create":
        return {"resource": body(rt), "request": {"method": "POST", "url": rt}}
    if route == "cond-create":
        return {"resource": body(rt), "request": {"method": "POST", "url": rt, "ifNoneExist": f"_id=none{case.n}"}}
    if route == "update":
        return {"resource": body(rt, w, language="nl"), "request": {"method": "PUT", "url": f"{rt}/{w}"}}
    if route == "cond-update":
        return {"resource": body(rt, w, language="nl"), "request": {"method": "PUT", "url": f"{rt}?_id={w}"}}
    if route == "patch":
        return {"resource": PATCH_BINARY, "request": {"method": "PATCH", "url": f"{rt}/{w}"}}
    if route == "delete":
        return {"request": {"method": "DELETE", "url": f"{rt}/{w}"}}
    raise AssertionError(case)


def request_for(case: Case) -> Request:
    route, rt, w, n = case.route, case.rtype, case.target, case.n
    shared = SHARED.get(rt, "")
    json_h = {"Content-Type": FHIR}
    if route.startswith(("batch-", "tx-")):
        kind = "batch" if route.startswith("batch-") else "transaction"
        return Request("POST", "/fhir", json_h, {"resourceType": "Bundle", "type": kind, "entry": [entry(case)]})
    other = {"resourceType": "Observation", "id": "ob"}
    table: dict[str, Request] = {
        "read": Request("GET", f"/fhir/{rt}/{shared}"),
        "vread": Request("GET", f"/fhir/{rt}/{shared}/_history/1"),
        "history-instance": Request("GET", f"/fhir/{rt}/{shared}/_history"),
        "update": Request("PUT", f"/fhir/{rt}/{w}", json_h, body(rt, w, language="nl")),
        "update-as-create": Request("PUT", f"/fhir/{rt}/{w}", json_h, body(rt, w)),
        "patch": Request("PATCH", f"/fhir/{rt}/{w}", {"Content-Type": "application/json-patch+json"}, PATCH_DOC),
        "delete": Request("DELETE", f"/fhir/{rt}/{w}"),
        "create": Request("POST", f"/fhir/{rt}", json_h, body(rt)),
        "cond-create": Request("POST", f"/fhir/{rt}", {**json_h, "If-None-Exist": f"_id=none{n}"}, body(rt)),
        "cond-update": Request("PUT", f"/fhir/{rt}?_id={w}", json_h, body(rt, w, language="nl")),
        "cond-patch": Request(
            "PATCH", f"/fhir/{rt}?_id={w}", {"Content-Type": "application/json-patch+json"}, PATCH_DOC
        ),
        "cond-delete": Request("DELETE", f"/fhir/{rt}?_id={w}"),
        "history-type": Request("GET", f"/fhir/{rt}/_history"),
        "search": Request("GET", f"/fhir/{rt}?_id={shared}"),
        "search-post": Request("POST", f"/fhir/{rt}/_search", form={"_id": shared}),
        "search-compartment": Request("GET", f"/fhir/Patient/pa/{rt}"),
        "search-system": Request("GET", f"/fhir?_type={rt}"),
        "search-system-post": Request("POST", "/fhir/_search", form={"_type": rt}),
        "search-include": Request("GET", "/fhir/Observation?_id=oa&_include=Observation:subject"),
        "search-revinclude": Request("GET", "/fhir/Patient?_id=pa&_revinclude=Observation:subject"),
        "search-chain": Request("GET", "/fhir/Observation?subject:Patient.family=Jansen"),
        "search-has": Request("GET", "/fhir/Patient?_has:Observation:subject:status=final"),
        "search-system-has": Request("GET", "/fhir?_type=Patient&_has:Observation:subject:status=final"),
        "validate": Request("POST", f"/fhir/{rt}/$validate", json_h, body(rt)),
        "validate-instance": Request("GET", f"/fhir/{rt}/{shared}/$validate"),
        "everything": Request("GET", "/fhir/Patient/pa/$everything"),
        "everything-type": Request("GET", "/fhir/Patient/$everything?_id=pa"),
        "history-system": Request("GET", "/fhir/_history"),
        "search-system-all": Request("GET", "/fhir"),
        "metadata": Request("GET", "/fhir/metadata"),
        "other-update": Request("PUT", "/fhir/Observation/ob", json_h, body("Observation", "ob")),
        "other-patch": Request(
            "PATCH", "/fhir/Observation/ob", {"Content-Type": "application/json-patch+json"}, PATCH_DOC
        ),
        "other-delete": Request("DELETE", "/fhir/Observation/ob"),
        # No match in the token's compartment, so this would be an update-as-create of Observation/ob.
        "other-cond-update": Request("PUT", "/fhir/Observation?_id=ob", json_h, body("Observation", "ob")),
        "other-cond-patch": Request(
            "PATCH", "/fhir/Observation?_id=ob", {"Content-Type": "application/json-patch+json"}, PATCH_DOC
        ),
        "other-cond-delete": Request("DELETE", "/fhir/Observation?_id=ob"),
        "other-validate-instance": Request("GET", "/fhir/Observation/ob/$validate"),
        "other-compartment": Request("GET", "/fhir/Patient/pb/Observation"),
    }
    assert other  # (documentation: the other patient's observation is Observation/ob)
    return table[route]


# -- the hub, seeded once per module --------------------------------------------------------------


@dataclass
class Hub:
    services: Services
    http: TestClient
    tokens: dict[tuple[str, str], str] = field(default_factory=dict)

    def token(self, case: Case) -> str | None:
        t = case.token
        if t.scope is None:
            return None
        key = (t.name, case.home if t.patient_bound else "")
        if key not in self.tokens:
            client = system_client(f"matrix-{t.name}", t.scope)
            issued = self.services.tokens.issue(
                client,
                issuer=ORIGIN,
                audience=BASE,
                scope=t.scope,
                patient_id=case.home if t.patient_bound else None,
                practitioner=PRACTITIONER if t.practitioner else None,
            ).token
            if t.forged:
                head, payload, sig = issued.split(".")
                claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
                claims["scope"] = "system/*.cruds"
                forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
                issued = f"{head}.{forged}.{sig}"
            self.tokens[key] = issued
        return self.tokens[key]

    def rows(self) -> int:
        with self.services.db.transaction() as conn:
            return int(conn.execute(select(func.count()).select_from(resource)).scalar_one())


def seed_bundle() -> dict[str, Any]:
    resources = [
        body("Patient", "pa"),
        body("Patient", "pb", name=[{"family": "Bakker"}]),
        body("Observation", "oa"),
        body("Observation", "ob", subject="pb"),
        body("Practitioner", "dr"),
    ]
    for case in CASES:
        if case.target and base(case.route) != "update-as-create":
            resources.append(body(case.rtype, case.target))
    entries = [
        {"resource": r, "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}} for r in resources
    ]
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


@pytest.fixture(scope="module")
def hub(database: Database, signing_keys: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    empty(database)
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("matrix"),
        database_url=str(database.engine.url),
        max_body_bytes=2 * 1024 * 1024,
    )
    services = Services(settings, database)
    with TestClient(create_app(services=services), base_url=ORIGIN) as http:
        h = Hub(services, http)
        admin = h.token(Case(-1, Token("seed", "system/*.cruds"), "seed", ""))
        r = http.post("/fhir", json=seed_bundle(), headers={"Content-Type": FHIR, "Authorization": f"Bearer {admin}"})
        assert r.status_code == 200, r.text[:500]
        if database.dialect == "postgresql":  # fresh tables have no statistics: chain plans go quadratic
            with database.transaction(write=True) as conn:
                conn.exec_driver_sql(f"ANALYZE {', '.join(t.name for t in metadata.sorted_tables)}")
        yield h


# -- the matrix -----------------------------------------------------------------------------------


def _send(h: Hub, case: Case) -> Any:
    req = request_for(case)
    headers = dict(req.headers)
    token = h.token(case)
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    if req.form is not None:
        return h.http.request(req.method, req.path, data=req.form, headers=headers)
    content = json.dumps(req.json_body).encode() if req.json_body is not None else None
    return h.http.request(req.method, req.path, content=content, headers=headers)


def _check_error(status: int, outcome: dict[str, Any], where: str) -> None:
    assert outcome.get("resourceType") == "OperationOutcome", where
    codes = {i.get("code") for i in outcome.get("issue", [])}
    if status == 403:
        assert "forbidden" in codes, (where, outcome)
    elif status == 404:
        assert "not-found" in codes, (where, outcome)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_matrix(hub: Hub, case: Case) -> None:
    want = expected(case)
    before = hub.rows()
    r = _send(hub, case)
    where = f"{case} -> {r.status_code} {r.text[:300]}"
    outcome_status = want
    if case.route.startswith("batch-") and want != 401:
        assert r.status_code == 200, where
        response = r.json()["entry"][0]["response"]
        got = int(response["status"].split()[0])
        assert got == want, where
        if want >= 400:
            _check_error(want, response["outcome"], where)
    else:
        if case.route.startswith("tx-") and want < 400:
            outcome_status = 200
        assert r.status_code == outcome_status, where
        if case.route.startswith("tx-") and want < 400:
            assert int(r.json()["entry"][0]["response"]["status"].split()[0]) == want, where
        if outcome_status >= 400:
            _check_error(outcome_status, r.json(), where)
        if outcome_status == 401:
            assert r.headers["WWW-Authenticate"].startswith("Bearer "), where
    changed = hub.rows() - before
    if case.writes and want < 300 and not case.route.startswith("other-"):
        assert changed > 0, f"allowed but nothing written: {where}"
    else:
        assert changed == 0, f"refused or a read, yet {changed} rows were written: {where}"
    if want == 200 and base(case.route) in ("search-include", "search-revinclude"):
        _check_includes(case, r.json())
    if want == 200 and base(case.route) in ("search-chain", "search-has", "search-system-has"):
        through = "Patient" if case.route == "search-chain" else "Observation"
        found = any(e["search"]["mode"] == "match" for e in r.json().get("entry", []))
        assert found == may(case.token, through, "s"), f"{case}: the chain through {through} found {found}"


def _check_includes(case: Case, bundle: dict[str, Any]) -> None:
    """Included resources only of types the token may read or search."""
    included = {e["resource"]["resourceType"] for e in bundle.get("entry", []) if e["search"]["mode"] == "include"}
    other = "Patient" if case.route == "search-include" else "Observation"
    visible = may(case.token, other, "r") or may(case.token, other, "s")
    assert included == ({other} if visible else set()), f"{case}: included {included}"


def test_the_matrix_covers_every_route_and_outcome() -> None:
    """The generator itself: every route with every token kind, and both allowed and refused cases."""
    outcomes = {(base(c.route), expected(c)) for c in CASES}
    for route in SUCCESS:
        assert (route, 401) in outcomes or route == "metadata", route
        assert (route, SUCCESS[route]) in outcomes, route
        assert route == "metadata" or route == "validate" or (route, 403) in outcomes, route
    assert len(CASES) > 1000
