"""Benchmark: what consent enforcement and the audit trail add to reads and searches.

    .venv/bin/python bench/bench_consent.py [--database URL] [--files N] [--samples N]

A fresh database (SQLite in a temporary directory, or a private PostgreSQL schema) gets the two
`0-*` Synthea files and N patient files (default 5) through `hub.load`, held by a hospital
(`--holder-ura`), and every patient gets a Mitz-style consent permitting treatment data for GPs and
HAPs (RPZAC001). The caller is a GP's system (another organisation), so every request takes the
full consent path: the rules, the custodian and the category, per resource and in SQL.

Requests, one at a time in this process, the arms interleaved so they see the same machine:
  read            Observation/[id], random
  search patient  Observation?patient=[id]&_count=50
  search code     Observation?code=[common LOINC]&_count=50&_total=accurate (across all patients)
Arms: off (scopes only: the ConsentEnforcement and Audit steps taken out of the same pipeline),
consent (consent step in), consent+audit (both). Every patient consented, so all arms return
the same resources. Figures: p50 and mean in ms; "added" is (consent+audit - off) / off at p50,
the issue's target being <= 25 %.
(c) adds throughput: each arm in blocks of back-to-back requests with the audit journal flushed
at the end of each block, so the chaining that a background thread does after the response is
counted in the arm that caused it (interleaved single requests share it among the arms).

Measured twice: (a) in this process (`pipeline.run`, the hub's own work only), and (b) over HTTP:
the same app served by uvicorn in a thread of this process (so the arms can be switched between
requests), the GP's bearer token checked on every request, one keep-alive `http.client`
connection sending the requests one at a time: the latency a client sees, framework included.
"""

from __future__ import annotations

import argparse
import http.client
import random
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "bench")]

from bench_audit import timed  # noqa: E402
from bench_ingest import chosen_files, describe, fresh_database, make_services  # noqa: E402
from bench_read import free_port  # noqa: E402
from sqlalchemy import select  # noqa: E402

from consent.enforce import ConsentEnforcement  # noqa: E402
from hub.app import create_app  # noqa: E402
from hub.audit.interceptor import Audit  # noqa: E402
from hub.auth.clients import Client  # noqa: E402
from hub.load import load_paths  # noqa: E402
from hub.pipeline import READ, SEARCH_TYPE, TRANSACTION, Interaction, Principal  # noqa: E402
from hub.store.tables import idx_token, resource  # noqa: E402

HOLDER_URA = "99900001"
BASE = "http://bench/fhir"
GP = Principal(
    kind="system",
    client_id="bench-his",
    organisation_ura="99900002",
    organisation_type="gp",
    scopes=frozenset({"system/*.rs"}),
)


