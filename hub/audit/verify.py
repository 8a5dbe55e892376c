"""`hub audit verify`: walk the chain and the signed checkpoints; name the first record tampered with.

Per record, in sequence order:
- a gap in the sequence: that record was deleted;
- content that no longer hashes to the stored hash, or a search column that disagrees with the
  content: the record was edited;
- a record whose link (prev_hash) is not the previous record's hash: if that link is the hash of
  some other record, records were reordered (reported at the first record out of place); otherwise
  the previous record was rewritten with a fresh hash, or the record between them deleted.
Per checkpoint: its signature (the hub's keys) and that the record it seals still has that hash,
which catches a chain recomputed from some record onward, and records deleted from the end.
Records after the last checkpoint can be dropped from the end unnoticed until the next checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from joserfc import jws
from joserfc.errors import JoseError
from sqlalchemy import Connection, select

from hub.audit.chain import GENESIS, columns_of, link
from hub.audit.tables import audit_checkpoint, audit_record
from hub.store.database import Database

_COLUMNS = ("recorded", "type", "subtype", "action", "outcome", "patient_id", "bsn", "user_id",
            "client_id", "organisation", "entity")  # fmt: skip


@dataclass
class Report:
    ok: bool
    records: int
    checkpoints: int
    seq: int | None = None  # the first record found tampered with
    problem: str | None = None

    def line(self) -> str:
        if self.ok:
            return f"OK: {self.records} audit records, {self.checkpoints} signed checkpoints verified"
        return f"FAILED at record {self.seq}: {self.problem}"


def _fail(records: int, checkpoints: int, seq: int, problem: str) -> Report:
    return Report(False, records, checkpoints, seq, problem)


def _checkpoint_problem(cp: Any, keys: Any) -> str | None:
    if keys is None:
        return None
    try:
        obj = jws.deserialize_compact(cp.signature, keys.keyset, algorithms=["RS256"])
        payload = orjson.loads(obj.payload)
    except (JoseError, ValueError, KeyError) as exc:
        return f"checkpoint {cp.seq}: the signature does not verify with the hub's keys ({type(exc).__name__})"
    if payload.get("seq") != cp.seq or payload.get("hash") != cp.hash:
        return f"checkpoint {cp.seq} was edited: its row differs from what was signed"
    return None


def _owner_of_hash(conn: Connection, digest: str) -> int | None:
    return conn.execute(select(audit_record.c.seq).where(audit_record.c.hash == digest)).scalar()


def verify(db: Database, keys: Any) -> Report:
    """Check the whole trail; `keys` (hub.auth.keys.SigningKeys) verifies the checkpoints' signatures."""
    with db.transaction() as conn:
        checkpoints = {
            int(cp.seq): cp for cp in conn.execute(select(audit_checkpoint).order_by(audit_checkpoint.c.seq))
        }
        for cp in checkpoints.values():
            problem = _checkpoint_problem(cp, keys)
            if problem:
                return _fail(0, len(checkpoints), int(cp.seq), problem)
        expected, prev, count, last_cp = 1, GENESIS, 0, 0
        rows = conn.execution_options(yield_per=1000).execute(select(audit_record).order_by(audit_record.c.seq))
        for row in rows:
            seq = int(row.seq)
            if seq != expected:
                return _fail(count, len(checkpoints), expected, f"record {expected} is missing (deleted)")
            if link(row.prev_hash, row.content) != row.hash:
                return _fail(count, len(checkpoints), seq, "edited: its content no longer matches its hash")
            if row.prev_hash != prev:
                owner = _owner_of_hash(conn, row.prev_hash)
                if owner is not None or row.prev_hash == GENESIS:
                    return _fail(count, len(checkpoints), seq, f"reordered: it belongs after record {owner or 0}")
                return _fail(
                    count,
                    len(checkpoints),
                    seq - 1,
                    f"edited: record {seq - 1} was rewritten with a new hash (or a record after it was deleted)",
                )
            try:
                event = orjson.loads(row.content)
                derived = columns_of(event)
            except (ValueError, KeyError, TypeError):
                return _fail(count, len(checkpoints), seq, "edited: its content is not a valid AuditEvent")
            changed = [c for c in _COLUMNS if derived[c] != getattr(row, c)]
            if event.get("id") != str(seq):
                changed.append("seq (the AuditEvent id)")
            if changed:
                return _fail(
                    count, len(checkpoints), seq, f"edited: column {', '.join(changed)} disagrees with its content"
                )
            sealed = checkpoints.get(seq)
            if sealed is not None:
                if sealed.hash != row.hash:
                    return _fail(
                        count,
                        len(checkpoints),
                        last_cp + 1,
                        f"records {last_cp + 1}..{seq} were rewritten: record {seq} differs from its signed checkpoint",
                    )
                last_cp = seq
            prev, expected, count = row.hash, expected + 1, count + 1
        beyond = [s for s in checkpoints if s >= expected]
        if beyond:
            return _fail(
                count,
                len(checkpoints),
                expected,
                f"records {expected}..{beyond[-1]} are missing (deleted); checkpoint {beyond[-1]} sealed them",
            )
    return Report(True, count, len(checkpoints))
