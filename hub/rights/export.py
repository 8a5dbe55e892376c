"""Patient/[id]/$avg-export: the right of access (AVG art. 15) in one Bundle.

What the hub holds about the patient (every current resource in their compartment, including
their consent choices) and who accessed it (the plain-terms access log of hub/audit). Only the
patient's own app (patient-bound token) or the operator may ask; the export is audited as a read.
"""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy import select

from hub.api.everything import members
from hub.api.operations import Operation, register
from hub.audit.access_log import Names, plain
from hub.audit.tables import audit_record
from hub.auth.enforce import OPERATION_NEEDS
from hub.formats.outcome import FhirError, not_found
from hub.pipeline import Context, Result
from hub.search.planner import ReferenceValues
from hub.store.repository import utcnow
from hub.store.tables import idx_reference

MAX_LOG = 10_000


def own_patient(ctx: Context) -> str:
    """The patient of the request, which must be the caller (or the caller the operator)."""
    i = ctx.interaction
    p = i.principal
    if not i.res_id or (p.kind != "local" and p.patient_id != i.res_id):
        raise FhirError(403, "forbidden", f"only the patient themselves may use ${i.operation or ''} on their record")
    found = ctx.repo.current("Patient", i.res_id)
    if found is None or found.deleted:
        raise not_found(f"Patient/{i.res_id} is not known")
    return i.res_id


def _export(ctx: Context) -> Result:
    patient_id = own_patient(ctx)
    local = ReferenceValues(ctx.interaction.base_url).local(idx_reference.c)
    inside = members(ctx.services.search_params, [patient_id], local, ctx.conn.dialect.name)
    pks = [row[0] for row in ctx.conn.execute(inside)]
    stored = sorted(ctx.repo.by_pks(pks), key=lambda s: (s.res_type, s.res_id))
    entries: list[dict[str, Any]] = [
        {"fullUrl": f"{ctx.interaction.base_url}/{s.res_type}/{s.res_id}", "resource": s.resource()}
        for s in stored
        if not s.deleted
    ]
    names = Names(ctx.conn)
    log = ctx.conn.execute(
        select(audit_record.c.content)
        .where(audit_record.c.patient_id == patient_id, audit_record.c.type == "rest")
        .order_by(audit_record.c.seq.desc())
        .limit(MAX_LOG)
    )
    entries += [{"resource": plain(orjson.loads(content), patient_id, names)} for (content,) in log]
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "timestamp": utcnow().strftime("%Y-%m-%dT%H:%M:%SZ"),
        "entry": entries,
    }
    return Result(200, resource=bundle)


register(Operation("avg-export", _export, instance=True, resource_types=("Patient",)))
OPERATION_NEEDS["avg-export"] = ("", "Patient")  # the right is the patient's, whatever the app's scopes
