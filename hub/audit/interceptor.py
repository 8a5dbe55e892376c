"""The audit step of the interaction pipeline: the last interceptor, so it sees every decision.

Where the records are written, so that none is lost and none describes something that did not happen:
- writes (and everything in a batch or transaction): in the interaction's own transaction, from the
  top-level `after()`; bundle entries only queue their records, so the chain lock is taken once,
  last, and briefly;
- reads: into this process's audit journal right after the read commits, so before `Pipeline.run`
  returns and the response is sent (a failed journal write fails the request); a background
  thread moves them into the hash chain in batches (hub/audit/journal.py), and `prepare` flushes
  the journal before anything reads the trail;
- refusals and failures (401/403/404 ...): after the interaction's transaction rolled back, in a
  transaction of their own, with the refusals of any bundle entries.
"""

from __future__ import annotations

import logging
from typing import Any

from hub.audit import subjects
from hub.audit.chain import AuditTrail
from hub.audit.record import Touched, rest_events
from hub.audit.refusals import pipeline_recorded_refusal
from hub.formats.outcome import FhirError
from hub.pipeline import (
    BATCH,
    CAPABILITIES,
    CREATE,
    DELETE,
    PATCH,
    SEARCH_SYSTEM,
    TRANSACTION,
    UPDATE,
    Context,
    Interaction,
    Result,
)

log = logging.getLogger("hub.audit")

PENDING = "audit-pending"
GROUPS = "audit-bundle-writes"
GROUPED = (CREATE, UPDATE, PATCH, DELETE)
AUDIT_TYPE = "AuditEvent"
AUDITOR = "auditor"
TRAIL_READERS = ("$access-log", "$avg-export", "$avg-erase")  # operations that read the audit trail


def targets_trail(i: Interaction) -> bool:
    if AUDIT_TYPE in (i.res_type, i.compartment_type):
        return True
    if i.kind == SEARCH_SYSTEM:
        return any(AUDIT_TYPE in v.split(",") for k, v in i.params if k == "_type")
    return False


def guard_trail(i: Interaction) -> None:
    """The trail is written by the hub alone and read by auditors alone."""
    if i.kind in (CREATE, UPDATE, PATCH, DELETE) and i.res_type == AUDIT_TYPE:
        raise FhirError(405, "not-supported", "AuditEvents are written by the hub itself; they cannot be changed")
    p = i.principal
    if p.kind == "local":
        return
    if p.organisation_type != AUDITOR or p.patient_id is not None:
        raise FhirError(403, "forbidden", "only an auditor's system may read the audit trail")


class Audit:
    def __init__(self, trail: AuditTrail) -> None:
        self.trail = trail
        self.bsns = subjects.BsnCache()

    def prepare(self, i: Interaction) -> None:
        """Before the transaction: whatever reads the trail sees every read journalled so far, and a
        write's records follow the reads before it in the chain (its order stays the order of events)."""
        if i.writes or targets_trail(i) or i.operation in TRAIL_READERS or i.kind in (BATCH, TRANSACTION):
            self.trail.flush()

    def before(self, ctx: Context) -> None:
        i = ctx.interaction
        if targets_trail(i):
            guard_trail(i)
        subjects.before_delete(ctx)

    def after(self, ctx: Context, result: Result) -> None:
        i = ctx.interaction
        if i.kind == CAPABILITIES:
            return
        if i.kind in GROUPED and i.res_type == "Patient":  # its BSN may have changed
            for pid in {i.res_id, result.stored.res_id if result.stored else None} - {None}:
                self.bsns.forget(str(pid))
        if ctx.parent is not None and i.kind in GROUPED:
            # A bundle's writes: one record per kind of write and patient, made when the bundle ends
            # (a loaded patient record makes a few records listing its resources, not thousands).
            groups: dict[str, list[subjects.Written]] = ctx.root.facts.setdefault(GROUPS, {})
            groups.setdefault(i.kind, []).append(subjects.written(ctx, result))
            return
        # A bundle's entries have records of their own; the trail's readers touch no patient data.
        skip = targets_trail(i) or i.kind in (BATCH, TRANSACTION)
        seen = Touched() if skip else subjects.touched(ctx, result, self.bsns)
        events = rest_events(i, result.status, seen, ctx.facts)
        if ctx.parent is not None:
            self._queue(ctx, events)
            return  # the bundle's own after() writes its entries' records
        for kind, writes in ctx.facts.pop(GROUPS, {}).items():
            like = Interaction(
                kind,
                principal=i.principal,
                base_url=i.base_url,
                request_headers=i.request_headers,
                client_address=i.client_address,
            )
            self._queue(ctx, rest_events(like, 200, subjects.touched_by(ctx.conn, writes), {}))
        pending = self._queue(ctx, events)
        batch = list(pending)
        pending.clear()
        if i.writes:
            self.trail.append(ctx.conn, batch)
        else:
            ctx.on_commit(lambda: self.trail.journal_read(batch))

    def failed(self, ctx: Context, error: FhirError) -> None:
        i = ctx.interaction
        if i.kind == CAPABILITIES:
            return
        try:
            seen = Touched() if targets_trail(i) else subjects.touched(ctx, None, self.bsns)
        except Exception:  # the transaction may be unusable by now; log the refusal without patients
            log.warning("audit: could not determine the patients of a failed %s", i.kind, exc_info=True)
            seen = Touched()
        text = "; ".join(x.diagnostics for x in error.issues if x.diagnostics) or str(error)
        pending = self._queue(ctx, rest_events(i, error.status, seen, ctx.facts, f"{error.status} {text}"))
        if ctx.parent is not None:
            return
        if error.status == 401:
            pipeline_recorded_refusal()
        # Whatever succeeded inside this interaction is rolled back with it: keep only the failures.
        ctx.facts.pop(GROUPS, None)
        failures = [e for e in pending if e["outcome"] != "0"]
        pending.clear()
        ctx.on_rollback(lambda: self.trail.write(failures))

    @staticmethod
    def _queue(ctx: Context, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        pending: list[dict[str, Any]] = ctx.root.facts.setdefault(PENDING, [])
        pending.extend(events)
        return pending
