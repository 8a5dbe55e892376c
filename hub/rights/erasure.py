"""Patient/[id]/$avg-erase: the right to erasure (AVG art. 17), limited by retention rules.

Data a care provider holds falls under the WGBO's retention period (20 years from the last
change; HUB_RETENTION_YEARS): while it runs, erasure is refused with the date it ends. Data only
the patient added (through their app) carries no such duty. When nothing is retained, every
version of every resource in the patient's compartment is removed for good, with its search
index, authorship and consent rules; the audit trail keeps the fact of the erasure (it never held
the content). All in the request's one transaction: an erasure happens entirely or not at all.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, or_, select

from hub.api.everything import members
from hub.api.operations import Operation, register
from hub.auth.enforce import OPERATION_NEEDS
from hub.formats.outcome import FhirError, information
from hub.pipeline import Context, Result
from hub.rights.export import own_patient
from hub.search.planner import ReferenceValues
from hub.store.keys import pairs_in
from hub.store.repository import utcnow
from hub.store.tables import INDEX_TABLES, care_relation, consent_rule, idx_reference, resource, resource_author

_CHUNK = 400


def retained_until(latest: datetime, years: int) -> datetime:
    try:
        return latest.replace(year=latest.year + years)
    except ValueError:  # 29 February
        return latest.replace(year=latest.year + years, day=28)


def _erase(ctx: Context) -> Result:
    patient_id = own_patient(ctx)
    conn = ctx.conn
    local = ReferenceValues(ctx.interaction.base_url).local(idx_reference.c)
    inside = members(ctx.services.search_params, [patient_id], local, conn.dialect.name)
    current = ctx.repo.by_pks([row[0] for row in conn.execute(inside)])
    keys = sorted({(s.res_type, s.res_id) for s in current})
    authors: dict[tuple[str, str], set[str]] = {}
    for i in range(0, len(keys), _CHUNK):
        rows = conn.execute(
            select(resource_author.c.res_type, resource_author.c.res_id, resource_author.c.org).where(
                pairs_in(resource_author.c.res_type, resource_author.c.res_id, keys[i : i + _CHUNK])
            )
        )
        for rt, rid, org in rows:
            authors.setdefault((rt, rid), set()).add(org)
    own = f"patient:{patient_id}"
    held = [s for s in current if authors.get((s.res_type, s.res_id), set()) != {own}]
    years = ctx.services.settings.retention_years
    if held and years > 0:
        latest = max(s.last_updated for s in held)
        until = retained_until(latest, years)
        if until > utcnow():
            raise FhirError(
                409,
                "business-rule",
                f"erasure refused: care providers must keep this record under the WGBO retention period "
                f"({years} years from the last change, {latest:%Y-%m-%d}) until {until:%Y-%m-%d}",
            )
    versions = [
        row[0]
        for i in range(0, max(len(keys), 1), _CHUNK)
        for row in conn.execute(
            select(resource.c.pk).where(
                or_(
                    pairs_in(resource.c.res_type, resource.c.res_id, keys[i : i + _CHUNK]),
                    resource.c.patient_id == patient_id,
                )
            )
        )
    ]
    versions = sorted(set(versions))
    for i in range(0, len(versions), _CHUNK):
        chunk = versions[i : i + _CHUNK]
        for table in INDEX_TABLES.values():
            conn.execute(delete(table).where(table.c.resource_pk.in_(chunk)))
        conn.execute(delete(resource).where(resource.c.pk.in_(chunk)))
    for i in range(0, len(keys), _CHUNK):
        conn.execute(
            delete(resource_author).where(
                pairs_in(resource_author.c.res_type, resource_author.c.res_id, keys[i : i + _CHUNK])
            )
        )
    conn.execute(delete(consent_rule).where(consent_rule.c.patient_id == patient_id))
    conn.execute(delete(care_relation).where(care_relation.c.patient_id == patient_id))
    ctx.facts["erased"] = {"resources": len(keys), "versions": len(versions)}
    text = f"erased {len(keys)} resources ({len(versions)} versions) of Patient/{patient_id}"
    return Result(200, resource=information(text))


register(Operation("avg-erase", _erase, instance=True, resource_types=("Patient",), affects_state=True))
OPERATION_NEEDS["avg-erase"] = ("", "Patient")  # the right is the patient's, whatever the app's scopes
