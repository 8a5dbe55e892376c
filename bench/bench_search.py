"""Benchmark: search latency on the Synthea set, beside the bare SQL of the same page, and its growth
from 120 to 1,200 patients.

    .venv/bin/python bench/bench_search.py [--database URL] [--files N] [--samples N] [--scale K]

A fresh database (SQLite in a temporary directory, or a private PostgreSQL schema) gets the two
`0-*` Synthea files and N patient files (default: all 120) through the pipeline, held by a hospital
(the caller, so the consent step takes its author path as it does for a data holder). Then, one
request at a time in this process (`services.pipeline.run`, the same work as over HTTP minus the
framework), for random parameter values:

  token        Observation?code=[a LOINC code]&_count=50
  identifier   Patient?identifier=[system|value]
  reference    Observation?patient=[id]&_count=50
  patient+code Observation?patient=[id]&code=[a LOINC code]&_count=50 (a patient's values of one kind)
  filter       Observation?_filter=patient re Patient/[id] and (code eq loinc|[a] or code eq loinc|[b])
  content      Observation?_content=[a word of a code's display]&_count=50 (every Observation's texts)
  near         Location?near=[a Location's latitude|longitude]|10|km&_count=50
  chain+total  Observation?patient.gender=male&_count=50&_total=accurate
  everything   Patient/[id]/$everything (first page, 200)

each beside a baseline measured in the same run: the bare SQL of the same first page over the same
index tables (SQLAlchemy Core, no FHIR work: no parsing, planning, paging links or Bundle), so
"x bare" says what the hub adds. p50 and p95 in ms. With `--scale K` (e.g. 10) the patient files are
then loaded K-1 more times with new ids (every id and urn:uuid of a patient bundle mapped to a new
one; the shared hospital and practitioner resources kept) and the same queries run again: the
selective searches should stay nearly flat.

Published figures for comparison (other hardware, other data; not measured here): Blaze, first page
of Patients p99 3.6 ms, $everything median 15.7 ms.
"""

from __future__ import annotations

import argparse
import bz2
import math
import multiprocessing
import random
import re
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "bench")]

from bench_audit import timed  # noqa: E402
from bench_ingest import chosen_files, describe, fresh_database, make_services  # noqa: E402
from sqlalchemy import and_, func, or_, select  # noqa: E402

from hub.load import _bundles, load_paths  # noqa: E402
from hub.pipeline import BATCH, OPERATION, SEARCH_TYPE, TRANSACTION, Interaction, Principal  # noqa: E402
from hub.store.database import Database  # noqa: E402
from hub.store.tables import idx_composite, idx_reference, idx_string, idx_token, resource  # noqa: E402

HOLDER_URA = "99900001"
BASE = "http://localhost:8080/fhir"
CALLER = Principal(
    kind="system",
    client_id="bench-hix",
    organisation_ura=HOLDER_URA,
    organisation_type="hospital",
    scopes=frozenset({"system/*.rs"}),
)
CopyJob = tuple[str, str, list[Path], int, set[bytes]]  # url, data dir, files, copy number, ids kept
UUID = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


class World:
    """What the queries draw their values from."""

    def __init__(self, services: Any) -> None:
        self.services = services
        with services.db.transaction() as conn:
            self.patients = [
                r[0]
                for r in conn.execute(
                    select(resource.c.res_id).where(resource.c.res_type == "Patient", resource.c.is_current)
                )
            ]
            codes = Counter(
                r[0]
                for r in conn.execute(
                    select(idx_token.c.code).where(idx_token.c.res_type == "Observation", idx_token.c.param == "code")
                )
            )
            self.identifiers = [
                (r[0], r[1])
                for r in conn.execute(
                    select(idx_token.c.system, idx_token.c.code).where(
                        idx_token.c.res_type == "Patient",
                        idx_token.c.param == "identifier",
                        idx_token.c.system.is_not(None),
                    )
                )
            ]
            texts = [
                r[0]
                for r in conn.execute(
                    select(idx_token.c.text).where(
                        idx_token.c.res_type == "Observation",
                        idx_token.c.param == "code",
                        idx_token.c.text.is_not(None),
                    )
                )
            ]
            self.positions = [
                (r[0], r[1])
                for r in conn.execute(
                    select(idx_composite.c.c2_low, idx_composite.c.c3_low).where(
                        idx_composite.c.res_type == "Location", idx_composite.c.param == "near"
                    )
                )
            ]
        self.codes = [c for c, _ in codes.most_common(40)]
        words = Counter(w for t in texts for w in set(t.split()) if w.isalpha() and len(w) >= 5)
        self.words = [w for w, _ in words.most_common(40)]  # words of the codes' displays, common and rarer

    def run(self, kind: str, params: list[tuple[str, str]], res_type: str = "Observation", **kw: Any) -> Any:
        i = Interaction(kind, res_type=res_type, params=params, principal=CALLER, base_url=BASE, **kw)
        result = self.services.pipeline.run(i)
        assert result.status == 200, result.status
        return result


