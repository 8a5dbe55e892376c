"""Versioned resource storage: reads, history and batched writes, with index rows in the same transaction.

Writes go through `Repository.apply(writes)`, which handles one interaction or a whole transaction
bundle the same way: lock the targets, read their current versions in one query, work out the new
versions (If-Match, no-op updates, deletes), then write everything in a few bulk statements. Rows of
the search index are replaced in the same transaction, so a search never sees half a write.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson
from sqlalchemy import BigInteger, Connection, and_, any_, bindparam, delete, func, or_, select, update
from sqlalchemy.dialects.postgresql import ARRAY

from hub.formats import jsonfmt
from hub.formats.outcome import FhirError, gone, not_found, precondition_failed
from hub.store import bulk
from hub.store.keys import pairs_in
from hub.store.statistics import WRITTEN
from hub.store.tables import INDEX_TABLES, resource

_CHUNK = 400  # rows per IN (...) list: well under SQLite's variable limit
_PK_ARRAY = ARRAY(BigInteger)


class Indexer(Protocol):
    """What the repository needs from the search side: index rows and the patient compartment."""

    def rows(self, resource: dict[str, Any]) -> dict[str, list[tuple[Any, ...]]]:
        """Index rows per table name, each (res_type, param, *the table's own columns)."""
        ...

    def patient_id(self, resource: dict[str, Any]) -> str | None: ...


@dataclass(slots=True)
class Stored:
    """One stored version of a resource."""

    pk: int
    res_type: str
    res_id: str
    version_id: int
    last_updated: datetime
    deleted: bool
    method: str
    content: bytes | None
    patient_id: str | None = None  # the Patient compartment it was stored in (resource.patient_id)
    _parsed: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def etag(self) -> str:
        return f'W/"{self.version_id}"'

    @property
    def last_modified(self) -> str:
        """RFC 7231 date for the Last-Modified header."""
        return self.last_updated.replace(tzinfo=UTC).strftime("%a, %d %b %Y %H:%M:%S GMT")

    def resource(self) -> dict[str, Any]:
        """The parsed resource (a fresh copy is not made: treat it as read-only)."""
        if self._parsed is None:
            if self.content is None:
                raise gone(f"{self.res_type}/{self.res_id} was deleted")
            self._parsed = orjson.loads(self.content)
        return self._parsed


@dataclass(slots=True)
class Write:
    """One change to apply. `resource` is None for a delete."""

    res_type: str
    res_id: str
    resource: dict[str, Any] | None
    method: str  # POST | PUT | PATCH | DELETE
    if_match: int | None = None
    create_only: bool = False  # POST: the id was just generated; an existing row is a conflict


@dataclass(slots=True)
class WriteResult:
    write: Write
    stored: Stored | None  # None: a delete of something that does not exist
    outcome: str  # created | updated | unchanged | deleted | absent


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def format_instant(ts: datetime) -> str:
    """FHIR instant in UTC with microseconds: 2026-11-22T13:41:00.123456+00:00."""
    return ts.strftime("%Y-%m-%dT%H:%M:%S.%f") + "+00:00"


def new_id() -> str:
    return str(uuid.uuid4())


READ_COLUMNS = (
    resource.c.pk,
    resource.c.res_type,
    resource.c.res_id,
    resource.c.version_id,
    resource.c.last_updated,
    resource.c.deleted,
    resource.c.method,
    resource.c.content,
    resource.c.patient_id,
)
# The hot single-row reads, built once (building the expression per call cost more than the query).
_CURRENT = select(*READ_COLUMNS).where(
    resource.c.res_type == bindparam("t"), resource.c.res_id == bindparam("i"), resource.c.is_current
)
_VERSION = select(*READ_COLUMNS).where(
    resource.c.res_type == bindparam("t"), resource.c.res_id == bindparam("i"), resource.c.version_id == bindparam("v")
)


_LOCK_MANY = "SELECT count(pg_advisory_xact_lock(k)) FROM unnest(%s::bigint[]) AS t(k)"


def stored_from_row(row: Any) -> Stored:
    """A Stored from a row of READ_COLUMNS."""
    return Stored(row[0], row[1], row[2], row[3], row[4], row[5], row[6], row[7], row[8])


class Repository:
    """Resource storage on one connection; the caller owns the transaction."""

    def __init__(self, conn: Connection, indexer: Indexer, clock: Any = utcnow) -> None:
        self.conn = conn
        self.indexer = indexer
        self.clock = clock
        self.postgres = conn.dialect.name == "postgresql"
        self.holder: str | None = None  # the writing organisation, set by the consent step
        self._primed: dict[tuple[str, str], Stored | None] = {}

    def prime(self, res_type: str, res_id: str, stored: Stored | None) -> None:
        """A current version already read along with other data (the consent step reads a resource
        with its authors and rules in one statement): the next `current` of it is answered from it."""
        self._primed[(res_type, res_id)] = stored

    # -- reads ---------------------------------------------------------------------------------

    def current(self, res_type: str, res_id: str) -> Stored | None:
        if self._primed and (res_type, res_id) in self._primed:
            return self._primed.pop((res_type, res_id))
        row = self.conn.execute(_CURRENT, {"t": res_type, "i": res_id}).first()
        return stored_from_row(row) if row else None

    def read(self, res_type: str, res_id: str) -> Stored:
        found = self.current(res_type, res_id)
        if found is None:
            raise not_found(f"{res_type}/{res_id} is not known")
        if found.deleted:
            raise FhirError(410, "deleted", f"{res_type}/{res_id} was deleted", headers={"ETag": found.etag})
        return found

    def vread(self, res_type: str, res_id: str, version_id: int) -> Stored:
        row = self.conn.execute(_VERSION, {"t": res_type, "i": res_id, "v": version_id}).first()
        if row is None:
            if self.current(res_type, res_id) is None:
                raise not_found(f"{res_type}/{res_id} is not known")
            raise not_found(f"{res_type}/{res_id} has no version {version_id}")
        found = stored_from_row(row)
        if found.deleted:
            raise gone(f"Version {version_id} of {res_type}/{res_id} is a deletion")
        return found

    def current_many(self, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], Stored]:
        """Current versions (deleted ones included) of many resources, by (type, id)."""
        keys = list(dict.fromkeys(keys))
        found: dict[tuple[str, str], Stored] = {}
        for i in range(0, len(keys), _CHUNK):
            chunk = keys[i : i + _CHUNK]
            wanted = pairs_in(resource.c.res_type, resource.c.res_id, chunk)
            rows = self.conn.execute(select(*READ_COLUMNS).where(wanted, resource.c.is_current))
            for row in rows:
                s = stored_from_row(row)
                found[(s.res_type, s.res_id)] = s
        return found

    def by_pks(self, pks: Sequence[int]) -> list[Stored]:
        """Rows by primary key, in the order given (search results). PostgreSQL gets the keys as one
        array: psycopg keeps parsed statements of at most 50 parameters and 4,096 characters, so a
        list of 200 ($everything's page) was parsed again on every execution."""
        found: dict[int, Stored] = {}
        for i in range(0, len(pks), _CHUNK):
            chunk = list(pks[i : i + _CHUNK])
            wanted = (
                resource.c.pk == any_(bindparam("pks", chunk, type_=_PK_ARRAY))
                if self.postgres
                else resource.c.pk.in_(chunk)
            )
            for row in self.conn.execute(select(*READ_COLUMNS).where(wanted)):
                found[row[0]] = stored_from_row(row)
        return [found[pk] for pk in pks if pk in found]

    # -- history -------------------------------------------------------------------------------

    def history(
        self,
        res_type: str | None = None,
        res_id: str | None = None,
        since: datetime | None = None,
        at: tuple[datetime, datetime] | None = None,
        before: tuple[datetime, int] | None = None,
        limit: int = 50,
    ) -> list[Stored]:
        """Versions newest first. `before` is the (last_updated, pk) of the previous page's last row,
        so paging stays correct while others write (keyset paging, not offsets)."""
        q = select(*READ_COLUMNS)
        if res_type:
            q = q.where(resource.c.res_type == res_type)
        if res_id:
            q = q.where(resource.c.res_id == res_id)
        if since is not None:
            q = q.where(resource.c.last_updated >= since)
        if at is not None:
            # _at: versions that were current at some point in [start, end]: written by the end, and
            # not already replaced by a newer version at the start.
            start, end = at
            newer = resource.alias("newer")
            q = q.where(resource.c.last_updated <= end).where(
                ~select(newer.c.pk)
                .where(
                    newer.c.res_type == resource.c.res_type,
                    newer.c.res_id == resource.c.res_id,
                    newer.c.last_updated <= start,
                    newer.c.version_id > resource.c.version_id,
                )
                .exists()
            )
        if before is not None:
            ts, pk = before
            q = q.where(or_(resource.c.last_updated < ts, and_(resource.c.last_updated == ts, resource.c.pk < pk)))
        q = q.order_by(resource.c.last_updated.desc(), resource.c.pk.desc()).limit(limit)
        return [stored_from_row(r) for r in self.conn.execute(q)]

    def history_count(
        self, res_type: str | None = None, res_id: str | None = None, since: datetime | None = None
    ) -> int:
        q = select(func.count()).select_from(resource)
        if res_type:
            q = q.where(resource.c.res_type == res_type)
        if res_id:
            q = q.where(resource.c.res_id == res_id)
        if since is not None:
            q = q.where(resource.c.last_updated >= since)
        return int(self.conn.execute(q).scalar_one())

    # -- writes --------------------------------------------------------------------------------

    def lock(self, keys: Iterable[str]) -> None:
        """Serialise writers of the same logical resource (or the same conditional-create criteria).

        PostgreSQL: transaction-scoped advisory locks, taken in sorted order so two transactions
        locking overlapping sets cannot deadlock. SQLite: BEGIN IMMEDIATE already serialises writers.
        """
        if not self.postgres:
            return
        hashes = sorted(
            {int.from_bytes(hashlib.blake2b(k.encode(), digest_size=8).digest(), "big", signed=True) for k in keys}
        )
        if hashes:  # one round trip: the locks are taken in the array's (sorted) order as unnest yields it
            self.conn.exec_driver_sql(_LOCK_MANY, (hashes,))

    def apply(self, writes: Sequence[Write]) -> list[WriteResult]:
        """Apply writes to distinct resources in bulk; raise FhirError (and write nothing) on a failed
        precondition. The caller's transaction makes it all-or-nothing."""
        if not writes:
            return []
        self.lock(f"{w.res_type}/{w.res_id}" for w in writes)
        existing = self.current_many((w.res_type, w.res_id) for w in writes)
        now = self.clock()
        instant = format_instant(now)
        results: list[WriteResult] = []
        retire: list[int] = []  # pks whose is_current flag and index rows go
        new_rows: list[dict[str, Any]] = []
        new_resources: list[dict[str, Any] | None] = []
        pending: list[int] = []  # index into results of each new row

        for w in writes:
            cur = existing.get((w.res_type, w.res_id))
            if w.if_match is not None and (cur is None or cur.deleted or cur.version_id != w.if_match):
                have = "does not exist" if cur is None or cur.deleted else f"is at version {cur.version_id}"
                raise precondition_failed(
                    f"If-Match expected version {w.if_match} of {w.res_type}/{w.res_id}, but it {have}"
                )
            if w.resource is None:  # delete
                if cur is None or cur.deleted:
                    results.append(WriteResult(w, cur, "absent"))
                    continue
                retire.append(cur.pk)
                new_rows.append(self._row(w, cur.version_id + 1, now, None, None, deleted=True))
                new_resources.append(None)
                pending.append(len(results))
                results.append(WriteResult(w, None, "deleted"))
                continue
            if cur is not None and not cur.deleted:
                if w.create_only:
                    raise FhirError(409, "duplicate", f"{w.res_type}/{w.res_id} already exists")
                if _same_content(cur, w.resource):
                    results.append(WriteResult(w, cur, "unchanged"))
                    continue
            version = cur.version_id + 1 if cur is not None else 1
            body = _with_meta(w.resource, w.res_id, version, instant)
            if cur is not None:
                retire.append(cur.pk)
            new_rows.append(
                self._row(w, version, now, jsonfmt.dumps(body), self.indexer.patient_id(body), deleted=False)
            )
            new_resources.append(body)
            pending.append(len(results))
            results.append(WriteResult(w, None, "created" if cur is None or cur.deleted else "updated"))

        self._flush(retire, new_rows, new_resources, pending, results)
        return results

    def _row(
        self, w: Write, version: int, now: datetime, content: bytes | None, patient: str | None, *, deleted: bool
    ) -> dict[str, Any]:
        return {
            "res_type": w.res_type,
            "res_id": w.res_id,
            "version_id": version,
            "last_updated": now,
            "is_current": True,
            "deleted": deleted,
            "method": w.method,
            "patient_id": patient,
            "holder": self.holder,
            "content": content,
        }

    def _flush(
        self,
        retire: list[int],
        new_rows: list[dict[str, Any]],
        new_resources: list[dict[str, Any] | None],
        pending: list[int],
        results: list[WriteResult],
    ) -> None:
        conn = self.conn
        conn.info[WRITTEN] = conn.info.get(WRITTEN, 0) + len(new_rows)  # for the planner statistics
        for i in range(0, len(retire), _CHUNK):
            chunk = retire[i : i + _CHUNK]
            conn.execute(update(resource).where(resource.c.pk.in_(chunk)).values(is_current=False))
            self._drop_index_rows(chunk)
        if not new_rows:
            return
        pks = bulk.allocate_pks(conn, len(new_rows))
        index_rows: dict[str, list[tuple[Any, ...]]] = {}
        resource_rows = []
        for pk, row, body, at in zip(pks, new_rows, new_resources, pending, strict=True):
            row["pk"] = pk
            resource_rows.append(tuple(row[c] for c in bulk.RESOURCE_COLUMNS))
            results[at].stored = Stored(
                pk,
                row["res_type"],
                row["res_id"],
                row["version_id"],
                row["last_updated"],
                row["deleted"],
                row["method"],
                row["content"],
                row["patient_id"],
                body,
            )
            if body is not None:
                bulk.collect_index_rows(pk, self.indexer.rows(body), index_rows)
        bulk.insert_resources(conn, resource_rows)
        bulk.flush_index_rows(conn, index_rows)

    def _drop_index_rows(self, pks: Sequence[int]) -> None:
        for table in INDEX_TABLES.values():
            self.conn.execute(delete(table).where(table.c.resource_pk.in_(pks)))

    def reindex(self, pks_and_resources: Iterable[tuple[int, dict[str, Any]]]) -> int:
        """Rebuild the index rows of current resources (after a new SearchParameter). Returns rows written."""
        written = 0
        batch: list[tuple[int, dict[str, Any]]] = []
        for item in pks_and_resources:
            batch.append(item)
            if len(batch) >= _CHUNK:
                written += self._reindex_batch(batch)
                batch = []
        if batch:
            written += self._reindex_batch(batch)
        return written

    def _reindex_batch(self, batch: list[tuple[int, dict[str, Any]]]) -> int:
        self._drop_index_rows([pk for pk, _ in batch])
        index_rows: dict[str, list[tuple[Any, ...]]] = {}
        for pk, body in batch:
            bulk.collect_index_rows(pk, self.indexer.rows(body), index_rows)
        return bulk.flush_index_rows(self.conn, index_rows)


