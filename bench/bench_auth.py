"""Benchmark: what the token check costs per request, against the same requests without it.

    .venv/bin/python bench/bench_auth.py [--database URL] [--rounds N] [--block N]

A fresh database (SQLite file in a temporary directory; `--database postgresql://...` a private
schema) gets 300 patients with two observations each. The same FHIR requests are then sent to the
ASGI app in this process (called directly: no sockets, no HTTP client), through four set-ups that
share the database:

  none      a stand-in TokenService that returns a pre-made principal, and no Authorisation or
            RevokedTokens step: the request path with no access control at all (the baseline)
  verify    the real bearer check (TokenService.verify, signature checked once, then the cache),
            no Authorisation step
  full      the real bearer check and the pipeline's token steps, token scope system/*.rs
  narrow    the same with scope `system/Patient.rs system/Observation.rs` (not every type: the
            per-resource type check and the search constraint are in play)

The set-ups take turns in blocks of --block requests (reads of Patient/[id] and searches
Observation?subject=Patient/[id], half each), --rounds times; the figure per set-up is the median
block's ms per request, wall and CPU (this process, all threads); "added" is the median over the
rounds of (set-up - none) within the round, with its quartiles. The consent and audit steps are
left out of every set-up (they cost the same in each and only add noise to the difference);
--all-interceptors keeps them.

The end-to-end difference is small beside the request itself, so it is also measured in isolation:
Authorisation.before + after on a READ of Patient/[id] and a SEARCH_TYPE of Observation, minus the
same loop building the Interaction and Context without them. And TokenService.verify on its own:
cold (a token it has not seen: RS256 signature, claims) and cached (the same token again).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "bench")]

from bench_ingest import CpuWatch, describe, fresh_database, machine_note, make_services, quiet_check  # noqa: E402

from hub.app import Services, create_app  # noqa: E402
from hub.auth.clients import Client  # noqa: E402
from hub.auth.enforce import Authorisation  # noqa: E402
from hub.auth.patient_sessions import RevokedTokens  # noqa: E402
from hub.auth.tokens import TokenService  # noqa: E402
from hub.pipeline import READ, SEARCH_TYPE, TRANSACTION, Context, Interaction, Principal, Result  # noqa: E402

HOST = "hub.test"
BASE = f"http://{HOST}/fhir"
TARGET_MS = 0.2  # the token check may add at most this per request
PATIENTS = 300


def client(scope: str) -> Client:
    return Client("bench", "hospital", "99900001", None, scope, None, None, None, (), "active")


class PreMade:
    """Stands in for TokenService: every bearer token is the same, already known principal."""

    def __init__(self, principal: Principal) -> None:
        self.principal = principal

    def verify(self, token: str, audience: str) -> Principal:
        return self.principal


def seed(services: Services) -> list[str]:
    entries: list[dict[str, Any]] = []
    ids = [f"p{n}" for n in range(PATIENTS)]
    for pid in ids:
        entries.append({"resource": {"resourceType": "Patient", "id": pid, "name": [{"family": f"Fam{pid}"}]},
                        "request": {"method": "PUT", "url": f"Patient/{pid}"}})  # fmt: skip
        for k in range(2):
            obs = {"resourceType": "Observation", "id": f"{pid}-o{k}", "status": "final",
                   "code": {"text": "bloeddruk"}, "subject": {"reference": f"Patient/{pid}"}}  # fmt: skip
            entries.append({"resource": obs, "request": {"method": "PUT", "url": f"Observation/{obs['id']}"}})
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
    services.pipeline.run(Interaction(TRANSACTION, body=bundle, principal=Principal(kind="local"), base_url=BASE))
    return ids


async def call(app: Any, path: str, query: str, token: str) -> int:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": [(b"host", HOST.encode()), (b"authorization", f"Bearer {token}".encode())],
        "client": ("127.0.0.1", 40000),
        "server": (HOST, 80),
    }
    status = 0

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    return status


def requests_for(ids: list[str], n: int, rng: random.Random) -> list[tuple[str, str]]:
    out = []
    for k in range(n):
        pid = rng.choice(ids)
        out.append((f"/fhir/Patient/{pid}", "") if k % 2 == 0 else ("/fhir/Observation", f"subject=Patient/{pid}"))
    return out


def run_block(
    loop: asyncio.AbstractEventLoop, app: Any, token: str, reqs: list[tuple[str, str]]
) -> tuple[float, float]:
    """(wall ms, CPU ms) per request over one block."""
    w0, c0 = time.perf_counter(), time.process_time()
    for path, query in reqs:
        status = loop.run_until_complete(call(app, path, query, token))
        if status != 200:
            raise SystemExit(f"GET {path}?{query} answered {status}")
    n = len(reqs)
    return (time.perf_counter() - w0) * 1000 / n, (time.process_time() - c0) * 1000 / n


Samples = dict[str, list[tuple[float, float]]]  # set-up -> (wall, CPU) ms per request, one per round


def without(services: Services, drop: Callable[[Any], bool]) -> Services:
    services.pipeline.interceptors = [i for i in services.pipeline.interceptors if not drop(i)]
    return services


def token_step(i: Any) -> bool:
    return isinstance(i, (Authorisation, RevokedTokens))


def other_step(i: Any) -> bool:
    return type(i).__module__.startswith(("consent.", "hub.audit."))


def bench_requests(db: Any, url: str, tmp: Path, rounds: int, block: int, all_steps: bool) -> Samples:
    keep: Callable[[Any], bool] = (lambda i: False) if all_steps else other_step
    real = without(make_services(db, url, tmp), keep)
    ids = seed(real)
    wide, narrow = "system/*.rs", "system/Patient.rs system/Observation.rs"
    tokens = {
        s: real.tokens.issue(client(s), issuer=f"http://{HOST}", audience=BASE, scope=s).token for s in (wide, narrow)
    }
    bare = without(make_services(db, url, tmp), lambda i: keep(i) or token_step(i))  # no access control
    bare.tokens = PreMade(real.tokens.verify(tokens[wide], BASE))  # type: ignore[assignment]
    verify_only = without(make_services(db, url, tmp), lambda i: keep(i) or token_step(i))
    setups: dict[str, tuple[Any, str]] = {
        "none": (create_app(services=bare), tokens[wide]),
        "verify": (create_app(services=verify_only), tokens[wide]),
        "full": (create_app(services=real), tokens[wide]),
        "narrow": (create_app(services=real), tokens[narrow]),
    }
    loop = asyncio.new_event_loop()
    rng = random.Random(7)
    try:
        for app, token in setups.values():  # warm-up: caches, SQL compilation, the token cache
            run_block(loop, app, token, requests_for(ids, 200, rng))
        samples: Samples = {name: [] for name in setups}
        names = list(setups)
        for r in range(rounds):
            reqs = requests_for(ids, block, rng)
            order = names[r % 4 :] + names[: r % 4]  # no set-up always goes first
            for name in order:
                app, token = setups[name]
                samples[name].append(run_block(loop, app, token, reqs))
    finally:
        loop.close()
    return samples


def paired(samples: Samples, name: str, which: int) -> tuple[float, float, float]:
    """Median and quartiles of (set-up - none) over the rounds: each round's blocks ran back to back,
    so the pairing cancels most of what other processes do to the machine meanwhile."""
    diffs = sorted(s[which] - b[which] for s, b in zip(samples[name], samples["none"], strict=True))
    q = statistics.quantiles(diffs, n=4)
    return statistics.median(diffs), q[0], q[2]


def per_call(fn: Callable[[], Any], n: int) -> float:
    """Median of n single calls, in ms."""
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


def loop_ms(fn: Callable[[], Any], n: int) -> float:
    """ms per call over n calls (for calls too short to time one by one)."""
    t0 = time.process_time()
    for _ in range(n):
        fn()
    return (time.process_time() - t0) * 1000 / n


def bench_interceptor(services: Services, n: int) -> dict[str, float]:
    """CPU ms that Authorisation.before + after add to one interaction, per kind and scope."""
    auth = Authorisation()
    out: dict[str, float] = {}
    with services.db.transaction() as conn:
        repo = services.repository(conn)
        for scope in ("system/*.rs", "system/Patient.rs system/Observation.rs"):
            principal = Principal(kind="system", client_id="bench", scopes=frozenset(scope.split()))
            for kind, rt, rid, params in (
                (READ, "Patient", "p1", []),
                (SEARCH_TYPE, "Observation", None, [("subject", "Patient/p1")]),
            ):

                def build(
                    kind: str = kind, rt: str = rt, rid: Any = rid, params: Any = params, who: Principal = principal
                ) -> Context:
                    i = Interaction(kind, res_type=rt, res_id=rid, params=list(params), principal=who, base_url=BASE)
                    return Context(i, conn, repo, services)

                def checked() -> None:
                    ctx = build()
                    auth.before(ctx)
                    auth.after(ctx, Result(200))

                loop_ms(checked, n // 10)  # warm-up
                out[f"{kind} {rt}, {scope}"] = loop_ms(checked, n) - loop_ms(build, n)
    return out


def bench_verify(services: Services, n: int) -> tuple[float, float, float]:
    """(cold ms, cached ms, issue ms) for TokenService.verify and .issue."""
    svc = TokenService(services.keys)
    t0 = time.perf_counter()
    tokens = [
        svc.issue(client("system/*.rs"), issuer=f"http://{HOST}", audience=BASE, scope="system/*.rs").token
        for _ in range(n)
    ]
    issue_ms = (time.perf_counter() - t0) * 1000 / n
    it = iter(tokens)
    cold = per_call(lambda: svc.verify(next(it), BASE), n)
    cached = per_call(lambda: svc.verify(tokens[0], BASE), n * 20)
    return cold, cached, issue_ms


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--database", help="postgresql://... (default: SQLite in a temporary directory)")
    ap.add_argument("--rounds", type=int, default=40, help="blocks per set-up (default 40)")
    ap.add_argument("--block", type=int, default=100, help="requests per block (default 100)")
    ap.add_argument("--tokens", type=int, default=300, help="distinct tokens for the cold verify (default 300)")
    ap.add_argument("--all-interceptors", action="store_true", help="keep the consent and audit steps")
    args = ap.parse_args()
    print(f"database: {describe(args.database)}")
    quiet_check()
    watch = CpuWatch()
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-auth-")))
        db, url = stack.enter_context(fresh_database(args.database, "auth", tmp))
        figures = bench_requests(db, url, tmp, args.rounds, args.block, args.all_interceptors)
        services = make_services(db, url, tmp)
        isolated = bench_interceptor(services, 20_000)
        cold, cached, issue_ms = bench_verify(services, args.tokens)
    steps = "all pipeline steps" if args.all_interceptors else "without the consent and audit steps"
    print(f"\n{args.rounds} rounds x {args.block} requests per set-up (reads and searches, half each), {steps}\n")
    print("| set-up | wall ms/request | CPU ms/request | added to none, CPU: median [quartiles] |")
    print("|---|---|---|---|")
    for name, s in figures.items():
        w, c = statistics.median(x for x, _ in s), statistics.median(x for _, x in s)
        med, q1, q3 = paired(figures, name, 1)
        print(f"| {name} | {w:.3f} | {c:.3f} | {med:+.3f} [{q1:+.3f}, {q3:+.3f}] |")
    added = paired(figures, "full", 1)[0]
    verdict = "within" if added <= TARGET_MS else "OVER"
    print(f"\ntoken check (full - none), CPU: {added:+.3f} ms/request: {verdict} the target of {TARGET_MS} ms")
    print("\n| Authorisation.before + after, in isolation | CPU ms per interaction |")
    print("|---|---|")
    for name, ms in isolated.items():
        print(f"| {name} | {ms:.4f} |")
    print("\n| TokenService | ms per call |")
    print("|---|---|")
    print(f"| verify, cold (RS256 signature + claims) | {cold:.3f} |")
    print(f"| verify, cached | {cached:.4f} |")
    print(f"| issue (RS256 signature, 3072-bit key) | {issue_ms:.3f} |")
    print(f"\n{machine_note(watch, bool(args.database))}")


if __name__ == "__main__":
    main()