def queries(w: World, rng: random.Random) -> dict[str, tuple[Callable[[], Any], Callable[[], Any]]]:
    """name -> (hub request, bare SQL of the same first page), each drawing fresh random values."""
    db = w.services.db
    r, tok, ref = resource.c, idx_token.c, idx_reference.c

    def page(where: Any, limit: int = 50) -> None:
        stmt = select(r.content).where(r.is_current, ~r.deleted, where).order_by(r.pk).limit(limit)  # the hub's order
        with db.transaction() as conn:
            list(conn.execute(stmt))

    def token_hub() -> Any:
        return w.run(SEARCH_TYPE, [("code", f"http://loinc.org|{rng.choice(w.codes)}"), ("_count", "50")])

    def token_bare() -> None:  # the code's index rows in write order, joined (as the hub's token_driver)
        code = rng.choice(w.codes)
        stmt = (
            select(r.content)
            .join_from(resource, idx_token, idx_token.c.resource_pk == r.pk)
            .where(
                r.res_type == "Observation",
                r.is_current,
                ~r.deleted,
                tok.res_type == "Observation",
                tok.param == "code",
                tok.code == code,
                tok.system == "http://loinc.org",
            )
            .group_by(*((tok.resource_pk,) if db.dialect == "sqlite" else (tok.resource_pk, r.pk)))
            .order_by(tok.resource_pk)
            .limit(50)
        )
        with db.transaction() as conn:
            list(conn.execute(stmt))

    def ident_hub() -> Any:
        system, value = rng.choice(w.identifiers)
        return w.run(SEARCH_TYPE, [("identifier", f"{system}|{value}")], res_type="Patient")

    def ident_bare() -> None:
        system, value = rng.choice(w.identifiers)
        sub = select(tok.resource_pk).where(
            tok.res_type == "Patient", tok.param == "identifier", tok.code == value, tok.system == system
        )
        page(and_(r.res_type == "Patient", r.pk.in_(sub)))

    def ref_hub() -> Any:
        return w.run(SEARCH_TYPE, [("patient", rng.choice(w.patients)), ("_count", "50")])

    def observations_of(patients: Any) -> Any:  # `patient` is `subject` of type Patient: no rows of its own
        return select(ref.resource_pk).where(
            ref.res_type == "Observation", ref.param == "subject", ref.target_type == "Patient", patients
        )

    def ref_bare() -> None:
        page(and_(r.res_type == "Observation", r.pk.in_(observations_of(ref.target_id == rng.choice(w.patients)))))

    def both_hub() -> Any:
        code = f"http://loinc.org|{rng.choice(w.codes)}"
        return w.run(SEARCH_TYPE, [("patient", rng.choice(w.patients)), ("code", code), ("_count", "50")])

    def both_bare() -> None:
        of_patient = observations_of(ref.target_id == rng.choice(w.patients))
        with_code = select(tok.resource_pk).where(
            tok.res_type == "Observation",
            tok.param == "code",
            tok.code == rng.choice(w.codes),
            tok.system == "http://loinc.org",
        )
        page(and_(r.res_type == "Observation", r.pk.in_(of_patient), r.pk.in_(with_code)))

    def filter_hub() -> Any:  # a patient's values of either of two kinds, as one _filter
        a, b = rng.sample(w.codes, 2)
        expression = f"patient re Patient/{rng.choice(w.patients)} and (code eq loinc|{a} or code eq loinc|{b})"
        return w.run(SEARCH_TYPE, [("_filter", expression), ("_count", "50")])

    def filter_bare() -> None:
        a, b = rng.sample(w.codes, 2)
        of_patient = observations_of(ref.target_id == rng.choice(w.patients))

        def with_code(code: str) -> Any:
            return select(tok.resource_pk).where(
                tok.res_type == "Observation", tok.param == "code", tok.code == code, tok.system == "http://loinc.org"
            )

        page(
            and_(r.res_type == "Observation", r.pk.in_(of_patient), or_(r.pk.in_(with_code(a)), r.pk.in_(with_code(b))))
        )

    def content_hub() -> Any:
        return w.run(SEARCH_TYPE, [("_content", rng.choice(w.words)), ("_count", "50")])

    def content_bare() -> None:  # the same lists: string values, code texts (no narratives in Synthea)
        like = f"%{rng.choice(w.words)}%"
        strings = select(idx_string.c.resource_pk).where(
            idx_string.c.res_type == "Observation", idx_string.c.value.like(like)
        )
        texts = select(tok.resource_pk).where(tok.res_type == "Observation", tok.text.like(like))
        page(and_(r.res_type == "Observation", or_(r.pk.in_(strings), r.pk.in_(texts))))

    def near_hub() -> Any:
        lat, long = rng.choice(w.positions)
        return w.run(SEARCH_TYPE, [("near", f"{lat}|{long}|10|km"), ("_count", "50")], res_type="Location")

    def near_bare() -> None:
        lat, long = rng.choice(w.positions)
        c = idx_composite.c
        box = 10 / 110.574
        dy, dx = (c.c2_low - lat) * 110.574, (c.c3_low - long) * 111.320 * math.cos(math.radians(lat))
        near = select(c.resource_pk).where(
            c.res_type == "Location",
            c.param == "near",
            c.c2_low.between(lat - box, lat + box),
            dx * dx + dy * dy <= 100,
        )
        page(and_(r.res_type == "Location", r.pk.in_(near)))

    def chain_hub() -> Any:
        return w.run(SEARCH_TYPE, [("patient.gender", "male"), ("_count", "50"), ("_total", "accurate")])

    def chain_bare() -> None:
        males = select(r.res_id).where(
            r.res_type == "Patient",
            r.is_current,
            r.pk.in_(
                select(tok.resource_pk).where(tok.res_type == "Patient", tok.param == "gender", tok.code == "male")
            ),
        )
        obs = observations_of(ref.target_id.in_(males))
        where = and_(r.res_type == "Observation", r.pk.in_(obs))
        page(where)
        with db.transaction() as conn:
            conn.execute(select(func.count()).select_from(resource).where(r.is_current, ~r.deleted, where)).scalar_one()

    def everything_hub() -> Any:
        return w.run(OPERATION, [], res_type="Patient", res_id=rng.choice(w.patients), operation="$everything")

    def everything_bare() -> None:
        pid = rng.choice(w.patients)
        members = select(ref.resource_pk).where(ref.target_type == "Patient", ref.target_id == pid)
        page(r.pk.in_(members), limit=200)

    return {
        "token": (token_hub, token_bare),
        "identifier": (ident_hub, ident_bare),
        "reference": (ref_hub, ref_bare),
        "patient+code": (both_hub, both_bare),
        "filter": (filter_hub, filter_bare),
        "content": (content_hub, content_bare),
        "near": (near_hub, near_bare),
        "chain+total": (chain_hub, chain_bare),
        "everything": (everything_hub, everything_bare),
    }


