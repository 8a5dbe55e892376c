"""The audit trail's storage: an append-only, hash-chained table with signed checkpoints.

Record n stores `hash_n = SHA-256(hash_{n-1} + canonical JSON_n)` (hex), so editing, deleting or
reordering any record breaks the chain from that point on; a signed checkpoint every N records or
T seconds also catches a chain rewritten from some record onward. Writers keep the chain linear by
holding the chain lock while they read the head and append: PostgreSQL a transaction-scoped advisory
lock, SQLite its write lock (write transactions begin IMMEDIATE).
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
from joserfc import jws
from sqlalchemy import Connection, insert, select

from hub.audit.journal import ReadJournal
from hub.audit.tables import audit_checkpoint, audit_record
from hub.store.database import Database
from hub.store.repository import utcnow

GENESIS = "0" * 64
# The advisory lock all audit writers of one hub take: keyed by this schema's audit table, so hubs
# (or test runs) in other schemas of the same database do not queue behind each other.
_PG_LOCK = f"pg_advisory_xact_lock({0x6875_6261_0000_0000} + 'audit_record'::regclass::oid::bigint)"
PATIENT_ROLE, DATA_ROLE = "1", "4"  # object-role codes of the patient and of a data object


def canonical(event: dict[str, Any]) -> str:
    """The exact text that is stored and hashed: sorted keys, no whitespace."""
    return orjson.dumps(event, option=orjson.OPT_SORT_KEYS).decode()


def link(prev_hash: str, content: str) -> str:
    return hashlib.sha256((prev_hash + content).encode()).hexdigest()


def parse_recorded(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).replace(tzinfo=None)


def columns_of(event: dict[str, Any]) -> dict[str, Any]:
    """The search columns of a record, derived from its AuditEvent (writer and verifier agree)."""
    patient = bsn = user = client = org = entity = None
    for e in event.get("entity", []):
        role = e.get("role", {}).get("code")
        what = e.get("what", {})
        if role == PATIENT_ROLE and patient is None:
            patient = what.get("reference", "").removeprefix("Patient/") or None
            bsn = what.get("identifier", {}).get("value")
        elif role == DATA_ROLE and entity is None and what.get("reference"):
            entity = what["reference"].split("/_history/")[0][:200]
    for a in event.get("agent", []):
        code = a.get("type", {}).get("coding", [{}])[0].get("code")
        ident = a.get("who", {}).get("identifier", {}).get("value")
        if a.get("requestor") and user is None:
            user = ident
        if code == "110150" and client is None:
            client = ident
        elif code == "PROV" and org is None:
            org = ident
    subtype = event.get("subtype") or [{}]
    return {
        "recorded": parse_recorded(event["recorded"]),
        "type": event["type"]["code"],
        "subtype": subtype[0].get("code"),
        "action": event["action"],
        "outcome": event["outcome"],
        "patient_id": patient,
        "bsn": bsn,
        "user_id": user,
        "client_id": client,
        "organisation": org,
        "entity": entity,
    }


def sign_checkpoint(keys: Any, seq: int, hash_: str, created: datetime) -> tuple[str, str]:
    key = keys.signing
    payload = orjson.dumps({"seq": seq, "hash": hash_, "created": created.isoformat()}, option=orjson.OPT_SORT_KEYS)
    return str(key.kid), jws.serialize_compact({"alg": "RS256", "kid": key.kid}, payload, key)


class _Ticket:
    __slots__ = ("done", "error", "events")

    def __init__(self, events: list[dict[str, Any]]) -> None:
        self.events = events
        self.done = False
        self.error: BaseException | None = None


# Plain SQL on the hot path (one record per read): no statement compilation or caching per call.
_COLUMNS = [c.name for c in audit_record.columns]
_SEQ, _HASH = _COLUMNS.index("seq"), _COLUMNS.index("hash")
_HEAD = "SELECT seq, hash FROM audit_record ORDER BY seq DESC LIMIT 1"
_INSERT = {
    style: f"INSERT INTO audit_record ({', '.join(_COLUMNS)}) VALUES ({', '.join(mark for _ in _COLUMNS)})"
    for style, mark in (("qmark", "?"), ("format", "%s"))
}
_GUARDED_INSERT = {
    style: f"INSERT INTO audit_record ({', '.join(_COLUMNS)}) SELECT {', '.join(mark for _ in _COLUMNS)} "
    f"WHERE EXISTS (SELECT 1 FROM audit_record WHERE seq = {mark} AND hash = {mark}) ON CONFLICT (seq) DO NOTHING"
    for style, mark in (("qmark", "?"), ("format", "%s"))
}


def _rows(events: Sequence[dict[str, Any]], seq: int, prev: str, sqlite: bool) -> list[tuple[Any, ...]]:
    """The rows that append `events` after record `seq` (whose hash is `prev`)."""
    rows = []
    for event in events:
        seq += 1
        event["id"] = str(seq)  # the chain position is the id: reads by id are primary-key look-ups
        content = canonical(event)
        digest = link(prev, content)
        row = {**columns_of(event), "seq": seq, "content": content, "prev_hash": prev, "hash": digest}
        if sqlite:  # stored as SQLAlchemy stores DateTime on SQLite, microseconds always written
            row["recorded"] = row["recorded"].strftime("%Y-%m-%d %H:%M:%S.%f")
        rows.append(tuple(row[c] for c in _COLUMNS))
        prev = digest
    return rows


class AuditTrail:
    """Appends AuditEvents to the chain; one per process (hub.app.Services.audit)."""

    def __init__(
        self,
        db: Database,
        keys: Any,
        journal_dir: Path,
        checkpoint_every: int = 1000,
        checkpoint_seconds: float = 300.0,
    ) -> None:
        self.db = db
        self.keys = keys
        self.checkpoint_every = checkpoint_every
        self.checkpoint_seconds = checkpoint_seconds
        self._last_checkpoint: tuple[int, datetime] | None = None  # a hint; the lock makes it safe
        # Reads' records go through a journal file (hub/audit/journal.py); HUB_AUDIT_SYNC_READS=1
        # fsyncs it per read (safe against a machine crash too, at the price of a disk flush each).
        self.journal = ReadJournal(db, self, journal_dir, sync=os.environ.get("HUB_AUDIT_SYNC_READS") == "1")
        self._mutex = threading.Lock()
        self._writer = threading.Lock()  # one group-committing writer per process at a time
        self._queue: list[_Ticket] = []
        self._head: tuple[int, str] | None = None  # the last record this process appended (a hint)

    def write(self, events: Sequence[dict[str, Any]]) -> None:
        """Append in a transaction of its own (reads, refusals, token events); returns once committed.

        Group commit: concurrent callers queue their records, and whoever holds the writer lock commits
        everything queued in one transaction, so threads neither each pay a commit nor fight over the
        database's write lock (SQLite's busy handler sleeps in steps of milliseconds)."""
        if not events:
            return
        self.journal.flush()  # reads journalled before these events come before them in the chain
        ticket = _Ticket(list(events))
        with self._mutex:
            self._queue.append(ticket)
        with self._writer:
            if not ticket.done:
                with self._mutex:
                    batch, self._queue = self._queue, []
                try:
                    with self.db.transaction(write=True) as conn:
                        self.append(conn, [e for t in batch for e in t.events])
                except BaseException as exc:
                    for t in batch:
                        t.error, t.done = exc, True
                    raise
                for t in batch:
                    t.done = True
        if ticket.error is not None:
            raise ticket.error

    def journal_read(self, events: Sequence[dict[str, Any]]) -> None:
        """A read's records: journalled now (before the response leaves), chained in a batch soon."""
        self.journal.append(events)

    def flush(self) -> None:
        """Chain every journalled read record of this process (before the trail is read)."""
        self.journal.flush()

    def append(self, conn: Connection, events: Sequence[dict[str, Any]]) -> None:
        """Append in the caller's write transaction: the records commit or roll back with it."""
        if not events:
            return
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql("SELECT " + _PG_LOCK)
        sqlite = conn.dialect.name == "sqlite"
        style = "qmark" if sqlite else "format"
        cached = self._head
        if cached is not None:
            # This process's idea of the head saves reading it. The first row goes in only if that
            # head is still the last record: it exists with that hash (its transaction committed)
            # and nobody appended after it (no row at the next seq); otherwise read the head.
            rows = _rows(events, *cached, sqlite)
            guard = (*rows[0], cached[0], cached[1])
            if conn.exec_driver_sql(_GUARDED_INSERT[style], guard).rowcount == 1:
                if rows[1:]:
                    conn.exec_driver_sql(_INSERT[style], rows[1:])
                self._settle(conn, rows)
                return
        head = conn.exec_driver_sql(_HEAD).first()
        rows = _rows(events, int(head[0]) if head else 0, str(head[1]) if head else GENESIS, sqlite)
        conn.exec_driver_sql(_INSERT[style], rows)
        self._settle(conn, rows)

    def _settle(self, conn: Connection, rows: list[tuple[Any, ...]]) -> None:
        seq, digest = rows[-1][_SEQ], rows[-1][_HASH]
        self._head = (seq, digest)
        self._maybe_checkpoint(conn, seq, digest)

    def _maybe_checkpoint(self, conn: Connection, seq: int, hash_: str) -> None:
        now = utcnow()
        with self._mutex:
            last = self._last_checkpoint
        if last is None:
            row = conn.execute(
                select(audit_checkpoint.c.seq, audit_checkpoint.c.created)
                .order_by(audit_checkpoint.c.seq.desc())
                .limit(1)
            ).first()
            last = (int(row[0]), row[1]) if row else (0, now)
        due = seq - last[0] >= self.checkpoint_every or (now - last[1]).total_seconds() >= self.checkpoint_seconds
        if not due or seq <= last[0]:
            with self._mutex:
                self._last_checkpoint = last
            return
        kid, signature = sign_checkpoint(self.keys, seq, hash_, now)
        conn.execute(insert(audit_checkpoint).values(seq=seq, hash=hash_, created=now, kid=kid, signature=signature))
        with self._mutex:
            self._last_checkpoint = (seq, now)
