"""Profile packages: conformance resources read from a FHIR package (.tgz) or a folder, and
installed into the hub as FHIR resources (`hub profiles install PATH`).

Installed resources are stored through the interaction pipeline like any write (a local principal,
one batch per package), so they survive restarts, SearchParameters take effect through
hub/search/custom.py, and every hub process's validator picks them up (profiles/service.py).
A package is the npm-style tarball of the FHIR package spec (`package/*.json`, package.json and
.index.json skipped); a folder is read recursively, JSON and XML, Bundles unpacked.
"""

from __future__ import annotations

import re
import tarfile
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hub.formats import jsonfmt, xml
from hub.formats.outcome import FhirError
from hub.pipeline import BATCH, Interaction, Principal
from profiles.registry import KINDS

_SKIP = ("package.json", ".index.json", "fhirpkg.lock.json")
_ID_RE = re.compile(r"[^A-Za-z0-9\-.]")


@dataclass
class InstallSummary:
    read: Counter[str] = field(default_factory=Counter)  # resource type -> count
    written: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)

    def line(self) -> str:
        kinds = ", ".join(f"{n} {k}" for k, n in sorted(self.read.items())) or "no conformance resources"
        return f"{kinds}; {self.written} stored, {len(self.failures)} failed"


def _parse(name: str, data: bytes) -> dict[str, Any] | None:
    if name.endswith(".xml"):
        return xml.parse_xml(data)
    if name.endswith(".json"):
        return jsonfmt.parse_resource(data)
    return None


def _unpack(res: dict[str, Any] | None) -> Iterator[dict[str, Any]]:
    if res is None:
        return
    if res.get("resourceType") == "Bundle":
        for e in res.get("entry", ()):
            if isinstance(e, dict) and isinstance(e.get("resource"), dict):
                yield from _unpack(e["resource"])
    elif res.get("resourceType") in KINDS:
        yield res


def read_package(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, resource) for every conformance resource in a package file or folder."""
    if path.is_file() and path.name.endswith((".tgz", ".tar.gz")):
        with tarfile.open(path, "r:gz") as tar:
            for member in tar:
                base = member.name.rsplit("/", 1)[-1]
                if not member.isfile() or base in _SKIP or "/example" in member.name:
                    continue
                fh = tar.extractfile(member)
                if fh is not None and base.endswith((".json", ".xml")):
                    for res in _unpack(_parse(base, fh.read())):
                        yield f"{path}:{member.name}", res
        return
    files: Iterable[Path] = sorted(path.rglob("*")) if path.is_dir() else [path]
    for f in files:
        if f.is_file() and f.name not in _SKIP and f.suffix in (".json", ".xml"):
            for res in _unpack(_parse(f.name, f.read_bytes())):
                yield str(f), res


def _with_id(res: dict[str, Any]) -> dict[str, Any]:
    """A resource without an id gets one from the last segment of its canonical URL."""
    if res.get("id"):
        return res
    slug = _ID_RE.sub("-", str(res.get("url", "")).rstrip("/").rsplit("/", 1)[-1])[:64] or "unnamed"
    return {**res, "id": slug}


def install(services: Any, path: Path, *, base_url: str = "http://localhost:8080/fhir") -> InstallSummary:
    """Store the package's conformance resources in the hub (PUT by id: reinstalling is a no-op)."""
    summary = InstallSummary()
    entries: list[dict[str, Any]] = []
    for where, res in read_package(path):
        res = _with_id(res)
        summary.read[res["resourceType"]] += 1
        entries.append(
            {"resource": res, "request": {"method": "PUT", "url": f"{res['resourceType']}/{res['id']}"}, "_w": where}
        )
    principal = Principal(kind="local", client_id="hub profiles install")
    for start in range(0, len(entries), 200):
        chunk = entries[start : start + 200]
        bundle = {
            "resourceType": "Bundle",
            "type": BATCH,
            "entry": [{k: v for k, v in e.items() if k != "_w"} for e in chunk],
        }
        try:
            result = services.pipeline.run(
                Interaction(BATCH, body=bundle, principal=principal, base_url=base_url, prefer_return="minimal")
            )
        except FhirError as err:
            summary.failures.append((str(path), f"{err.status}: {err.diagnostics}"))
            continue
        for e, r in zip(chunk, (result.resource or {}).get("entry", []), strict=False):
            status = str(r.get("response", {}).get("status", ""))
            if status.startswith(("200", "201")):
                summary.written += 1
            else:
                issues = r.get("response", {}).get("outcome", {}).get("issue", [{}])
                summary.failures.append((e["_w"], f"{status}: {issues[0].get('diagnostics', '')}"))
    return summary
