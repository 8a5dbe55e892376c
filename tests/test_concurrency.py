"""Real concurrency against a real server process-in-a-thread: no write is ever silently lost.

Several clients race to update the same resource with If-Match; exactly one wins each version and
the others get 412. Unconditional writers all end up as versions. Concurrent conditional creates
with the same criteria make one resource.
"""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import uvicorn
from conftest import patient, system_client

from hub.app import Services, create_app

JSON = {"Content-Type": "application/fhir+json"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def server(services: Services) -> Iterator[str]:
    port = _free_port()
    config = uvicorn.Config(create_app(services=services), host="127.0.0.1", port=port, log_level="warning")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.time() + 10
    while not srv.started:
        if time.time() > deadline:
            raise RuntimeError("server did not start")
        time.sleep(0.02)
    base = f"http://127.0.0.1:{port}/fhir"
    token = services.tokens.issue(system_client(), issuer=base[:-5], audience=base, scope="system/*.cruds").token
    JSON["Authorization"] = f"Bearer {token}"
    yield base
    del JSON["Authorization"]
    srv.should_exit = True
    thread.join(timeout=10)


def test_if_match_races_lose_no_write(server: str) -> None:
    with httpx.Client(headers=JSON) as c:
        assert c.put(f"{server}/Patient/race", json=patient(id="race"), headers=JSON).status_code == 201
    rounds, writers = 6, 8

    def attempt(n: int) -> list[int]:
        statuses = []
        with httpx.Client(timeout=60, headers=JSON) as c:
            for r in range(rounds):
                current = c.get(f"{server}/Patient/race")
                etag = current.headers["ETag"]
                body = patient(id="race", name=[{"family": f"writer-{n}-round-{r}"}])
                resp = c.put(f"{server}/Patient/race", json=body, headers={**JSON, "If-Match": etag})
                statuses.append(resp.status_code)
        return statuses

    with ThreadPoolExecutor(writers) as pool:
        results = [s for batch in pool.map(attempt, range(writers)) for s in batch]
    tally = Counter(results)
    assert set(tally) <= {200, 412}, tally
    assert tally[200] >= rounds  # someone wins every round at least
    with httpx.Client(headers=JSON) as c:
        final = c.get(f"{server}/Patient/race").json()
        history = c.get(f"{server}/Patient/race/_history", params={"_count": 1000}).json()
    # Every successful update made exactly one version; none was overwritten unseen.
    assert int(final["meta"]["versionId"]) == 1 + tally[200]
    versions = sorted(int(e["resource"]["meta"]["versionId"]) for e in history["entry"])
    assert versions == list(range(1, 2 + tally[200]))


def test_unconditional_concurrent_updates_all_become_versions(server: str) -> None:
    with httpx.Client(headers=JSON) as c:
        c.put(f"{server}/Patient/many", json=patient(id="many"), headers=JSON)
    writers, each = 6, 5

    def write(n: int) -> list[int]:
        with httpx.Client(timeout=60, headers=JSON) as c:
            return [
                c.put(
                    f"{server}/Patient/many",
                    json=patient(id="many", name=[{"family": f"w{n}-{i}"}]),
                    headers=JSON,
                ).status_code
                for i in range(each)
            ]

    with ThreadPoolExecutor(writers) as pool:
        statuses = [s for batch in pool.map(write, range(writers)) for s in batch]
    assert statuses.count(200) == writers * each, Counter(statuses)
    with httpx.Client(headers=JSON) as c:
        final = c.get(f"{server}/Patient/many").json()
    assert final["meta"]["versionId"] == str(1 + writers * each)


def test_concurrent_conditional_creates_make_one_resource(server: str) -> None:
    cond = {"If-None-Exist": "identifier=http://fhir.nl/fhir/NamingSystem/bsn|999909587"}
    body = patient(identifier=[{"system": "http://fhir.nl/fhir/NamingSystem/bsn", "value": "999909587"}])

    def create(_: int) -> int:
        with httpx.Client(timeout=60, headers=JSON) as c:
            return c.post(f"{server}/Patient", json=body, headers={**JSON, **cond}).status_code

    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(create, range(16)))
    assert statuses.count(201) == 1, Counter(statuses)
    assert statuses.count(200) == 15
    with httpx.Client(headers=JSON) as c:
        found = c.get(f"{server}/Patient", params={"identifier": "999909587", "_summary": "count"}).json()
    assert found["total"] == 1
