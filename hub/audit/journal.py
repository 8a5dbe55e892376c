"""Reads' audit records: journalled before the response leaves, chained in batches.

A read's record used to cost a write transaction of its own (SQLite) or the chain lock inside the
read's transaction (PostgreSQL): more than the read itself. Now the request appends the record to
this process's journal file (one `write`, the same durability as SQLite's WAL with
synchronous=NORMAL: safe against a crash of the hub, not of the machine; HUB_AUDIT_SYNC_READS=1
adds an fsync per read) and a background thread moves what has gathered into the hash chain, one
transaction per batch, recording in that same transaction how far the file has been drained
(table audit_journal), so a crash neither loses nor repeats a record.

Whoever reads the trail first calls `flush()` (the Audit interceptor's `prepare` does, before the
reading transaction starts), so an auditor or patient sees every record this process has
journalled. A live journal is held with an exclusive `flock`; on start, journals whose lock is free
belong to a process that ended and are drained by the next one (`recover`).
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import Connection, delete, insert, select, update

from hub.audit.tables import audit_journal
from hub.store.database import Database

log = logging.getLogger("hub.audit")

GATHER_SECONDS = 0.02  # how long the drainer lets records gather before a batch
IDLE_SECONDS = 2.0  # the drainer thread ends after this long without records (restarted on demand)
ROTATE_BYTES = 8 * 1024 * 1024  # a fully drained journal this large is replaced by a fresh file
SUFFIX = ".ndjson"


class ReadJournal:
    """One process's journal of read records; `append` is safe from any thread."""

    def __init__(self, db: Database, trail: Any, directory: Path, sync: bool = False) -> None:
        self.db = db
        self.trail = trail  # hub.audit.chain.AuditTrail: append(conn, events) under the chain lock
        self.directory = directory
        self.sync = sync
        self._lock = threading.Lock()  # the file, its offset and the pending list
        self._drain_lock = threading.Lock()  # one drain at a time
        self._wake = threading.Event()
        self._stop = False
        self._thread: threading.Thread | None = None
        self._pending: list[dict[str, Any]] = []
        self._retired: list[str] = []  # rotated-out journals whose offset rows go at the next drain
        self._fd = -1
        self._name = ""
        self._written = 0

    # -- the request side -------------------------------------------------------------------------

    def append(self, events: Sequence[dict[str, Any]]) -> None:
        """Journal `events` (raises if the disk refuses: the request then fails, unaudited reads never
        leave) and wake the drainer."""
        if not events:
            return
        data = b"".join(orjson.dumps(e) + b"\n" for e in events)
        with self._lock:
            if self._fd < 0:
                self._open()
            os.write(self._fd, data)
            if self.sync:
                os.fsync(self._fd)
            self._written += len(data)
            self._pending.extend(events)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="audit-journal", daemon=True)
                self._thread.start()
        self._wake.set()

    # -- the chain side ---------------------------------------------------------------------------

    def flush(self) -> None:
        """Move everything journalled so far into the chain; returns once committed."""
        with self._drain_lock:
            with self._lock:
                batch, self._pending = self._pending, []
                name, drained, retired = self._name, self._written, self._retired
                self._retired = []
            if not batch and not retired:
                return
            try:
                with self.db.transaction(write=True) as conn:
                    self.trail.append(conn, batch)
                    if batch:
                        _set_offset(conn, name, drained)
                    if retired:
                        conn.execute(delete(audit_journal).where(audit_journal.c.name.in_(retired)))
            except BaseException:
                with self._lock:  # keep them for the next attempt, in order
                    self._pending[:0] = batch
                    self._retired[:0] = retired
                raise
            self._maybe_rotate()

    def settle(self) -> None:
        """Flush and let the drainer thread end (shutdown; tests between databases)."""
        self.flush()
        with self._lock:
            thread = self._thread
            self._stop = True
        if thread is not None:
            self._wake.set()
            thread.join(timeout=IDLE_SECONDS + 1)
        with self._lock:
            self._stop = False

    def recover(self) -> int:
        """Drain journals left by processes that ended (their lock is free). Returns records moved."""
        if not self.directory.is_dir():
            return 0
        moved = 0
        for path in sorted(self.directory.glob(f"*{SUFFIX}")):
            if path.name == self._name:
                continue
            try:
                fd = os.open(path, os.O_RDWR)
            except FileNotFoundError:
                continue
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # a live process's journal
                if not _still_there(path, fd):
                    continue  # another process recovered and removed it while we opened it
                moved += self._recover_one(path, fd)
            finally:
                os.close(fd)
        with self.db.transaction(write=True) as conn:  # offsets of journals that are gone
            names = [r[0] for r in conn.execute(select(audit_journal.c.name))]
            gone = [n for n in names if n != self._name and not (self.directory / n).exists()]
            if gone:
                conn.execute(delete(audit_journal).where(audit_journal.c.name.in_(gone)))
        return moved

    # -- internals --------------------------------------------------------------------------------

    def _open(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._name = f"reads-{os.getpid()}-{uuid.uuid4().hex[:12]}{SUFFIX}"
        # Locked under a name recover() ignores, then renamed: no other process can take it for a
        # dead one's between its creation and its lock.
        hidden = self.directory / f".{self._name}.new"
        self._fd = os.open(hidden, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # live: recover() leaves it alone
        os.rename(hidden, self.directory / self._name)
        self._written = 0

    def _maybe_rotate(self) -> None:
        with self._lock:
            if self._written < ROTATE_BYTES or self._pending or self._fd < 0:
                return
            old_fd, old_name = self._fd, self._name
            self._open()
            self._retired.append(old_name)
        (self.directory / old_name).unlink(missing_ok=True)  # fully drained: its offset row says so
        os.close(old_fd)

    def _run(self) -> None:
        while True:
            woke = self._wake.wait(IDLE_SECONDS)
            self._wake.clear()
            if woke and not self._stop:
                time.sleep(GATHER_SECONDS)  # let a group gather
            try:
                self.flush()
            except Exception:
                log.exception("audit: moving journalled read records into the chain failed; retrying")
                time.sleep(1.0)
                continue
            with self._lock:
                if (self._stop or not woke) and not self._pending:
                    self._thread = None
                    return

    def _recover_one(self, path: Path, fd: int) -> int:
        with self.db.transaction(write=True) as conn:
            row = conn.execute(select(audit_journal.c.drained).where(audit_journal.c.name == path.name)).first()
            start = int(row[0]) if row else 0
            os.lseek(fd, start, os.SEEK_SET)
            chunks = []
            while chunk := os.read(fd, 1 << 20):
                chunks.append(chunk)
            events = []
            for line in b"".join(chunks).splitlines():
                try:
                    events.append(orjson.loads(line))
                except orjson.JSONDecodeError:  # a write cut off by the crash: its request got no answer
                    log.warning("audit: skipped a damaged line in %s", path.name)
            self.trail.append(conn, events)
            conn.execute(delete(audit_journal).where(audit_journal.c.name == path.name))
        path.unlink(missing_ok=True)
        if events:
            log.info("audit: recovered %d read records from %s", len(events), path.name)
        return len(events)


def _set_offset(conn: Connection, name: str, drained: int) -> None:
    done = conn.execute(update(audit_journal).where(audit_journal.c.name == name).values(drained=drained))
    if done.rowcount == 0:
        conn.execute(insert(audit_journal).values(name=name, drained=drained))


def _still_there(path: Path, fd: int) -> bool:
    """Whether `path` still names the file open as `fd` (not unlinked by whoever recovered it)."""
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False