def measure(w: World, samples: int, seed: int) -> dict[str, tuple[list[float], list[float]]]:
    rng = random.Random(seed)
    out: dict[str, tuple[list[float], list[float]]] = {}
    for name, (hub, bare) in queries(w, rng).items():
        n = max(samples // 5, 20) if name == "chain+total" else samples
        hub_ms: list[float] = []
        bare_ms: list[float] = []
        for k in range(n + 10):
            a, b = timed(hub), timed(bare)
            if k >= 10:
                hub_ms.append(a)
                bare_ms.append(b)
        out[name] = (hub_ms, bare_ms)
    return out


def copy_bundles(files: list[Path], copy: int, shared: set[bytes]) -> Iterator[tuple[str, dict[str, Any]]]:
    """The patient bundles again with every id and urn:uuid mapped to a new one (the same mapping
    everywhere in a bundle, so references hold); ids of the shared hospital/practitioner data kept."""
    for f in files:
        for where, bundle in _bundles(f):
            raw = orjson.dumps(bundle)

            def fresh(m: re.Match[bytes]) -> bytes:
                old = m.group(0)
                return old if old in shared else str(uuid.uuid5(uuid.NAMESPACE_OID, f"{copy}:{old.decode()}")).encode()

            yield f"{where} copy {copy}", orjson.loads(UUID.sub(fresh, raw))


def load_copy(job: CopyJob, services: Any = None) -> tuple[int, int, float]:
    """Copy k of the patient files through the pipeline as the holder, as load_paths would (bundles of
    the same kind, `Prefer: return=minimal`). In a worker process (`--jobs`) with its own Services."""
    url, tmp, patient_files, k, shared = job
    if services is None:
        services = make_services(Database.connect(url), url, Path(tmp))
    holder = Principal(kind="local", client_id="bench", organisation_ura=HOLDER_URA)
    n = 0
    t = time.perf_counter()
    for _, bundle in copy_bundles(patient_files, k, shared):
        kind = TRANSACTION if bundle.get("type") == "transaction" else BATCH
        services.pipeline.run(Interaction(kind, body=bundle, principal=holder, base_url=BASE, prefer_return="minimal"))
        n += len(bundle.get("entry", []))
    return k, n, time.perf_counter() - t


def report(title: str, results: dict[str, tuple[list[float], list[float]]]) -> dict[str, tuple[float, float]]:
    print(f"\n{title}")
    print(f"{'query':13} {'p50 ms':>8} {'p95 ms':>8} {'bare p50':>9} {'bare p95':>9} {'x bare':>7} {'n':>5}")
    p50s = {}
    for name, (hub, bare) in results.items():
        p50, p95 = statistics.median(hub), pct(hub, 95)
        b50, b95 = statistics.median(bare), pct(bare, 95)
        p50s[name] = (p50, p95)
        print(f"{name:13} {p50:8.2f} {p95:8.2f} {b50:9.2f} {b95:9.2f} {p50 / b50:7.1f} {len(hub):5}")
    return p50s


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--database", help="postgresql://... (default: SQLite in a temporary directory)")
    ap.add_argument("--files", type=int, default=None, help="Synthea patient files (default: all 120)")
    ap.add_argument("--samples", type=int, default=300, help="requests per query (default 300)")
    ap.add_argument("--scale", type=int, default=1, help="load the patient files this many times in all")
    ap.add_argument("--jobs", type=int, default=1, help="processes loading the copies (PostgreSQL; default 1)")
    ap.add_argument(
        "--keep", action="store_true", help="keep the database afterwards (PostgreSQL: its schema; SQLite: its file)"
    )
    ap.add_argument(
        "--reuse",
        metavar="URL",
        help="measure a database a --keep run left (the URL it printed) again, without loading anything",
    )
    ap.add_argument(
        "--containers",
        type=int,
        default=0,
        metavar="N",
        help="with --reuse: first add N Observations whose subject is a contained copy of their Patient"
        " (copies of stored ones, ids c-...; this changes the kept database)",
    )
    args = ap.parse_args(argv)
    if args.reuse:
        return remeasure(args.reuse, args.samples, args.containers)
    print(f"database: {describe(args.database)}")
    with ExitStack() as stack:
        if args.keep and not (args.database or "").startswith("postgres"):
            tmp = tempfile.mkdtemp(prefix="hub-bench-search-")
            print(f"keeping the SQLite database: --reuse sqlite:///{tmp}/search.db")
        else:
            tmp = stack.enter_context(tempfile.TemporaryDirectory())
        db, url = stack.enter_context(fresh_database(args.database, "search", Path(tmp), keep=args.keep))
        services = make_services(db, url, Path(tmp))
        files = chosen_files(args.files)
        t = time.perf_counter()
        summary = load_paths(services, files, progress=False, holder_ura=HOLDER_URA)
        print(f"loaded {summary.line()} in {time.perf_counter() - t:.0f} s")
        first_world = World(services)
        first = report(f"{len(first_world.patients)} patients", measure(first_world, args.samples, 1))
        if args.scale > 1:
            shared: set[bytes] = set()
            for f in files:
                if f.name.startswith("0-"):
                    with bz2.open(f) as fh:
                        shared.update(UUID.findall(fh.read()))
            patient_files = [f for f in files if not f.name.startswith("0-")]
            t = time.perf_counter()
            copies = range(1, args.scale)
            if args.jobs > 1:
                db.dispose()  # no pooled connection may cross into the workers
                ctx = multiprocessing.get_context("spawn")
                with ctx.Pool(args.jobs) as pool:
                    done = pool.imap_unordered(load_copy, [(url, tmp, patient_files, k, shared) for k in copies])
                    for k, n, secs in done:
                        print(f"  copy {k}: {n:,} resources in {secs:.0f} s ({n / secs:,.0f}/s)", flush=True)
            else:
                for k in copies:
                    _, n, secs = load_copy((url, tmp, patient_files, k, shared), services)
                    print(f"  copy {k}: {n:,} resources in {secs:.0f} s ({n / secs:,.0f}/s)", flush=True)
            loaded = time.perf_counter() - t
            services.db.refresh_statistics()  # as load_paths does after a load
            print(f"loaded {args.scale - 1} more copies in {loaded:.0f} s (statistics refreshed)")
            w = World(services)
            scaled = report(f"{len(w.patients)} patients", measure(w, args.samples, 2))
            print(f"\ngrowth from {len(first_world.patients)} to {len(w.patients)} patients")
            print(f"{'query':13} {'p50':>8} {'p95':>8}")
            for name, (p50, p95) in scaled.items():
                print(f"{name:13} {p50 / first[name][0]:7.2f}x {p95 / first[name][1]:7.2f}x")
    print("\nBlaze (published, other hardware): first page of Patients p99 3.6 ms; $everything median 15.7 ms")
    return 0


def remeasure(url: str, samples: int, containers: int = 0) -> int:
    """The queries again over a database a `--keep` run loaded (e.g. after a change to the hub's
    connection settings), with a new random sample of values; first adding `containers`."""
    print(f"database: {url} (reused: nothing loaded)")
    with tempfile.TemporaryDirectory() as tmp:
        db = Database.connect(url)
        try:
            services = make_services(db, url, Path(tmp))
            if containers:
                add_containers(services, containers)
            world = World(services)
            report(f"{len(world.patients)} patients", measure(world, samples, 3))
        finally:
            db.dispose()
    return 0


def add_containers(services: Any, n: int) -> None:
    """Copies of every 10th stored Observation (up to n) whose subject is a contained copy of its
    Patient, so chains such as `patient.gender=male` also look inside contained resources."""
    with services.db.transaction() as conn:
        observations = conn.execute(
            select(resource.c.content)
            .where(resource.c.res_type == "Observation", resource.c.is_current, ~resource.c.deleted)
            .where(~resource.c.res_id.like("c-%"))
            .order_by(resource.c.pk)
            .limit(n * 10)
        ).all()
        patients = dict(
            conn.execute(
                select(resource.c.res_id, resource.c.content).where(
                    resource.c.res_type == "Patient", resource.c.is_current, ~resource.c.deleted
                )
            ).all()
        )
    copies = []
    for (content,) in observations[::10]:
        obs = orjson.loads(content)
        patient = patients.get(obs.get("subject", {}).get("reference", "").partition("/")[2])
        if patient is None:
            continue
        inner = {k: v for k, v in orjson.loads(patient).items() if k not in ("meta", "text")} | {"id": "p"}
        body = {k: v for k, v in obs.items() if k != "meta"}
        copies.append(body | {"id": f"c-{obs['id']}", "subject": {"reference": "#p"}, "contained": [inner]})
    holder = Principal(kind="local", client_id="bench", organisation_ura=HOLDER_URA)
    t = time.perf_counter()
    for i in range(0, len(copies), 100):
        entries = [
            {"resource": r, "request": {"method": "PUT", "url": f"Observation/{r['id']}"}} for r in copies[i : i + 100]
        ]
        bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
        services.pipeline.run(
            Interaction(TRANSACTION, body=bundle, principal=holder, base_url=BASE, prefer_return="minimal")
        )
    print(f"added {len(copies):,} Observations with a contained subject in {time.perf_counter() - t:.1f} s")


if __name__ == "__main__":
    sys.exit(main())
