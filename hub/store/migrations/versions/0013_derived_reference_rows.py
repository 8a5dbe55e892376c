"""derived reference parameters: drop the rows that repeated another reference parameter's rows

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-05 17:20:00

A reference parameter whose expression is another's restricted to one target type (Observation
`patient` = `subject.where(resolve() is Patient)`) no longer gets rows of its own; searches read the
source's rows with that target type (hub/search/extract.py derived_references). Their old rows are
dropped here, except where a stored custom SearchParameter defines the code or its source on that
type (then the parameter is no longer derived and its rows are its own). The list is fixed here, as
the standard definitions were when this was written. Downgrading does not bring the rows back: an
older hub needs them re-indexed.
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

_PATIENT_SUBJECT = ("patient", "subject")
DERIVED: dict[str, tuple[tuple[str, str], ...]] = {  # type -> (derived code, source code)
    "Account": (_PATIENT_SUBJECT,),
    "Appointment": (("location", "actor"), ("patient", "actor"), ("practitioner", "actor")),
    "AppointmentResponse": (("location", "actor"), ("patient", "actor"), ("practitioner", "actor")),
    "Encounter": (_PATIENT_SUBJECT, ("practitioner", "participant")),
    "Person": (("patient", "link"), ("practitioner", "link"), ("relatedperson", "link")),
    "Provenance": (("patient", "target"),),
    **{
        rt: (_PATIENT_SUBJECT,)
        for rt in (
            "Basic", "CarePlan", "CareTeam", "ChargeItem", "ClinicalImpression", "Communication",
            "CommunicationRequest", "Composition", "Condition", "Contract", "DeviceRequest", "DiagnosticReport",
            "DocumentManifest", "DocumentReference", "Flag", "Goal", "GuidanceResponse", "ImagingStudy",
            "Invoice", "List", "MeasureReport", "Media", "MedicationAdministration", "MedicationDispense",
            "MedicationRequest", "MedicationStatement", "Observation", "Procedure", "QuestionnaireResponse",
            "RequestGroup", "RiskAssessment", "ServiceRequest", "Specimen", "Task",
        )
    },
}  # fmt: skip


def upgrade() -> None:
    conn = op.get_bind()
    custom: set[tuple[str, str]] = set()  # (base, code) a stored custom SearchParameter defines
    rows = conn.execute(
        sa.text(
            "SELECT content FROM resource WHERE res_type = 'SearchParameter' AND is_current AND NOT deleted"
            " AND content IS NOT NULL"
        )
    )
    for (content,) in rows:
        sp = json.loads(bytes(content))
        custom |= {(base, sp.get("code")) for base in sp.get("base") or []}
    delete = sa.text("DELETE FROM idx_reference WHERE res_type = :rt AND param = :code")
    for rt, pairs in DERIVED.items():
        for code, source in pairs:
            if not any((b, c) in custom for b in (rt, "Resource", "DomainResource") for c in (code, source)):
                conn.execute(delete, {"rt": rt, "code": code})


def downgrade() -> None:
    pass  # the rows are not restored (see above)
