"""care-process relations as rows (implied consent)

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-05 09:40:00

The decision point tested implied consent (an organisation named as owner of a patient's live Task
or performer of a live ServiceRequest) with a subquery over idx_reference, idx_token and the
Organizations; PostgreSQL spent about half of a consent-filtered search's planning on it
(bench/README.md). consent/care.py now keeps those relations in `care_relation`, written with the
resources; this migration fills it from the data already held, with the same derivation in SQL,
fixed as it was when written (tests/test_store.py compares it with consent/care.py).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
URA = "http://fhir.nl/fhir/NamingSystem/ura"
AGB = "http://fhir.nl/fhir/NamingSystem/agb-z"

# The carrier c (current, live, in a patient's compartment) and its naming reference r.
_CARRIER = """
    FROM resource c JOIN idx_reference r ON r.resource_pk = c.pk"""
_LIVE = """
    WHERE c.is_current AND NOT c.deleted AND c.patient_id IS NOT NULL
      AND ((r.res_type = 'Task' AND r.param = 'owner') OR (r.res_type = 'ServiceRequest' AND r.param = 'performer'))
      AND NOT EXISTS (SELECT 1 FROM idx_token s WHERE s.resource_pk = c.pk AND s.param = 'status'
                      AND s.code IN ('cancelled', 'rejected', 'entered-in-error', 'revoked'))"""
# The URA / AGB identifiers t of the referenced Organization o (its current version).
_ORG = """
    JOIN resource o ON o.res_type = 'Organization' AND o.res_id = r.target_id AND o.is_current
    JOIN idx_token t ON t.resource_pk = o.pk AND t.param = 'identifier' AND t.system IN (:ura, :agb)
                     AND t.code IS NOT NULL"""


def _key(system: str, value: str) -> str:
    return f"CASE {system} WHEN :ura THEN 'ura:' ELSE 'agb:' END || {value}"


# Keys the reference carries itself; keys of the referenced Organization; a keyless row where it
# has none, so its identifier is followed when it gets one (as consent/care.py does).
BACKFILL = f"""
INSERT INTO care_relation (carrier_type, carrier_id, patient_id, org_id, org_key)
SELECT c.res_type, c.res_id, c.patient_id, NULL, {_key("r.id_system", "r.id_value")}
{_CARRIER}{_LIVE} AND r.id_system IN (:ura, :agb) AND r.id_value IS NOT NULL AND r.id_value <> ''
UNION
SELECT c.res_type, c.res_id, c.patient_id, r.target_id, {_key("t.system", "t.code")}
{_CARRIER}{_ORG}{_LIVE} AND r.target_type = 'Organization'
UNION
SELECT c.res_type, c.res_id, c.patient_id, r.target_id, NULL
{_CARRIER}{_LIVE} AND r.target_type = 'Organization' AND r.target_id IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM resource o JOIN idx_token t ON t.resource_pk = o.pk
                  WHERE o.res_type = 'Organization' AND o.res_id = r.target_id AND o.is_current
                    AND t.param = 'identifier' AND t.system IN (:ura, :agb) AND t.code IS NOT NULL)
"""


def backfill(conn: sa.Connection) -> None:
    conn.execute(sa.text(BACKFILL), {"ura": URA, "agb": AGB})


def upgrade() -> None:
    op.create_table(
        "care_relation",
        sa.Column("pk", PK, primary_key=True, autoincrement=True),
        sa.Column("carrier_type", sa.String(64), nullable=False),
        sa.Column("carrier_id", sa.String(64), nullable=False),
        sa.Column("patient_id", sa.String(64), nullable=False),
        sa.Column("org_id", sa.String(64), nullable=True),
        sa.Column("org_key", sa.String(80), nullable=True),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_care_relation")),
    )
    op.create_index("ix_care_relation_org", "care_relation", ["org_key", "patient_id"])
    op.create_index("ix_care_relation_carrier", "care_relation", ["carrier_type", "carrier_id"])
    op.create_index("ix_care_relation_org_id", "care_relation", ["org_id"])
    backfill(op.get_bind())


def downgrade() -> None:
    op.drop_table("care_relation")
