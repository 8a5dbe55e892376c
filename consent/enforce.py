"""Consent enforcement: the interaction-pipeline step after scope authorisation.

Every read path goes through the decision point (consent/decision.py): single resources through
`Context.visible` (read, vread, history, includes, $everything, batch GETs: a hidden resource
looks like one that does not exist), searches through an SQL constraint so totals and paging
count only what may be seen, and chains and `_has` look only into visible rows (hub/search/planner).

Writes keep the consent state current in the same transaction: the organisation that wrote a
resource is recorded as one of its authors, and a written patient-privacy Consent is flattened
into `consent_rule` rows (a withdrawn one loses them), so a change counts from the next request.
"""

from __future__ import annotations

from sqlalchemy import delete, insert, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from consent import care
from consent.decision import BREAK_THE_GLASS_PURPOSES, Decision, Lookups, Subject, subject_of, visibility
from consent.model import is_privacy_consent, org_key_from_identifier, rules_of
from hub.formats.outcome import FhirError, not_found
from hub.pipeline import (
    BATCH,
    CAPABILITIES,
    CREATE,
    DELETE,
    DELETED_ID,
    HISTORY_INSTANCE,
    PATCH,
    READ,
    TRANSACTION,
    UPDATE,
    Context,
    Result,
)
from hub.store.repository import Stored
from hub.store.tables import consent_rule, resource, resource_author

BREAK_THE_GLASS_HEADER = "x-break-glass-reason"
AUTHORS = "consent-authors"  # facts key: (type, id, organisation) written in this interaction
CONSENT_WRITERS = frozenset({"consent-registry"})  # besides the patient (own token) and the operator


class ConsentEnforcement:
    def before(self, ctx: Context) -> None:
        i = ctx.interaction
        p = i.principal
        if i.kind == CAPABILITIES or p.kind == "anonymous":
            return
        reason = (i.request_headers.get(BREAK_THE_GLASS_HEADER) or "").strip() or None
        if p.kind != "local" and p.purpose_of_use in BREAK_THE_GLASS_PURPOSES and not reason:
            raise FhirError(
                403, "forbidden", f"break-the-glass needs a stated reason (the {BREAK_THE_GLASS_HEADER} header)"
            )
        subject = subject_of(p, reason)
        ctx.facts["consent-subject"] = subject
        if i.writes:
            ctx.repo.holder = author_of(subject)  # on the rows this interaction writes (a bundle's too)
        if i.kind in (BATCH, TRANSACTION):
            return  # every entry passes this step on its own
        self._check_privacy_consent_write(ctx, subject)
        if subject.local or subject.patient_id is not None:
            return  # the operator; a patient's own token (hub/auth confines it to its compartment)
        lookups = Lookups(ctx.conn, subject)
        seen: dict[tuple[str, str], int] = ctx.facts.setdefault("consent-decisions", {})

        def visible(c: Context, stored: Stored) -> bool:
            if stored.content is None:  # a deletion marker: only for those who held patient data
                return not hides(stored.res_type) or subject.org in lookups.authors(stored.res_type, stored.res_id)
            decision = lookups.decide(stored.resource(), stored.patient_id)
            key = (decision.rule, decision.consent or "")
            seen[key] = seen.get(key, 0) + 1
            _record(c, decision)
            return decision.permit

        def hides(res_type: str) -> bool:
            """Whether resources of this type can be hidden from this subject at all."""
            return res_type != "Patient" and bool(ctx.services.search_params.compartment_params("Patient", res_type))

        def prefetch(batch: list[Stored]) -> None:
            lookups.prefetch([(s.res_type, s.res_id, s.patient_id) for s in batch if s.content is not None])

        if i.kind == READ and i.res_type and i.res_id and hides(i.res_type) and not subject.break_the_glass:
            # The read and what deciding on it takes, in one round trip instead of two.
            ctx.repo.prime(i.res_type, i.res_id, lookups.read(i.res_type, i.res_id))
        visible.sql_twin = True  # type: ignore[attr-defined]  # == visibility(): searches need not recheck rows
        visible.prefetch = prefetch  # type: ignore[attr-defined]  # Context.prepare_shows
        visible.hides = hides  # type: ignore[attr-defined]  # history gives totals only where nothing can hide
        ctx.visible.append(visible)
        constraint = visibility(subject, ctx.services.search_params, lookups.implied_patients)
        constraint.late = True  # rarely selective: the search engine may test it on a page's candidates only
        ctx.facts.setdefault("search-constraints", []).append(constraint)
        if subject.break_the_glass:
            _record(ctx, Decision(True, "break-the-glass", "break-the-glass", None, subject.break_the_glass))
        if i.kind in (UPDATE, PATCH, DELETE, HISTORY_INSTANCE) and i.res_type and i.res_id:
            current = ctx.repo.current(i.res_type, i.res_id)
            if current is not None and not current.deleted and not visible(ctx, current):
                raise not_found(f"{i.res_type}/{i.res_id} is not known")

    def after(self, ctx: Context, result: Result) -> None:
        i = ctx.interaction
        if i.kind in (BATCH, TRANSACTION):
            _flush_authors(ctx)  # the entries' authorship, in one statement
            return
        if not i.writes:
            return
        stored = result.stored
        if stored is not None:
            _refresh_care(ctx, stored.res_type, stored.res_id)
        else:  # a delete
            _refresh_care(ctx, i.res_type, i.res_id or ctx.facts.get(DELETED_ID))
        subject: Subject | None = ctx.facts.get("consent-subject")
        if stored is not None and not stored.deleted and not (i.kind == CREATE and result.status != 201):
            author = author_of(subject) if subject is not None else None
            if author:
                ctx.root.facts.setdefault(AUTHORS, set()).add((stored.res_type, stored.res_id, author))
                if ctx.parent is None:
                    _flush_authors(ctx)
            if stored.res_type == "Consent":
                refresh_rules(ctx, stored)
        elif i.res_type == "Consent":
            _drop_rules_of_deleted(ctx)

    def failed(self, ctx: Context, error: FhirError) -> None:
        return None

    @staticmethod
    def _check_privacy_consent_write(ctx: Context, subject: Subject) -> None:
        i = ctx.interaction
        if not i.writes or i.res_type != "Consent" or subject.local or subject.patient_id is not None:
            return
        if ctx.interaction.principal.organisation_type in CONSENT_WRITERS:
            return
        body = i.body if isinstance(i.body, dict) else None
        current = ctx.repo.current("Consent", i.res_id) if i.res_id else None
        touches = (body is not None and is_privacy_consent(body)) or (
            current is not None and current.content is not None and is_privacy_consent(current.resource())
        )
        if touches or (i.kind == PATCH and current is None) or (i.kind == DELETE and not i.res_id):
            raise FhirError(
                403, "forbidden", "patient-privacy Consents are written by the patient or the consent registry"
            )


