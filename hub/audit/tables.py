"""The audit trail's tables: append-only records (hash-chained) and signed checkpoints.

They live on the store's shared `metadata` (so Alembic's comparison and the test fixtures see them)
but are declared here, next to the code that alone writes them. Migrations 0003 and 0008 create them.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, DateTime, Index, Integer, String, Table, Text

from hub.store.tables import metadata

SEQ = BigInteger().with_variant(Integer(), "sqlite")

# One row per AuditEvent. `content` is the canonical JSON that is hashed; the other columns are a
# search index derived from it (hub audit verify checks that they still agree with the content).
# Few indexes, mostly on keys that grow with time: every read writes a row, and each index costs
# (7 indexes made an insert + commit 3x dearer on SQLite). BSN and entity searches go through the
# patient (hub/audit/api.py).
audit_record = Table(
    "audit_record",
    metadata,
    Column("seq", SEQ, primary_key=True, autoincrement=False),  # position in the chain; AuditEvent.id
    Column("recorded", DateTime(timezone=False), nullable=False),  # UTC
    Column("type", String(64), nullable=False),  # AuditEvent.type.code (rest, 110114 ...)
    Column("subtype", String(64), nullable=True),  # read, search-type, create ... / login
    Column("action", String(1), nullable=False),  # C R U D E
    Column("outcome", String(2), nullable=False),  # 0 4 8 12
    Column("patient_id", String(64), nullable=True),  # Patient/[id] the record is about
    Column("bsn", String(16), nullable=True),
    Column("user_id", String(128), nullable=True),  # the professional (UZI/AGB), patient login or client
    Column("client_id", String(100), nullable=True),
    Column("organisation", String(16), nullable=True),  # URA, else AGB, of the responsible organisation
    Column("entity", String(200), nullable=True),  # the first data object, Type/id
    Column("content", Text, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    Index("ix_audit_record_recorded", "recorded"),
    Index("ix_audit_record_patient", "patient_id", "recorded"),
    Index("ix_audit_record_user", "user_id"),
    Index("ix_audit_record_organisation", "organisation", "recorded"),
)

# Every N records or T seconds the chain's head is signed with the hub's key, so rewriting the chain
# from some record onward (recomputing every hash) is still detected.
audit_checkpoint = Table(
    "audit_checkpoint",
    metadata,
    Column("seq", SEQ, primary_key=True, autoincrement=False),  # the record the checkpoint seals
    Column("hash", String(64), nullable=False),
    Column("created", DateTime(timezone=False), nullable=False),
    Column("kid", String(100), nullable=False),
    Column("signature", Text, nullable=False),  # compact JWS over {"seq", "hash", "created"}
)

# How far each process's read-record journal (hub/audit/journal.py) has been moved into the chain:
# the byte offset moves in the same transaction as the records (migration 0008).
audit_journal = Table(
    "audit_journal",
    metadata,
    Column("name", String(100), primary_key=True),  # the journal file's name
    Column("drained", BigInteger, nullable=False),  # bytes of it already in audit_record
)
