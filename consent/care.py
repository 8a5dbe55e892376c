"""Care-process relations (implied consent) kept as rows.

An organisation named as owner of a patient's live Task (eOverdracht, referral) or as performer of
a live ServiceRequest takes part in that patient's care (consent/decision.py, rule 6). The naming
reference may point at an Organization the hub holds (then its URA / AGB identifiers count, as
they are now) or carry the identifier itself. `care_relation` holds one row per (carrier,
organisation key); a reference to an Organization without such an identifier keeps a row with no
key, so that Organization's later identifier is picked up when it is written.

`refresh` rederives the rows of the given carriers, and of every carrier naming the given
Organizations, from the current versions and their index rows; the consent step calls it after
each write of a Task, ServiceRequest or Organization, in the write's transaction.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import Connection, and_, delete, exists, insert, not_, or_, select

from consent.model import ORG_KEY_SYSTEMS
from hub.store.keys import pairs_in
from hub.store.tables import care_relation, idx_reference, idx_token, resource

CARRIERS = {"Task": "owner", "ServiceRequest": "performer"}  # resource type -> naming parameter
WATCHED = frozenset({*CARRIERS, "Organization"})  # writes of these types refresh relations
ENDED_STATUSES = ("cancelled", "rejected", "entered-in-error", "revoked")
_CHUNK = 400

Row = tuple[str, str, str, str | None, str | None]  # carrier type, id, patient, org id, org key


def refresh(conn: Connection, carriers: Iterable[tuple[str, str]], organisations: Iterable[str] = ()) -> None:
    keys = {(t, i) for t, i in carriers if t in CARRIERS}
    orgs = sorted(set(organisations))
    cr = care_relation.c
    for n in range(0, len(orgs), _CHUNK):
        naming = select(cr.carrier_type, cr.carrier_id).where(cr.org_id.in_(orgs[n : n + _CHUNK]))
        keys.update((t, i) for t, i in conn.execute(naming))
    ordered = sorted(keys)
    for n in range(0, len(ordered), _CHUNK):
        chunk = ordered[n : n + _CHUNK]
        conn.execute(delete(care_relation).where(pairs_in(cr.carrier_type, cr.carrier_id, chunk)))
        rows = derive(conn, chunk)
        if rows:
            names = ("carrier_type", "carrier_id", "patient_id", "org_id", "org_key")
            conn.execute(insert(care_relation), [dict(zip(names, row, strict=True)) for row in sorted(rows, key=str)])


def derive(conn: Connection, carriers: list[tuple[str, str]]) -> set[Row]:
    """The relation rows of these carriers as they stand (none for a deleted or ended one)."""
    c, ref = resource.c, idx_reference.c
    ended = exists().where(
        idx_token.c.resource_pk == c.pk, idx_token.c.param == "status", idx_token.c.code.in_(ENDED_STATUSES)
    )
    naming = select(c.res_type, c.res_id, c.patient_id, ref.target_type, ref.target_id, ref.id_system, ref.id_value)
    naming = naming.join_from(resource, idx_reference, ref.resource_pk == c.pk).where(
        pairs_in(c.res_type, c.res_id, carriers),
        c.is_current,
        not_(c.deleted),
        c.patient_id.is_not(None),
        or_(*(and_(ref.res_type == t, ref.param == p) for t, p in CARRIERS.items())),
        not_(ended),
    )
    found = list(conn.execute(naming))
    org_keys = _organisation_keys(conn, sorted({r.target_id for r in found if r.target_type == "Organization"}))
    rows: set[Row] = set()
    for t, i, patient, target_type, target_id, id_system, id_value in found:
        prefix = ORG_KEY_SYSTEMS.get(id_system or "")
        if prefix and id_value:
            rows.add((t, i, patient, None, f"{prefix}:{id_value}"))
        if target_type == "Organization" and target_id:
            keys: list[str | None] = [*org_keys.get(target_id, [])] or [None]  # keyless: followed later
            for key in keys:
                rows.add((t, i, patient, target_id, key))
    return rows


def _organisation_keys(conn: Connection, ids: list[str]) -> dict[str, list[str]]:
    """Organization id -> the keys of its URA / AGB identifiers (current version)."""
    out: dict[str, list[str]] = {}
    o, t = resource.c, idx_token.c
    for n in range(0, len(ids), _CHUNK):
        stmt = (
            select(o.res_id, t.system, t.code)
            .join_from(resource, idx_token, t.resource_pk == o.pk)
            .where(
                o.res_type == "Organization",
                o.res_id.in_(ids[n : n + _CHUNK]),
                o.is_current,
                t.param == "identifier",
                t.system.in_(sorted(ORG_KEY_SYSTEMS)),
                t.code.is_not(None),
            )
        )
        for org_id, system, code in conn.execute(stmt):
            out.setdefault(org_id, []).append(f"{ORG_KEY_SYSTEMS[system]}:{code}")
    return out
