"""The hub's tables (SQLAlchemy Core). Alembic migrations in `migrations/` create exactly these.

`resource` keeps every version of every resource; the current one is flagged (`is_current`) and a
partial unique index makes sure there is only one, which is also what makes concurrent writers safe:
two transactions cannot both promote a new current version.

The `idx_*` tables hold search-index rows for the *current* version of each resource, written in the
same transaction as the resource itself (see hub/search/indexer.py). Every row carries `res_type` and
`param` so the common search (type, parameter, value) is one index range scan.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    text,
)

# Naming convention so Alembic migrations get stable constraint names on both databases.
metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# BIGINT on PostgreSQL, INTEGER (the rowid alias, autoincrementing) on SQLite.
PK = BigInteger().with_variant(Integer(), "sqlite")

# SQLite uses a partial index only where a query states its condition as written, and SQLAlchemy
# writes the filter `resource.c.is_current` there as `is_current = 1` (migration 0014).
CURRENT_SQLITE = text("is_current = 1")

resource = Table(
    "resource",
    metadata,
    Column("pk", PK, primary_key=True, autoincrement=True),
    Column("res_type", String(64), nullable=False),
    Column("res_id", String(64), nullable=False),
    Column("version_id", Integer, nullable=False),
    Column("last_updated", DateTime(timezone=False), nullable=False),  # UTC
    Column("is_current", Boolean, nullable=False),
    Column("deleted", Boolean, nullable=False, default=False),
    Column("method", String(8), nullable=False),  # POST | PUT | PATCH | DELETE (history request.method)
    Column("patient_id", String(64), nullable=True),  # the Patient compartment this row belongs to
    # One organisation that wrote this resource (consent: its authors always see it); the full set is
    # resource_author. On the row so the usual "we hold this" test needs no look-up per row.
    Column("holder", String(80), nullable=True),
    Column("content", LargeBinary, nullable=True),  # the resource as served (JSON bytes); NULL when deleted
    Index("uq_resource_version", "res_type", "res_id", "version_id", unique=True),
    Index(
        "uq_resource_current",
        "res_type",
        "res_id",
        unique=True,
        sqlite_where=CURRENT_SQLITE,
        postgresql_where=text("is_current"),
    ),
    Index("ix_resource_type_updated", "res_type", "last_updated"),
    Index("ix_resource_updated", "last_updated"),
    Index(
        "ix_resource_patient",
        "patient_id",
        "res_type",
        sqlite_where=CURRENT_SQLITE,
        postgresql_where=text("is_current"),
    ),
)


def _only_on(dialect: str, name: str, table: Table, *columns: str) -> None:
    """An index that one database gets (its `only_on` keeps the migration check to that database)."""
    Index(name, *(table.c[c] for c in columns), info={"only_on": dialect}).ddl_if(dialect=dialect)


# SQLite only (migration 0007): the columns searches test per row, so they need not read the
# inline content; PostgreSQL keeps large content out of line and joins by hash.
_COVER = ("pk", "res_type", "is_current", "deleted", "patient_id", "res_id", "holder")
_only_on("sqlite", "ix_resource_cover", resource, *_COVER)


def _index_table(name: str, *columns: Column, indexes: tuple[tuple[str, ...], ...], by_resource: bool = True) -> Table:
    table = Table(
        name,
        metadata,
        Column("resource_pk", PK, ForeignKey("resource.pk", ondelete="CASCADE"), nullable=False),
        Column("res_type", String(64), nullable=False),
        Column("param", String(100), nullable=False),
        *columns,
    )
    if by_resource:
        Index(f"ix_{name}_resource", table.c.resource_pk)
    for cols in indexes:
        Index(f"ix_{name}_{'_'.join(cols)}", *(table.c[c] for c in cols))
    return table


# string: `value` is normalised (lower case, accents stripped) for the default prefix match and
# :contains; `exact` is the original text for :exact.
idx_string = _index_table(
    "idx_string",
    Column("value", Text, nullable=False),
    Column("exact", Text, nullable=False),
    indexes=(("res_type", "param", "value"),),
)

# token: system|code, plus normalised display text (:text) and an Identifier's type (:of-type).
idx_token = _index_table(
    "idx_token",
    Column("system", Text, nullable=True),
    Column("code", Text, nullable=True),
    Column("text", Text, nullable=True),
    Column("type_system", Text, nullable=True),
    Column("type_code", Text, nullable=True),
    indexes=(),
    by_resource=False,
)
# The search index ends in resource_pk (SQLite: migration 0015, PostgreSQL: 0018), so the rows of one
# system|code come in the order resources were written: a first page walks them and stops after the
# page, where the default order needs the whole `pk IN (...)` list built first (hub.search.planner
# token_driver). SQLite's index by resource carries the key too: SQLite, without statistics, takes
# the index that tests the most columns by equality without reading the table, and a look-up of one
# resource's rows of a parameter (the audit's BSN, consent's categories, a sort key) would otherwise
# walk every row of that parameter through the search index, which tests res_type and param and
# holds resource_pk. PostgreSQL plans by cost and keeps the narrow one.
_TOKEN_KEY = ("res_type", "param", "code", "system")
Index("ix_idx_token_key_resource", *(idx_token.c[c] for c in (*_TOKEN_KEY, "resource_pk")))
_only_on("postgresql", "ix_idx_token_resource", idx_token, "resource_pk")
_only_on("sqlite", "ix_idx_token_resource_key", idx_token, "resource_pk", *_TOKEN_KEY)

# reference: a local target (type/id[/version]) or an absolute / canonical URL, plus
# Reference.identifier for :identifier. The most numerous index rows (about 40 %), so one search
# index serves every search by target, led by the id (the most selective column: a search names it,
# a chain or _has gives a set of them, a _revinclude the targets); rows that carry a URL or an
# identifier, few, get partial indexes of their own (migration 0012).
idx_reference = _index_table(
    "idx_reference",
    Column("target_type", String(64), nullable=True),
    Column("target_id", String(64), nullable=True),
    Column("target_version", String(64), nullable=True),
    Column("url", Text, nullable=True),
    Column("id_system", Text, nullable=True),
    Column("id_value", Text, nullable=True),
    indexes=(),
)
# SQLite's search index also holds what a list of referring resources reads from each row (the
# `url` of the local-reference test and `resource_pk`), so chains, _has, compartments and reference
# searches never read the table: `Observation?patient.gender=male` at 1,200 patients built its
# list of 204,660 rows in 80 ms with a table read per row, 26 ms without (migration 0016).
_REFERENCE_KEY = ("target_id", "target_type", "param", "res_type")
_only_on("postgresql", "ix_idx_reference_target_id_target_type_param_res_type", idx_reference, *_REFERENCE_KEY)
_only_on("sqlite", "ix_idx_reference_target_cover", idx_reference, *_REFERENCE_KEY, "url", "resource_pk")
for _column in ("url", "id_value"):
    Index(
        f"ix_idx_reference_{_column}",
        idx_reference.c.res_type,
        idx_reference.c.param,
        idx_reference.c[_column],
        sqlite_where=idx_reference.c[_column].is_not(None),
        postgresql_where=idx_reference.c[_column].is_not(None),
    )

# date: every value is a range [low, high] in milliseconds since the epoch (UTC), both inclusive,
# so precision (a year, a day, a Period) becomes interval arithmetic in SQL.
idx_date = _index_table(
    "idx_date",
    Column("low", BigInteger, nullable=False),
    Column("high", BigInteger, nullable=False),
    indexes=(("res_type", "param", "low"), ("res_type", "param", "high")),
)

# number: the value and the range its stated precision implies (`100` covers [99.5, 100.5)).
idx_number = _index_table(
    "idx_number",
    Column("value", Float, nullable=False),
    Column("low", Float, nullable=False),
    Column("high", Float, nullable=False),
    indexes=(("res_type", "param", "value"),),
)

# quantity: value with its implicit precision range, system|code (UCUM) and the free-text unit.
idx_quantity = _index_table(
    "idx_quantity",
    Column("system", Text, nullable=True),
    Column("code", Text, nullable=True),
    Column("unit", Text, nullable=True),
    Column("value", Float, nullable=False),
    Column("low", Float, nullable=False),
    Column("high", Float, nullable=False),
    indexes=(("res_type", "param", "code", "value"),),
)

# uri: exact value; :below / :above are prefix comparisons.
idx_uri = _index_table(
    "idx_uri",
    Column("value", Text, nullable=False),
    indexes=(("res_type", "param", "value"),),
)

# composite: the components of one element instance, e.g. Observation.component code + value.
# Component 1 is a token (or a reference as "Type/id" in c1_code); component 2 a token, quantity,
# number, date or string; component 3 (MolecularSequence coordinates) a number.
idx_composite = _index_table(
    "idx_composite",
    Column("c1_system", Text, nullable=True),
    Column("c1_code", Text, nullable=True),
    Column("c2_system", Text, nullable=True),
    Column("c2_code", Text, nullable=True),
    Column("c2_low", Float, nullable=True),
    Column("c2_high", Float, nullable=True),
    Column("c2_text", Text, nullable=True),
    Column("c2_dlow", BigInteger, nullable=True),
    Column("c2_dhigh", BigInteger, nullable=True),
    Column("c3_low", Float, nullable=True),
    Column("c3_high", Float, nullable=True),
    indexes=(("res_type", "param", "c1_code", "c2_code"),),
)

INDEX_TABLES = {
    "string": idx_string,
    "token": idx_token,
    "reference": idx_reference,
    "date": idx_date,
    "number": idx_number,
    "quantity": idx_quantity,
    "uri": idx_uri,
    "composite": idx_composite,
}
# Each index table's index by resource on SQLite (hub.store.hints: per-row tests name it).
RESOURCE_INDEXES = {t.name: f"ix_{t.name}_resource" for t in INDEX_TABLES.values()} | {
    "idx_token": "ix_idx_token_resource_key"
}


# -- authorisation server (hub/auth) ---------------------------------------------------------------

# Registered clients: systems (HIX, Hapicom, HIS, VVT), PGO apps, the consent registry, auditors.
auth_client = Table(
    "auth_client",
    metadata,
    Column("client_id", String(100), primary_key=True),
    Column("organisation_type", String(32), nullable=False),
    Column("ura", String(16), nullable=True),
    Column("agb", String(16), nullable=True),
    Column("scopes", Text, nullable=False),  # what the client may ask for (space separated)
    Column("jwks", Text, nullable=True),  # its public keys (JWKS JSON), for private_key_jwt
    Column("jwks_url", Text, nullable=True),
    Column("secret_hash", Text, nullable=True),  # development only; never a plain secret
    Column("redirect_uris", Text, nullable=True),  # PGO apps (space separated)
    Column("status", String(16), nullable=False),  # active | revoked
    Column("created", DateTime(timezone=False), nullable=False),
)

# Client-assertion ids already used (replay protection), kept until the assertion expires.
auth_jti = Table(
    "auth_jti",
    metadata,
    Column("client_id", String(100), primary_key=True),
    Column("jti", String(255), primary_key=True),
    Column("expires", DateTime(timezone=False), nullable=False),
    Index("ix_auth_jti_expires", "expires"),
)

# Authorisation codes (PKCE) and refresh tokens of patients' PGO apps; only hashes are stored.
auth_code = Table(
    "auth_code",
    metadata,
    Column("code_hash", String(64), primary_key=True),
    Column("client_id", String(100), nullable=False),
    Column("patient_id", String(64), nullable=False),
    Column("subject", String(100), nullable=False),  # who logged in (BSN at the identity provider)
    Column("scopes", Text, nullable=False),
    Column("redirect_uri", Text, nullable=False),
    Column("code_challenge", String(128), nullable=False),
    Column("expires", DateTime(timezone=False), nullable=False),
    Column("used", Boolean, nullable=False),
)

auth_refresh = Table(
    "auth_refresh",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("family", String(64), nullable=False),  # one login; a reused old token revokes it all
    Column("client_id", String(100), nullable=False),
    Column("patient_id", String(64), nullable=False),
    Column("subject", String(100), nullable=False),
    Column("scopes", Text, nullable=False),
    Column("expires", DateTime(timezone=False), nullable=False),
    Column("status", String(16), nullable=False),  # active | rotated | revoked
    Index("ix_auth_refresh_family", "family"),
)

# Consent (consent/): the rules of each active patient-privacy Consent, flattened so the policy
# decision point can filter searches in SQL. Rewritten in the same transaction as the Consent itself.
consent_rule = Table(
    "consent_rule",
    metadata,
    Column("pk", PK, primary_key=True, autoincrement=True),
    Column("consent_id", String(64), nullable=False),  # Consent/[id]
    Column("patient_id", String(64), nullable=False),
    Column("decision", String(8), nullable=False),  # permit | deny
    Column("custodian", String(80), nullable=True),  # the data-holding organisation ("ura:..."), NULL = any
    Column("category", String(32), nullable=True),  # data category (GGC002 ...), NULL = all data
    Column("actor_org", String(80), nullable=True),  # one consulting organisation ("ura:...")
    Column("actor_category", String(32), nullable=True),  # a consulting organisation category (RPZAC...)
    Column("purpose", String(32), nullable=True),  # purpose of use (TREAT ...), NULL = any
    Column("period_start", DateTime(timezone=False), nullable=True),
    Column("period_end", DateTime(timezone=False), nullable=True),
    Column("specificity", Integer, nullable=False),  # higher wins; deny wins a tie
    Index("ix_consent_rule_patient", "patient_id", "decision"),
    Index("ix_consent_rule_consent", "consent_id"),
)

# The organisations that wrote any version of a resource: they always see it (data holder).
resource_author = Table(
    "resource_author",
    metadata,
    Column("res_type", String(64), primary_key=True),
    Column("res_id", String(64), primary_key=True),
    Column("org", String(80), primary_key=True),  # "ura:12345678" | "agb:..." | "client:..."
)

# Care-process relations (consent/care.py): the patients whose live Task names an organisation as
# owner, or ServiceRequest as performer (implied consent). Derived from those resources and the
# referenced Organization's identifiers, rewritten in the same transaction as either, so the
# decision point tests one indexed row instead of planning a join over the index tables per search.
care_relation = Table(
    "care_relation",
    metadata,
    Column("pk", PK, primary_key=True, autoincrement=True),
    Column("carrier_type", String(64), nullable=False),  # Task | ServiceRequest
    Column("carrier_id", String(64), nullable=False),
    Column("patient_id", String(64), nullable=False),
    Column("org_id", String(64), nullable=True),  # the Organization referenced by id: followed when it changes
    Column("org_key", String(80), nullable=True),  # "ura:..." | "agb:..."; NULL: that Organization has none (yet)
    Index("ix_care_relation_org", "org_key", "patient_id"),
    Index("ix_care_relation_carrier", "carrier_type", "carrier_id"),
    Index("ix_care_relation_org_id", "org_id"),
)

# Patient-bound access tokens issued to PGO apps, so they can be revoked before they expire: by the
# app (/auth/revoke), or with their whole login (`family`) when a code or refresh token is reused.
auth_access_token = Table(
    "auth_access_token",
    metadata,
    Column("jti", String(64), primary_key=True),
    Column("family", String(64), nullable=False),
    Column("client_id", String(100), nullable=False),
    Column("patient_id", String(64), nullable=False),
    Column("expires", DateTime(timezone=False), nullable=False),
    Column("revoked", Boolean, nullable=False),
    Index("ix_auth_access_token_family", "family"),
    Index("ix_auth_access_token_expires", "expires"),
)
