"""`hub load`: bulk loading of FHIR files through the same pipeline as the REST API.

Reads JSON, XML and NDJSON, optionally .gz / .bz2 compressed; Bundles of type transaction and batch
are executed as such, other Bundles (collection, searchset, document...) and loose resources are
stored entry by entry. Reruns are safe: entries that carry an id are written with PUT to that id (an
unchanged resource makes no new version) and conditional creates match what the first run made.
"""

from __future__ import annotations

import bz2
import gzip
import logging
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from tqdm import tqdm

from hub.formats import jsonfmt, xml
from hub.formats.outcome import FhirError
from hub.pipeline import BATCH, TRANSACTION, Interaction, Principal

log = logging.getLogger("hub.load")

NDJSON_BATCH = 500
_SUFFIXES = (".json", ".xml", ".ndjson")
_FIRST = ("hospitalinformation", "practitionerinformation")


@dataclass
class LoadSummary:
    files: int = 0
    resources: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    failures: list[tuple[str, str]] = field(default_factory=list)  # (where, why)

    def line(self) -> str:
        parts = ", ".join(f"{n} {k}" for k, n in sorted(self.outcomes.items()))
        written = parts or "nothing written"
        return f"{self.files} files, {self.resources} resources ({written}), {len(self.failures)} failed"


def _read(path: Path) -> bytes:
    if path.suffix == ".gz":
        return gzip.decompress(path.read_bytes())
    if path.suffix == ".bz2":
        return bz2.decompress(path.read_bytes())
    return path.read_bytes()


def _kind(path: Path) -> str | None:
    name = path.name.lower()
    for comp in (".gz", ".bz2"):
        if name.endswith(comp):
            name = name[: -len(comp)]
    for suffix in _SUFFIXES:
        if name.endswith(suffix):
            return suffix[1:]
    return None


def discover(paths: Iterable[Path]) -> list[Path]:
    """Files to load, in load order: Synthea's hospital and practitioner files before the patients."""
    found: list[Path] = []
    for p in paths:
        if p.is_dir():
            found.extend(f for f in sorted(p.rglob("*")) if f.is_file() and _kind(f))
        elif p.is_file():
            found.append(p)
        else:
            raise FileNotFoundError(p)
    return sorted(found, key=lambda f: (not any(k in f.name.lower() for k in _FIRST), str(f)))


def _as_put(entry: dict[str, Any]) -> dict[str, Any]:
    """A POST of a resource that has an id becomes a PUT to that id, so a second load is a no-op."""
    req = entry.get("request") or {}
    res = entry.get("resource") or {}
    if req.get("method") == "POST" and not req.get("ifNoneExist") and res.get("id") and res.get("resourceType"):
        return {**entry, "request": {"method": "PUT", "url": f"{res['resourceType']}/{res['id']}"}}
    return entry


def _entry_for(res: dict[str, Any]) -> dict[str, Any]:
    rt = res.get("resourceType")
    if res.get("id"):
        return {"resource": res, "request": {"method": "PUT", "url": f"{rt}/{res['id']}"}}
    return {"resource": res, "request": {"method": "POST", "url": str(rt)}}


def _bundles(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, bundle) pairs: the units the loader executes, each a batch or transaction."""
    kind = _kind(path)
    data = _read(path)
    if kind == "ndjson":
        batch: list[dict[str, Any]] = []
        for n, line in enumerate(data.splitlines(), 1):
            if not line.strip():
                continue
            res = jsonfmt.loads(line)
            batch.append(_entry_for(res))
            if len(batch) >= NDJSON_BATCH:
                yield f"{path}:{n}", {"resourceType": "Bundle", "type": "batch", "entry": batch}
                batch = []
        if batch:
            yield str(path), {"resourceType": "Bundle", "type": "batch", "entry": batch}
        return
    res = xml.parse_xml(data) if kind == "xml" else jsonfmt.parse_resource(data)
    if res.get("resourceType") == "Bundle" and res.get("type") in ("transaction", "batch"):
        yield str(path), {**res, "entry": [_as_put(e) for e in res.get("entry", [])]}
    elif res.get("resourceType") == "Bundle" and res.get("type") != "history":
        entries = [_entry_for(e["resource"]) for e in res.get("entry", []) if isinstance(e.get("resource"), dict)]
        yield str(path), {"resourceType": "Bundle", "type": "batch", "entry": entries}
    else:
        yield str(path), {"resourceType": "Bundle", "type": "batch", "entry": [_entry_for(res)]}


def _tally(summary: LoadSummary, where: str, response: dict[str, Any]) -> None:
    entries = response.get("entry", [])
    for n, e in enumerate(entries):
        status = str(e.get("response", {}).get("status", ""))
        summary.resources += 1
        if status.startswith("201"):
            summary.outcomes["created"] += 1
        elif status.startswith("200"):
            summary.outcomes["updated or unchanged"] += 1
        elif status.startswith("204"):
            summary.outcomes["deleted"] += 1
        else:
            issues = e.get("response", {}).get("outcome", {}).get("issue", [{}])
            summary.failures.append((f"{where} entry {n}", f"{status}: {issues[0].get('diagnostics', '')}"))


def load_paths(
    services: Any,
    paths: Iterable[Path],
    *,
    base_url: str = "http://localhost:8080/fhir",
    progress: bool = True,
    holder_ura: str | None = None,
) -> LoadSummary:
    """Load files through the pipeline. `holder_ura`: the organisation holding the data (its author
    for consent decisions: it always sees what it holds); without it only consent opens the data."""
    files = discover(paths)
    summary = LoadSummary()
    principal = Principal(kind="local", client_id="hub load", organisation_ura=holder_ura)
    bar = tqdm(total=len(files), unit="file", disable=not progress, dynamic_ncols=True)
    for path in files:
        summary.files += 1
        try:
            for where, bundle in _bundles(path):
                kind = TRANSACTION if bundle.get("type") == "transaction" else BATCH
                result = services.pipeline.run(
                    Interaction(kind, body=bundle, principal=principal, base_url=base_url, prefer_return="minimal")
                )
                _tally(summary, where, result.resource or {})
        except FhirError as err:
            summary.failures.append((str(path), f"{err.status}: {err.diagnostics}"))
        except (OSError, orjson.JSONDecodeError, ValueError) as err:
            summary.failures.append((str(path), f"unreadable: {err}"))
        bar.update(1)
        bar.set_postfix_str(f"{summary.resources} resources, {len(summary.failures)} failed")
    bar.close()
    if summary.resources:
        services.db.refresh_statistics()  # searches right after a load need current planner statistics
    return summary
