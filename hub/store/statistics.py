"""Planner statistics that keep up with a growing PostgreSQL database, whatever writes to it.

PostgreSQL plans from statistics that ANALYZE (or autovacuum) gathers. On a new database they are
those of its empty tables (migration 0006 analyses them), and a load through the REST API grows the
tables faster than autovacuum looks (or on a server where it is off): the conditional look-ups of
a transaction bundle (`Organization?identifier=...`) went from 0.2 ms to 1.5 s a statement, and
40 Synthea bundles took 212 s instead of 35. So every committed write is counted here, and when the
rows written since the last ANALYZE reach the rows there were then (the tables doubled), ANALYZE
runs again, in a background thread: the request that crossed the line does not wait for it.
SQLite's plans are made for no statistics, and the hub keeps none there (Database.refresh_statistics),
so there this counts nothing.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger("hub.store.statistics")

WRITTEN = "hub_rows_written"  # Connection.info key: resource rows the write transaction inserted
FIRST = 2000  # rows written before the first refresh; then at each doubling


class PlannerStatistics:
    def __init__(self, refresh: Callable[[], None], known_rows: Callable[[], int], first: int = FIRST) -> None:
        self._refresh = refresh  # ANALYZE, in a connection of its own
        self._known_rows = known_rows  # the rows the current statistics know (pg_class.reltuples)
        self._first = first
        self._lock = threading.Lock()
        self._base: int | None = None  # rows at the last refresh; read from the catalogue on first use
        self._written = 0  # rows written since
        self._thread: threading.Thread | None = None

    def wrote(self, rows: int) -> None:
        """Count `rows` resource versions committed; start a refresh when the tables doubled."""
        if rows <= 0:
            return
        with self._lock:
            self._written += rows
            if self._thread is not None or self._written < max(self._base or 0, self._first):
                return
            if self._base is None:
                self._base = self._known_rows()
                if self._written < max(self._base, self._first):
                    return
            counted = self._written
            self._thread = threading.Thread(target=self._run, args=(counted,), name="hub-analyze", daemon=True)
            self._thread.start()

    def refreshed(self) -> None:
        """A refresh ran outside this class (e.g. at the end of `hub load`): start counting anew."""
        with self._lock:
            self._base = (self._base or 0) + self._written
            self._written = 0

    def wait(self, timeout: float | None = None) -> None:
        """Let a running refresh finish (before the engine is disposed of, and in tests)."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def _run(self, counted: int) -> None:
        try:
            self._refresh()
        except Exception:  # a failed ANALYZE costs plan quality, never a write
            log.exception("refreshing the planner statistics failed")
        finally:
            with self._lock:
                self._base = (self._base or 0) + counted
                self._written -= counted
                self._thread = None