def _strip_meta(res: dict[str, Any]) -> dict[str, Any]:
    meta = res.get("meta")
    if not isinstance(meta, dict) or not ("versionId" in meta or "lastUpdated" in meta):
        return res
    out = dict(res)
    rest = {k: v for k, v in meta.items() if k not in ("versionId", "lastUpdated")}
    if rest:
        out["meta"] = rest
    else:
        del out["meta"]
    return out


def _same_content(cur: Stored, new: dict[str, Any]) -> bool:
    """An update that changes nothing but meta.versionId/lastUpdated makes no new version."""
    if cur.content is None:
        return False
    old = _strip_meta(cur.resource())
    return old == {**_strip_meta(new), "id": old.get("id")} and new.get("id") in (None, old.get("id"))


def _with_meta(res: dict[str, Any], res_id: str, version: int, instant: str) -> dict[str, Any]:
    """A copy of the resource with the server-assigned id, meta.versionId and meta.lastUpdated."""
    out: dict[str, Any] = {"resourceType": res["resourceType"], "id": res_id}
    meta = dict(res["meta"]) if isinstance(res.get("meta"), dict) else {}
    meta["versionId"] = str(version)
    meta["lastUpdated"] = instant
    # Keep meta right after id, as FHIR's own serialisations do; the rest in the client's order.
    out["meta"] = {"versionId": meta.pop("versionId"), "lastUpdated": meta.pop("lastUpdated"), **meta}
    for k, v in res.items():
        if k not in ("resourceType", "id", "meta"):
            out[k] = v
    return out


__all__ = [
    "Indexer",
    "Repository",
    "Stored",
    "Write",
    "WriteResult",
    "format_instant",
    "new_id",
    "utcnow",
]
