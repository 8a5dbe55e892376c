"""Data categories and consulting-organisation categories, the vocabulary of a consent choice.

Data categories follow Mitz (OTV "gegevenscategorie"): GGC002 Behandelgegevens is the high
category; GGC012 Uitslagen and GGC013 Medicatiegegevens are low categories under it, so a choice
about GGC002 also covers them. The hub adds two of its own: `acp` (advance care planning
directives, under GGC002) and `privacy` (the patient's privacy consents themselves, under nothing:
only the patient, the consent registry that wrote them and the operator see them).

Which category a resource falls in is decided here twice, once over the JSON (for single
resources) and once in SQL (for searches); tests check that both agree.

A Patient resource (identification: name, BSN, birth date) is not consent-bound: a care provider
must be able to identify a patient before anything else, and the data behind it stays protected.
Resources outside the Patient compartment (Organization, Practitioner, ...) hold no patient data.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, case, exists, literal, not_

from hub.store.tables import idx_token

GEGEVENSCATEGORIE = "http://fhir.nl/otv/CodeSystem/gegevenscategorie"
HUB_CATEGORY = "https://hub.zorgregio-haaglanden.nl/fhir/CodeSystem/data-category"
PROVIDER_CATEGORY = "http://fhir.nl/otv/CodeSystem/raadplegende-zorgaanbiedercategorie"
PROVIDER_CATEGORY_EXT = "http://fhir.nl/StructureDefinition/OTV-ProviderCategory"

BEHANDEL, UITSLAGEN, MEDICATIE, ACP, PRIVACY = "GGC002", "GGC012", "GGC013", "acp", "privacy"
PARENT = {UITSLAGEN: BEHANDEL, MEDICATIE: BEHANDEL, ACP: BEHANDEL}
KNOWN = frozenset({BEHANDEL, UITSLAGEN, MEDICATIE, ACP, PRIVACY})

MEDICATION_TYPES = frozenset(
    {"Medication", "MedicationRequest", "MedicationStatement", "MedicationDispense", "MedicationAdministration"}
)
RESULT_TYPES = frozenset({"DiagnosticReport", "ImagingStudy", "Specimen", "MolecularSequence"})
RESULT_OBSERVATION_CATEGORIES = ("laboratory", "imaging")

# The hub's organisation types -> Mitz consulting-organisation category (raadplegende zorgaanbieder).
ORGANISATION_CATEGORY = {
    "gp": "RPZAC001",  # Huisartsen en huisartsenposten
    "hap": "RPZAC001",
    "ggz": "RPZAC003",  # Geestelijke gezondheidszorg
    "vvt": "RPZAC004",  # Verpleging en verzorging
    "pharmacy": "RPZAC005",  # Apotheken
    "other-care": "RPZAC103",  # Overige zorg
    "hospital": "RPZAC104",  # Ziekenhuizen, medische centra, klinieken, laboratoria
}


def covering(category: str) -> tuple[str, ...]:
    """The category and the higher ones a choice about which also covers it."""
    parent = PARENT.get(category)
    return (category, parent) if parent else (category,)


def category_of(res: dict[str, Any]) -> str | None:
    """The data category of a resource in the Patient compartment; None for identification data."""
    rt = res.get("resourceType")
    if rt == "Patient":
        return None
    if rt in MEDICATION_TYPES:
        return MEDICATIE
    if rt in RESULT_TYPES:
        return UITSLAGEN
    if rt == "Observation":
        codes = {c.get("code") for cc in res.get("category") or [] for c in (cc.get("coding") or [])}
        return UITSLAGEN if codes & set(RESULT_OBSERVATION_CATEGORIES) else BEHANDEL
    if rt == "Consent":
        codes = {c.get("code") for c in ((res.get("scope") or {}).get("coding") or [])}
        return PRIVACY if "patient-privacy" in codes else ACP
    return BEHANDEL


def category_branches(r: Any, types: list[str]) -> list[tuple[Any, Any]]:
    """category_of in SQL as (condition, category) branches: for one resource type the category is
    a constant in each branch (cheap per row, and it folds into the rule test); for several types one
    branch whose category is a CASE expression."""
    if len(types) == 1:
        t = types[0]
        if t == "Observation":
            lab = _has_token(r, "Observation", "category", RESULT_OBSERVATION_CATEGORIES)
            return [(lab, UITSLAGEN), (not_(lab), BEHANDEL)]
        if t == "Consent":
            privacy = _has_token(r, "Consent", "scope", ("patient-privacy",))
            return [(privacy, PRIVACY), (not_(privacy), ACP)]
        return [(None, category_of({"resourceType": t}))]
    return [(None, category_sql(r, types))]


def _has_token(r: Any, res_type: str, param: str, codes: tuple[str, ...]) -> Any:
    # Correlated (an index probe per row), not `pk IN (all such rows)`: that list would be built
    # in full for every query, and there are tens of thousands of laboratory Observations.
    return (
        exists()
        .where(
            idx_token.c.resource_pk == r.c.pk,
            idx_token.c.res_type == res_type,
            idx_token.c.param == param,
            idx_token.c.code.in_(codes),
        )
        .correlate(r)
    )


def category_sql(r: Any, types: list[str] | None = None) -> Any:
    """The same as category_of, as one SQL expression over a resource row (NULL for a Patient)."""

    def has_token(res_type: str, param: str, codes: tuple[str, ...]) -> Any:
        return _has_token(r, res_type, param, codes)

    return case(
        (r.c.res_type == "Patient", literal(None)),
        (r.c.res_type.in_(sorted(MEDICATION_TYPES)), literal(MEDICATIE)),
        (r.c.res_type.in_(sorted(RESULT_TYPES)), literal(UITSLAGEN)),
        (
            and_(r.c.res_type == "Observation", has_token("Observation", "category", RESULT_OBSERVATION_CATEGORIES)),
            literal(UITSLAGEN),
        ),
        (and_(r.c.res_type == "Consent", has_token("Consent", "scope", ("patient-privacy",))), literal(PRIVACY)),
        (r.c.res_type == "Consent", literal(ACP)),
        else_=literal(BEHANDEL),
    )
