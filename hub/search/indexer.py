"""What the store asks of search on every write: the index rows and the patient compartment."""

from __future__ import annotations

from typing import Any

from hub.search.compartment import patient_ids
from hub.search.extract import extract_tuples
from hub.search.registry import Registry


class SearchIndexer:
    def __init__(self, registry: Registry, local_bases: tuple[str, ...] = ()) -> None:
        self.registry = registry
        self.local_bases = local_bases

    def rows(self, resource: dict[str, Any]) -> dict[str, list[tuple[Any, ...]]]:
        """Index rows per table: (res_type, param, *columns) in hub.search.extract.COLUMNS order."""
        return extract_tuples(resource, self.registry)

    def patient_id(self, resource: dict[str, Any]) -> str | None:
        ids = patient_ids(resource, self.registry, self.local_bases)
        return ids[0] if ids else None