def author_of(subject: Subject) -> str | None:
    """Who is recorded as the writer: the organisation, or the patient writing through a PGO app
    (`patient:<id>`: no retention duty, hub/rights)."""
    if subject.patient_id is not None:
        return f"patient:{subject.patient_id}"
    return subject.org


def _record(ctx: Context, decision: Decision) -> None:
    """The decision the audit record names: the first denial or break-the-glass wins over a permit."""
    current = ctx.facts.get("consent")
    stronger = not decision.permit or decision.break_the_glass
    if current is None or (current["decision"] == "permit" and not current.get("break_the_glass") and stronger):
        ctx.facts["consent"] = decision.fact()


def _flush_authors(ctx: Context) -> None:
    """Record the writers of the interaction's resources (already known pairs are skipped)."""
    pending: set[tuple[str, str, str]] = ctx.root.facts.pop(AUTHORS, set())
    if not pending:
        return
    rows = [{"res_type": t, "res_id": i, "org": o} for t, i, o in sorted(pending)]
    dialect = ctx.conn.dialect.name
    stmt = (pg_insert if dialect == "postgresql" else sqlite_insert)(resource_author).on_conflict_do_nothing()
    ctx.conn.execute(stmt, rows)


def _refresh_care(ctx: Context, res_type: str | None, res_id: str | None) -> None:
    """Care-process relations follow every write of a Task, ServiceRequest or Organization at
    once (not at the end of a bundle): a bundle's reads and later entries see them."""
    if res_type not in care.WATCHED or not res_id:
        return
    if res_type == "Organization":
        care.refresh(ctx.conn, (), [res_id])
    else:
        care.refresh(ctx.conn, [(res_type, res_id)])


def refresh_rules(ctx: Context, stored: Stored) -> None:
    ctx.conn.execute(delete(consent_rule).where(consent_rule.c.consent_id == stored.res_id))
    rules = rules_of(stored.resource(), lambda ref: _resolve_org(ctx, ref))
    if rules:
        ctx.conn.execute(insert(consent_rule), [r.row() for r in rules])


def _drop_rules_of_deleted(ctx: Context) -> None:
    gone = select(resource.c.res_id).where(resource.c.res_type == "Consent", resource.c.is_current, resource.c.deleted)
    ctx.conn.execute(delete(consent_rule).where(consent_rule.c.consent_id.in_(gone)))


def _resolve_org(ctx: Context, ref: str) -> str | None:
    kind, _, org_id = ref.partition("/")
    if kind != "Organization" or not org_id:
        return None
    found = ctx.repo.current("Organization", org_id)
    if found is None or found.content is None:
        return None
    for ident in found.resource().get("identifier") or []:
        key = org_key_from_identifier(ident)
        if key is not None:
            return key
    return None
