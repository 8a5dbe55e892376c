"""Whom an interaction touched: the patients (with their BSN) and the data objects, from its results.

Each stored row carries its patient compartment (the store computed it when writing); BSNs come
from a Patient read itself, the per-process cache, or one query for the patients missing. Plus the
patient a request names without returning data (a compartment search, `$everything`, `?patient=`),
so an empty answer is still logged on the patient. BSNs are remembered per process for a few
minutes (`BsnCache`), forgotten when this process writes the Patient.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, and_, bindparam, select

from hub.audit.record import BSN_SYSTEM, Touched
from hub.pipeline import DELETE, Context, Result
from hub.store.repository import Stored
from hub.store.tables import idx_token, resource

_PATIENT_PARAMS = ("patient", "subject", "beneficiary")
_CHUNK = 400


def stored_in(result: Result) -> list[Stored]:
    out: list[Stored] = []
    if result.stored is not None:
        out.append(result.stored)
    bundle = result.resource
    if isinstance(bundle, dict) and bundle.get("resourceType") == "Bundle":
        for entry in bundle.get("entry") or ():
            res = entry.get("resource") if isinstance(entry, dict) else None
            if isinstance(res, Stored):
                out.append(res)
    return out


class BsnCache:
    """Patient id -> BSN (or None: the Patient has none), for `TTL` seconds."""

    TTL = 300.0
    MAX = 50_000

    def __init__(self) -> None:
        self._data: dict[str, tuple[str | None, float]] = {}

    def get(self, patient_id: str) -> tuple[bool, str | None]:
        hit = self._data.get(patient_id)
        if hit is None or hit[1] < time.monotonic():
            return False, None
        return True, hit[0]

    def put(self, patient_id: str, bsn: str | None) -> None:
        if len(self._data) >= self.MAX:
            self._data.clear()
        self._data[patient_id] = (bsn, time.monotonic() + self.TTL)

    def forget(self, patient_id: str) -> None:
        self._data.pop(patient_id, None)


FEW = 3  # results up to which a Patient's BSN is taken from the resource itself rather than queried


def bsn_of(patient: dict[str, Any]) -> str | None:
    for ident in patient.get("identifier") or ():
        if isinstance(ident, dict) and ident.get("system") == BSN_SYSTEM and isinstance(ident.get("value"), str):
            return str(ident["value"])
    return None


def touched(ctx: Context, result: Result | None, cache: BsnCache) -> Touched:
    i = ctx.interaction
    t = Touched()
    known: dict[str, str | None] = {}  # BSNs found on the way (None: the Patient has none)
    rows = stored_in(result) if result is not None else []
    if rows:
        for s in rows:  # each row carries its compartment (resource.patient_id)
            t.add(f"{s.res_type}/{s.res_id}/_history/{s.version_id}", s.patient_id)
            if len(rows) <= FEW and s.content is not None and s.res_type == "Patient" and s.patient_id == s.res_id:
                known[s.res_id] = bsn_of(s.resource())  # a read of the Patient: its BSN is at hand
    elif i.res_type and i.res_id and i.kind not in ("search-compartment", "operation"):
        pre = ctx.facts.get("audit-before")
        owner = pre[0] if pre else _owner_of(ctx.conn, i.res_type, i.res_id)
        t.add(f"{i.res_type}/{i.res_id}", owner)
        if pre and pre[0]:
            known[pre[0]] = pre[1]
    for pid in named_patients(ctx):
        t.patients.setdefault(pid, None)
    need = []
    for pid in t.patients:
        if pid in known:
            cache.put(pid, known[pid])
            t.patients[pid] = known[pid]
            continue
        hit, bsn = cache.get(pid)
        if hit:
            t.patients[pid] = bsn
        else:
            need.append(pid)
    if need:
        found = bsns(ctx.conn, need)
        for pid in need:
            cache.put(pid, found.get(pid))
            t.patients[pid] = found.get(pid)
    return t


@dataclass(slots=True)
class Written:
    """A bundle entry's write; its patient is looked up with the others' when the bundle ends."""

    ref: str
    pk: int | None
    owner: str | None = None
    bsn: str | None = None


def written(ctx: Context, result: Result) -> Written:
    s = result.stored
    if s is not None:
        return Written(f"{s.res_type}/{s.res_id}/_history/{s.version_id}", s.pk)
    i = ctx.interaction
    owner, bsn = ctx.facts.get("audit-before") or (None, None)
    return Written(f"{i.res_type}/{i.res_id}", None, owner, bsn)


def touched_by(conn: Connection, writes: list[Written]) -> Touched:
    t = Touched()
    owners = _owners(conn, [w.pk for w in writes if w.pk is not None])
    for w in writes:
        pid, bsn = owners.get(w.pk, (None, None)) if w.pk is not None else (w.owner, w.bsn)
        t.add(w.ref, pid)
        if pid is not None and bsn is not None:
            t.patients[pid] = bsn
    return t


def named_patients(ctx: Context) -> list[str]:
    """Patients a request names: Patient/[id]/..., and patient/subject parameters."""
    i = ctx.interaction
    out = []
    if i.res_type == "Patient" and i.res_id and i.kind in ("search-compartment", "operation"):
        out.append(i.res_id)
    for name, value in i.params:
        if name.split(":")[0] in _PATIENT_PARAMS:
            for v in value.split(","):
                ref = v.rsplit("/_history/", 1)[0]
                if ref.startswith("Patient/"):
                    out.append(ref[len("Patient/") :])
                elif "/" not in ref and name.split(":")[0] == "patient" and ref:
                    out.append(ref)
    return out


def before_delete(ctx: Context) -> None:
    """A delete leaves no patient column on the new (deleted) version: note it while it is current."""
    i = ctx.interaction
    if i.kind == DELETE and i.res_type and i.res_id:
        owner = _owner_of(ctx.conn, i.res_type, i.res_id)
        bsn = bsns(ctx.conn, [owner]).get(owner) if owner else None
        ctx.facts["audit-before"] = (owner, bsn)


_patient = resource.alias("patient_row")
_bsn = idx_token.alias("bsn_row")
# pk -> (patient compartment, BSN): one statement, built once (only the pk list varies).
_OWNERS = (
    select(resource.c.pk, resource.c.patient_id, _bsn.c.code)
    .outerjoin(
        _patient,
        and_(_patient.c.res_type == "Patient", _patient.c.res_id == resource.c.patient_id, _patient.c.is_current),
    )
    .outerjoin(
        _bsn,
        and_(
            _bsn.c.resource_pk == _patient.c.pk,
            _bsn.c.res_type == "Patient",
            _bsn.c.param == "identifier",
            _bsn.c.system == BSN_SYSTEM,
        ),
    )
    .where(resource.c.pk.in_(bindparam("pks", expanding=True)))
)


def _owners(conn: Connection, pks: list[int]) -> dict[int, tuple[str | None, str | None]]:
    out: dict[int, tuple[str | None, str | None]] = {}
    for n in range(0, len(pks), _CHUNK):
        for pk, pid, bsn in conn.execute(_OWNERS, {"pks": pks[n : n + _CHUNK]}):
            if out.get(int(pk), (None, None))[1] is None:
                out[int(pk)] = (pid, bsn)
    return out


def _owner_of(conn: Connection, res_type: str, res_id: str) -> str | None:
    q = (
        select(resource.c.patient_id)
        .where(resource.c.res_type == res_type, resource.c.res_id == res_id, resource.c.patient_id.is_not(None))
        .order_by(resource.c.version_id.desc())
        .limit(1)
    )
    return conn.execute(q).scalar()


def bsns(conn: Connection, patient_ids: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for n in range(0, len(patient_ids), _CHUNK):
        # The BSN per patient row, not a join: as a join SQLite (no statistics) walked every Patient
        # identifier row and looked up its resource, a cost that grew with the patients held.
        bsn = (
            select(idx_token.c.code)
            .where(
                idx_token.c.resource_pk == resource.c.pk,
                idx_token.c.res_type == "Patient",
                idx_token.c.param == "identifier",
                idx_token.c.system == BSN_SYSTEM,
            )
            .limit(1)
            .scalar_subquery()
        )
        q = select(resource.c.res_id, bsn).where(
            resource.c.res_type == "Patient",
            resource.c.res_id.in_(patient_ids[n : n + _CHUNK]),
            resource.c.is_current,
        )
        for pid, code in conn.execute(q):
            if code is not None:
                out.setdefault(pid, code)
    return out
