"""Shared test helpers: where the external fixtures live, and small readers for them."""

from __future__ import annotations

import bz2
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT.parent / "shared" / "fixtures"
SYNTHEA = FIXTURES / "synthea-120"
NICTIZ_EXAMPLES = FIXTURES / "nictiz-zib2020" / "examples"


def synthea_bundle(name: str) -> dict[str, Any]:
    """One Synthea bundle by file name (e.g. the first patient file in sorted order)."""
    with bz2.open(SYNTHEA / name) as fh:
        return json.load(fh)  # type: ignore[no-any-return]


def synthea_files() -> list[Path]:
    """Hospital and practitioner bundles first, then the patients, as they must be loaded."""
    files = sorted(SYNTHEA.glob("*.json.bz2"))
    return [f for f in files if f.name.startswith("0-")] + [f for f in files if not f.name.startswith("0-")]


def synthea_resources(limit_files: int | None = None) -> Iterator[dict[str, Any]]:
    """Resources from the Synthea patient bundles (not the hospital/practitioner ones)."""
    files = [f for f in synthea_files() if not f.name.startswith("0-")]
    for f in files[:limit_files]:
        for entry in synthea_bundle(f.name)["entry"]:
            yield entry["resource"]


def nictiz_example_files() -> list[Path]:
    return sorted(NICTIZ_EXAMPLES.glob("*.xml"))