def consent(pid: str) -> dict[str, object]:
    return {
        "resourceType": "Consent",
        "id": f"toestemming-{pid}"[:64],
        "status": "active",
        "scope": {
            "coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]
        },
        "category": [{"coding": [{"system": "http://fhir.nl/otv/CodeSystem/gegevenscategorie", "code": "GGC002"}]}],
        "extension": [
            {
                "url": "http://fhir.nl/StructureDefinition/OTV-ProviderCategory",
                "valueCodeableConcept": {
                    "coding": [
                        {
                            "system": "http://fhir.nl/otv/CodeSystem/raadplegende-zorgaanbiedercategorie",
                            "code": "RPZAC001",
                        }
                    ]
                },
            }
        ],
        "patient": {"reference": f"Patient/{pid}"},
        "provision": {"type": "permit"},
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--database", help="postgresql://... (default: SQLite in a temporary directory)")
    ap.add_argument("--files", type=int, default=5, help="Synthea patient files to load (default 5)")
    ap.add_argument("--samples", type=int, default=400, help="requests per arm and kind (default 400)")
    args = ap.parse_args(argv)
    print(f"database: {describe(args.database)}")
    with tempfile.TemporaryDirectory() as tmp, fresh_database(args.database, "consent", Path(tmp)) as (db, url):
        services = make_services(db, url, Path(tmp))
        summary = load_paths(services, chosen_files(args.files), progress=False, holder_ura=HOLDER_URA)
        print(f"loaded {summary.line()}")
        with db.transaction() as conn:
            patients = [r[0] for r in conn.execute(select(resource.c.res_id).where(resource.c.res_type == "Patient"))]
            observations = [
                r[0]
                for r in conn.execute(
                    select(resource.c.res_id).where(resource.c.res_type == "Observation", resource.c.is_current)
                )
            ]
            codes = Counter(
                r[0]
                for r in conn.execute(
                    select(idx_token.c.code).where(idx_token.c.res_type == "Observation", idx_token.c.param == "code")
                )
            )
        bundle = {
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [
                {"resource": consent(p), "request": {"method": "PUT", "url": f"Consent/{consent(p)['id']}"}}
                for p in patients
            ],
        }
        services.pipeline.run(Interaction(TRANSACTION, body=bundle, principal=Principal(kind="local"), base_url=BASE))
        common = codes.most_common(1)[0][0]
        print(
            f"{len(patients)} patients with consent, {len(observations)} observations; code {common}: {codes[common]}"
        )

        pipeline = services.pipeline
        full = list(pipeline.interceptors)
        arms = {
            "off": [i for i in full if not isinstance(i, ConsentEnforcement | Audit)],
            "consent": [i for i in full if not isinstance(i, Audit)],
            "consent+audit": full,
        }
        rng = random.Random(11)

        def read() -> object:
            r = pipeline.run(
                Interaction(READ, res_type="Observation", res_id=rng.choice(observations), principal=GP, base_url=BASE)
            )
            assert r.status == 200
            return r

        def by_patient() -> object:
            params = [("patient", rng.choice(patients)), ("_count", "50")]
            return pipeline.run(
                Interaction(SEARCH_TYPE, res_type="Observation", params=params, principal=GP, base_url=BASE)
            )

        def by_code() -> object:
            params = [("code", common), ("_count", "50"), ("_total", "accurate")]
            r = pipeline.run(
                Interaction(SEARCH_TYPE, res_type="Observation", params=params, principal=GP, base_url=BASE)
            )
            assert r.resource is not None and r.resource["total"] == codes[common], r.resource and r.resource["total"]
            return r

        kinds = (("read", read, args.samples), ("search patient", by_patient, args.samples),
                 ("search code", by_code, max(args.samples // 8, 30)))  # fmt: skip
        in_process = run_arms(pipeline, arms, kinds, rng)
        sustained = run_blocks(pipeline, arms, kinds, rng, services.audit.flush)

        # (b) the same requests over HTTP, from a real server in a thread of this process
        port = free_port()
        server = _Server(create_app(services=services), port)
        token = services.tokens.issue(
            GP_CLIENT, issuer=f"http://127.0.0.1:{port}", audience=f"http://127.0.0.1:{port}/fhir", scope="system/*.rs"
        ).token
        conn = http.client.HTTPConnection("127.0.0.1", port)
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/fhir+json"}

        def get(path: str) -> Callable[[], object]:
            def request() -> object:
                conn.request("GET", path, headers=headers)
                response = conn.getresponse()
                body = response.read()
                assert response.status == 200, (response.status, body[:300])
                return body

            return request

        def http_read() -> object:
            return get(f"/fhir/Observation/{rng.choice(observations)}")()

        def http_by_patient() -> object:
            return get(f"/fhir/Observation?patient={rng.choice(patients)}&_count=50")()

        def http_by_code() -> object:
            return get(f"/fhir/Observation?code={common}&_count=50&_total=accurate")()

        http_kinds = (("read", http_read, args.samples), ("search patient", http_by_patient, args.samples),
                      ("search code", http_by_code, max(args.samples // 8, 30)))  # fmt: skip
        over_http = run_arms(pipeline, arms, http_kinds, rng)
        conn.close()
        server.stop()

    report("(a) in the process (pipeline.run)", in_process)
    report(
        "(c) sustained, in the process: ms per request over a block of back-to-back requests of one arm,\n"
        "    the audit journal's chaining (a background thread) included by flushing it at the block's end",
        sustained,
    )
    report("(b) over HTTP (uvicorn, bearer token, keep-alive connection, one request at a time)", over_http)
    return 0


GP_CLIENT = Client(
    client_id="bench-his",
    organisation_type="gp",
    ura="99900002",
    agb=None,
    scopes="system/*.rs",
    jwks=None,
    jwks_url=None,
    secret_hash=None,
    redirect_uris=(),
    status="active",
)


def run_arms(
    pipeline: Any,
    arms: dict[str, list[Any]],
    kinds: tuple[tuple[str, Callable[[], object], int], ...],
    rng: random.Random,
) -> dict[str, dict[str, list[float]]]:
    """Each request kind `samples` times per arm, the arms in a new random order each round."""
    full = pipeline.interceptors
    results: dict[str, dict[str, list[float]]] = {}
    for kind, fn, samples in kinds:
        times: dict[str, list[float]] = {a: [] for a in arms}
        for n in range(samples + 20):
            order = list(arms)
            rng.shuffle(order)
            for arm in order:
                pipeline.interceptors = arms[arm]
                t = timed(fn)
                if n >= 20:
                    times[arm].append(t)
        pipeline.interceptors = full
        results[kind] = times
    return results


def run_blocks(
    pipeline: Any,
    arms: dict[str, list[Any]],
    kinds: tuple[tuple[str, Callable[[], object], int], ...],
    rng: random.Random,
    flush: Callable[[], None],
    rounds: int = 5,
) -> dict[str, dict[str, list[float]]]:
    """Throughput rather than latency: interleaved single requests share the audit drainer's work
    (it runs whenever it wakes) among the arms; here each arm pays its own. Per round and arm, a
    block of requests then a flush; the figure per round is the block's time per request."""
    full = pipeline.interceptors
    results: dict[str, dict[str, list[float]]] = {}
    for kind, fn, samples in kinds:
        block = max(samples // 4, 20)
        times: dict[str, list[float]] = {a: [] for a in arms}
        for _ in range(rounds):
            order = list(arms)
            rng.shuffle(order)
            for arm in order:
                pipeline.interceptors = arms[arm]
                flush()  # start with nothing pending
                t = time.perf_counter()
                for _ in range(block):
                    fn()
                flush()
                times[arm].append((time.perf_counter() - t) * 1000 / block)
        pipeline.interceptors = full
        results[kind] = times
    return results


def report(title: str, results: dict[str, dict[str, list[float]]]) -> None:
    print(f"\n{title}")
    print(f"{'request':15} {'arm':14} {'p50 ms':>8} {'mean ms':>8} {'vs off':>7}")
    for kind, times in results.items():
        base = statistics.median(times["off"])
        for arm, values in times.items():
            p50 = statistics.median(values)
            added = "" if arm == "off" else f"{(p50 - base) / base * 100:+.0f}%"
            print(f"{kind:15} {arm:14} {p50:8.2f} {statistics.mean(values):8.2f} {added:>7}")


class _Server:
    """uvicorn serving `app` in a daemon thread until stop()."""

    def __init__(self, app: Any, port: int) -> None:
        import uvicorn

        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline:
                raise SystemExit("the benchmark's server did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


if __name__ == "__main__":
    sys.exit(main())
