"""A small, entirely fictitious care region in Zoetermeer / Haaglanden, as one FHIR R4 transaction.

This is the data a new user sees when starting the hub for the first time: a hospital (running
HIX) with its emergency department (SEH), a GP out-of-hours post (HAP, Hapicom), two GP practices
with their practice systems (HIS), a VVT organisation (home care and a nursing home) and a
pharmacy; their systems as Endpoints; professionals with their roles; eight patients with
problems, allergies, medication, vital signs, HAP and SEH encounters and, for two elderly
patients, ACP treatment directives and an advance directive.

Shapes follow the Dutch nl-core (zib2020) profiles and their examples
(`../shared/fixtures/nictiz-zib2020`): identifiers (BSN, URA, AGB, UZI), name parts as
humanname-own-name / -prefix / partner-name extensions, address parts, the
ext-CodeSpecification extension on coded primitives, and the zib code lists.

Everything is fake and marked as such: names carry "(demo)" for organisations, BSNs are test
numbers (9999xxxxx) that pass the 11-proof, URA/AGB/UZI numbers start with 999, phone numbers
are 999-series, e-mail and web addresses use the reserved `.example` domain, and every resource
carries the tag `DEMO_TAG` (v3-ActReason HTEST, "test health data").

All entries are `PUT Type/id` with stable ids (all starting with `demo-`), so loading the
bundle twice is idempotent. References are relative (`Type/id`) and all resolve inside the bundle.
"""

from __future__ import annotations

import copy
import html
from datetime import date, datetime, time, timedelta
from typing import Any, NamedTuple

JSON = dict[str, Any]

# --- systems and canonical URLs ---------------------------------------------------------------

NL_CORE = "http://nictiz.nl/fhir/StructureDefinition/"
HL7_EXT = "http://hl7.org/fhir/StructureDefinition/"

SYS_BSN = "http://fhir.nl/fhir/NamingSystem/bsn"
SYS_URA = "http://fhir.nl/fhir/NamingSystem/ura"
SYS_AGB = "http://fhir.nl/fhir/NamingSystem/agb-z"
SYS_UZI = "http://fhir.nl/fhir/NamingSystem/uzi-nr-pers"
SYS_UZI_ROLE = "http://fhir.nl/fhir/NamingSystem/uzi-rolcode"  # RoleCodeNL zorgverlenertypen
SYS_ORG_TYPE = "http://nictiz.nl/fhir/NamingSystem/organization-type"  # RoleCodeNL zorgaanbiedertypen
SYS_AGB_SPECIALISM = "urn:oid:2.16.840.1.113883.2.4.6.7"  # Vektis COD016 AGB medische specialismen
SYS_SNOMED = "http://snomed.info/sct"
SYS_LOINC = "http://loinc.org"
SYS_UCUM = "http://unitsofmeasure.org"
SYS_ISO3166 = "urn:iso:std:iso:3166"
SYS_V3_ADDRESS_USE = "http://terminology.hl7.org/CodeSystem/v3-AddressUse"
SYS_V3_GENDER = "http://terminology.hl7.org/CodeSystem/v3-AdministrativeGender"
SYS_V3_MARITAL = "http://terminology.hl7.org/CodeSystem/v3-MaritalStatus"
SYS_V3_ROLE = "http://terminology.hl7.org/CodeSystem/v3-RoleCode"
SYS_V3_ACT = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
SYS_V3_ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
SYS_TELECOM_TYPE = "urn:oid:2.16.840.1.113883.2.4.3.11.60.40.4.22.1"  # zib TelecomTypeCodelijst (LL, FAX)
SYS_CONTACT_ROLE = "urn:oid:2.16.840.1.113883.2.4.3.11.22.472"  # COD472-VEKT soort relatie client
SYS_ADVANCE_DIRECTIVE_TYPE = "urn:oid:2.16.840.1.113883.2.4.3.11.60.40.4.14.1"  # WilsverklaringType
SYS_GSTD_GPK = "urn:oid:2.16.840.1.113883.2.4.4.1"
SYS_GSTD_HPK = "urn:oid:2.16.840.1.113883.2.4.4.7"
SYS_GSTD_FORM = "urn:oid:2.16.840.1.113883.2.4.4.11"  # G-Standaard tabel 6, farmaceutische vormen
SYS_GSTD_ROUTE = "urn:oid:2.16.840.1.113883.2.4.4.9"  # G-Standaard tabel 7, toedieningswegen
SYS_GSTD_UNIT = "urn:oid:2.16.840.1.113883.2.4.4.1.900.2"  # G-Standaard thesaurus basiseenheden
SYS_GSTD_AS_NEEDED = "urn:oid:2.16.840.1.113883.2.4.4.5"  # G-Standaard thesaurus 'zo nodig' criteria
SYS_CONDITION_CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
SYS_CONDITION_VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
SYS_ALLERGY_CLINICAL = "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical"
SYS_ALLERGY_VERIFICATION = "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification"
SYS_OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
SYS_CONSENT_SCOPE = "http://terminology.hl7.org/CodeSystem/consentscope"
SYS_CONSENT_CATEGORY = "http://terminology.hl7.org/CodeSystem/consentcategorycodes"
SYS_ENDPOINT_CONNECTION = "http://terminology.hl7.org/CodeSystem/endpoint-connection-type"
SYS_ENDPOINT_PAYLOAD = "http://terminology.hl7.org/CodeSystem/endpoint-payload-type"

EXT_CODE_SPECIFICATION = NL_CORE + "ext-CodeSpecification"
EXT_ADDRESS_TYPE = NL_CORE + "ext-AddressInformation.AddressType"
EXT_COMMENT = NL_CORE + "ext-Comment"
EXT_AD_DISORDER = NL_CORE + "ext-AdvanceDirective.Disorder"

#: Every demo resource carries this tag, so demo data can be found (`_tag=...|HTEST`) and removed.
DEMO_TAG: JSON = {"system": SYS_V3_ACT_REASON, "code": "HTEST", "display": "test health data"}


# --- BSN -------------------------------------------------------------------------------------


def bsn_is_valid(bsn: str) -> bool:
    """The BSN "11-proef": 9 digits d1..d9 with 9*d1 + 8*d2 + ... + 2*d8 - 1*d9 divisible by 11."""
    if len(bsn) != 9 or not bsn.isdigit():
        return False
    digits = [int(c) for c in bsn]
    total = sum(d * w for d, w in zip(digits[:8], range(9, 1, -1), strict=True)) - digits[8]
    return total % 11 == 0 and int(bsn) != 0


# --- small datatype builders -----------------------------------------------------------------


def _coding(system: str, code: str, display: str | None = None) -> JSON:
    c: JSON = {"system": system, "code": code}
    if display:
        c["display"] = display
    return c


def _cc(system: str, code: str, display: str | None = None, text: str | None = None) -> JSON:
    concept: JSON = {"coding": [_coding(system, code, display)]}
    if text:
        concept["text"] = text
    return concept


def _ref(type_: str, id_: str) -> JSON:
    """A relative reference; `type` and `display` are filled in when the bundle is assembled."""
    return {"reference": f"{type_}/{id_}"}


def _code_spec(system: str, code: str, display: str) -> JSON:
    """nl-core's ext-CodeSpecification: the zib code behind a FHIR code (gender, telecom type, ...)."""
    return {"url": EXT_CODE_SPECIFICATION, "valueCodeableConcept": _cc(system, code, display)}


def _ucum(value: float | int, code: str, unit: str | None = None) -> JSON:
    return {"value": value, "unit": unit or code, "system": SYS_UCUM, "code": code}


def _stuks(value: float | int) -> JSON:
    """A dose in G-Standaard basic units: 'stuk' (one tablet)."""
    return {"value": value, "unit": "stuk", "system": SYS_GSTD_UNIT, "code": "245"}


def _last_sunday(year: int, month: int) -> date:
    d = date(year, month, 31)  # March and October both have 31 days
    while d.weekday() != 6:
        d -= timedelta(days=1)
    return d


def dt(local: str) -> str:
    """Dutch wall-clock time ('2025-01-18T21:40') as an R4 dateTime with the Europe/Amsterdam offset.

    Summer time runs from the last Sunday of March 02:00 to the last Sunday of October 03:00.
    """
    t = datetime.fromisoformat(local)
    summer_start = datetime.combine(_last_sunday(t.year, 3), time(2, 0))
    summer_end = datetime.combine(_last_sunday(t.year, 10), time(3, 0))
    offset = "+02:00" if summer_start <= t < summer_end else "+01:00"
    return t.strftime("%Y-%m-%dT%H:%M:%S") + offset


def _gender(gender: str) -> tuple[str, JSON]:
    """(FHIR gender, its `_gender` element with the zib GeslachtCodelijst code)."""
    code, display = {"female": ("F", "Female"), "male": ("M", "Male")}[gender]
    return gender, {"extension": [_code_spec(SYS_V3_GENDER, code, display)]}


def _names(
    given: list[str],
    own: str,
    *,
    own_prefix: str | None = None,
    partner: str | None = None,
    partner_prefix: str | None = None,
    partner_first: bool = False,
    call_name: str | None = None,
) -> list[JSON]:
    """nl-core NameInformation: the official name in parts, plus the roepnaam as a `usual` name.

    With a partner name, the assembly order is NL4 (own name - partner name) or, with
    `partner_first`, NL3 (partner name - own name), as in nl-core-NameInformation-complete.
    """
    own_full = f"{own_prefix} {own}" if own_prefix else own
    family_ext = []
    if own_prefix:
        family_ext.append({"url": HL7_EXT + "humanname-own-prefix", "valueString": own_prefix})
    family_ext.append({"url": HL7_EXT + "humanname-own-name", "valueString": own})
    family = own_full
    official: JSON = {}
    if partner:
        partner_full = f"{partner_prefix} {partner}" if partner_prefix else partner
        if partner_prefix:
            family_ext.append({"url": HL7_EXT + "humanname-partner-prefix", "valueString": partner_prefix})
        family_ext.append({"url": HL7_EXT + "humanname-partner-name", "valueString": partner})
        family = f"{partner_full}-{own_full}" if partner_first else f"{own_full}-{partner_full}"
        order = "NL3" if partner_first else "NL4"
        official["extension"] = [{"url": HL7_EXT + "humanname-assembly-order", "valueCode": order}]
    official.update(
        {
            "use": "official",
            "text": " ".join([*given, family]),
            "family": family,
            "_family": {"extension": family_ext},
            "given": list(given),
            "_given": [{"extension": [{"url": HL7_EXT + "iso21090-EN-qualifier", "valueCode": "BR"}]} for _ in given],
        }
    )
    names = [official]
    if call_name:
        names.append({"use": "usual", "given": [call_name]})
    return names


def _address(street: str, number: str, postcode: str, city: str, *, work: bool = False) -> JSON:
    """nl-core AddressInformation with street name and house number as separate parts."""
    type_code, type_display = ("WP", "Work Place") if work else ("HP", "Primary Home")
    return {
        "extension": [
            {"url": EXT_ADDRESS_TYPE, "valueCodeableConcept": _cc(SYS_V3_ADDRESS_USE, type_code, type_display)}
        ],
        "use": "work" if work else "home",
        "type": "both",
        "line": [f"{street} {number}"],
        "_line": [
            {
                "extension": [
                    {"url": HL7_EXT + "iso21090-ADXP-streetName", "valueString": street},
                    {"url": HL7_EXT + "iso21090-ADXP-houseNumber", "valueString": number},
                ]
            }
        ],
        "city": city,
        "postalCode": postcode,
        "country": "Nederland",
        "_country": {"extension": [_code_spec(SYS_ISO3166, "NL", "Nederland")]},
    }


def _phone(number: str, *, mobile: bool = False, use: str | None = "work") -> JSON:
    """nl-core ContactInformation-TelephoneNumbers: landline (LL) or mobile (MC) telecom type."""
    kind = (
        _code_spec(SYS_V3_ADDRESS_USE, "MC", "Mobile Phone")
        if mobile
        else _code_spec(SYS_TELECOM_TYPE, "LL", "Land Line")
    )
    phone: JSON = {"system": "phone", "_system": {"extension": [kind]}, "value": number}
    if use:
        phone["use"] = use
    return phone


def _email(address: str, *, use: str = "work") -> JSON:
    return {"system": "email", "value": address, "use": use}


def _narrative(summary: str) -> JSON:
    return {
        "status": "generated",
        "div": f'<div xmlns="http://www.w3.org/1999/xhtml"><p>{html.escape(summary)}</p></div>',
    }


# --- the region builder ----------------------------------------------------------------------


class _Region:
    """Collects resources in load order, each with a one-line summary used as narrative and display."""

    def __init__(self) -> None:
        self.resources: list[JSON] = []
        self.display: dict[str, str] = {}

    def add(self, resource: JSON, summary: str, display: str | None = None) -> JSON:
        resource = copy.deepcopy(resource)  # builders share parts (addresses, dosages); resources must not
        rtype, rid = resource["resourceType"], resource["id"]
        meta = resource.setdefault("meta", {})
        meta["tag"] = [dict(DEMO_TAG)]
        body = {k: v for k, v in resource.items() if k not in ("resourceType", "id", "meta")}
        ordered: JSON = {"resourceType": rtype, "id": rid, "meta": meta, "text": _narrative(summary), **body}
        self.resources.append(ordered)
        self.display[f"{rtype}/{rid}"] = display or summary
        return ordered

    def bundle(self) -> JSON:
        for resource in self.resources:
            self._complete_references(resource)
        return {
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [
                {"resource": r, "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}}
                for r in self.resources
            ],
        }

    def _complete_references(self, node: Any) -> None:
        """Add `type` and `display` to every relative reference, as the nl-core examples do."""
        if isinstance(node, dict):
            target = node.get("reference")
            if isinstance(target, str) and target in self.display:
                node.setdefault("type", target.split("/", 1)[0])
                node.setdefault("display", self.display[target])
            for value in node.values():
                self._complete_references(value)
        elif isinstance(node, list):
            for value in node:
                self._complete_references(value)


# --- organisations, systems, locations ---------------------------------------------------------

HOSPITAL = "demo-hospital"
HAP = "demo-hap"
GP_VIJVERHOF = "demo-gp-vijverhof"
GP_HAAGSE_DUINEN = "demo-gp-haagse-duinen"
VVT = "demo-vvt"
PHARMACY = "demo-pharmacy"

LOC_HOSPITAL = "demo-location-hospital"
LOC_SEH = "demo-location-seh"
LOC_HAP = "demo-location-hap"
LOC_ZOETE_HOF = "demo-location-zoete-hof"


def _organization(
    region: _Region,
    id_: str,
    name: str,
    *,
    ura: str,
    agb: str,
    org_type: tuple[str, str],
    specialism: tuple[str, str] | None,
    address: JSON,
    phone: str,
    email: str,
    endpoints: list[str],
) -> None:
    types = [_cc(SYS_ORG_TYPE, *org_type)]
    if specialism:
        types.append(_cc(SYS_AGB_SPECIALISM, *specialism))
    region.add(
        {
            "resourceType": "Organization",
            "id": id_,
            "meta": {"profile": [NL_CORE + "nl-core-HealthcareProvider-Organization"]},
            "identifier": [{"system": SYS_URA, "value": ura}, {"system": SYS_AGB, "value": agb}],
            "active": True,
            "type": types,
            "name": name,
            "telecom": [_phone(phone), _email(email)],
            "address": [address],
            **({"endpoint": [_ref("Endpoint", e) for e in endpoints]} if endpoints else {}),
        },
        f"{name} ({org_type[1]}), URA {ura}, AGB {agb}",
        display=name,
    )


def _endpoint(
    region: _Region,
    id_: str,
    name: str,
    *,
    organization: str,
    connection: str,
    address: str,
    payload: str,
    mime_types: list[str],
) -> None:
    connection_display = {"hl7-fhir-rest": "HL7 FHIR", "hl7v2-mllp": "HL7 v2 MLLP"}[connection]
    region.add(
        {
            "resourceType": "Endpoint",
            "id": id_,
            "status": "active",
            "connectionType": _coding(SYS_ENDPOINT_CONNECTION, connection, connection_display),
            "name": name,
            "managingOrganization": _ref("Organization", organization),
            "payloadType": [_cc(SYS_ENDPOINT_PAYLOAD, "any", "Any", text=payload)],
            "payloadMimeType": mime_types,
            "address": address,
        },
        f"{name} ({connection_display}, {address})",
        display=name,
    )


def _location(
    region: _Region,
    id_: str,
    name: str,
    *,
    organization: str,
    address: JSON,
    phone: str | None = None,
    type_: tuple[str, str] | None = None,
    part_of: str | None = None,
) -> None:
    location: JSON = {
        "resourceType": "Location",
        "id": id_,
        "meta": {"profile": [NL_CORE + "nl-core-HealthcareProvider"]},
        "status": "active",
        "name": name,
        "mode": "instance",
    }
    if type_:
        location["type"] = [_cc(SYS_V3_ROLE, *type_)]
    if phone:
        location["telecom"] = [_phone(phone)]
    location["address"] = address
    location["managingOrganization"] = _ref("Organization", organization)
    if part_of:
        location["partOf"] = _ref("Location", part_of)
    region.add(location, name)


def _add_organisations(region: _Region) -> None:
    fhir_mime = ["application/fhir+json", "application/fhir+xml"]
    hospital_address = _address("Gezondheidsboulevard", "1", "2725 NA", "Zoetermeer", work=True)

    _organization(
        region, HOSPITAL, "Ziekenhuis Zoetermeer-Haaglanden (demo)",
        ura="99900001", agb="99910001", org_type=("V6", "Algemeen ziekenhuis"), specialism=None,
        address=hospital_address, phone="+31799990000", email="info@zzh.demo.example",
        endpoints=["demo-endpoint-hix-fhir", "demo-endpoint-hix-mllp"],
    )  # fmt: skip
    _organization(
        region, HAP, "Huisartsenpost Zoetermeer-Haaglanden (demo)",
        ura="99900002", agb="99910002", org_type=("N6", "Huisartsenpost (t.b.v. dienstwaarneming)"),
        specialism=None,
        address=_address("Gezondheidsboulevard", "3", "2725 NA", "Zoetermeer", work=True),
        phone="+31799990300", email="info@hap.demo.example", endpoints=["demo-endpoint-hapicom"],
    )  # fmt: skip
    _organization(
        region, GP_VIJVERHOF, "Huisartsenpraktijk De Vijverhof (demo)",
        ura="99900003", agb="99910003", org_type=("Z3", "Huisartspraktijk (zelfstandig of groepspraktijk)"),
        specialism=("0100", "Huisartsen, niet nader gespecificeerd"),
        address=_address("Vijverhoflaan", "12", "2713 HK", "Zoetermeer", work=True),
        phone="+31799990400", email="praktijk@vijverhof.demo.example", endpoints=["demo-endpoint-his-vijverhof"],
    )  # fmt: skip
    _organization(
        region, GP_HAAGSE_DUINEN, "Huisartsenpraktijk Haagse Duinen (demo)",
        ura="99900004", agb="99910004", org_type=("Z3", "Huisartspraktijk (zelfstandig of groepspraktijk)"),
        specialism=("0100", "Huisartsen, niet nader gespecificeerd"),
        address=_address("Helmgrasstraat", "45", "2555 RK", "Den Haag", work=True),
        phone="+31709990500", email="praktijk@haagseduinen.demo.example",
        endpoints=["demo-endpoint-his-haagse-duinen"],
    )  # fmt: skip
    _organization(
        region, VVT, "Zorggroep De Zoete Hof (demo)",
        ura="99900005", agb="99910005", org_type=("X3", "Verplegings- of verzorgingsinstelling"), specialism=None,
        address=_address("Zoete Hof", "3", "2719 EE", "Zoetermeer", work=True),
        phone="+31799990600", email="zorg@zoetehof.demo.example", endpoints=["demo-endpoint-vvt-ecd"],
    )  # fmt: skip
    _organization(
        region, PHARMACY, "Apotheek Stadshart (demo)",
        ura="99900006", agb="99910006", org_type=("J8", "Openbare apotheek"), specialism=("0200", "Apothekers"),
        address=_address("Stadshartpassage", "21", "2711 DA", "Zoetermeer", work=True),
        phone="+31799990700", email="apotheek@stadshart.demo.example", endpoints=[],
    )  # fmt: skip

    _endpoint(
        region, "demo-endpoint-hix-fhir", "HIX FHIR API - Ziekenhuis Zoetermeer-Haaglanden (demo)",
        organization=HOSPITAL, connection="hl7-fhir-rest", address="https://hix.zzh.demo.example/fhir",
        payload="Verwijzingen (Task/ServiceRequest), BgZ, ontslagbrieven", mime_types=fhir_mime,
    )  # fmt: skip
    _endpoint(
        region, "demo-endpoint-hix-mllp", "HIX HL7 v2 interface - Ziekenhuis Zoetermeer-Haaglanden (demo)",
        organization=HOSPITAL, connection="hl7v2-mllp", address="mllp://hix-interface.zzh.demo.example:2575",
        payload="HL7 v2.5: ADT^A01/A03/A04/A08, ORU^R01, REF^I12", mime_types=["x-application/hl7-v2+er7"],
    )  # fmt: skip
    _endpoint(
        region, "demo-endpoint-hapicom", "Hapicom - Huisartsenpost Zoetermeer-Haaglanden (demo)",
        organization=HAP, connection="hl7-fhir-rest", address="https://hapicom.hap.demo.example/fhir",
        payload="HAP-consulten, waarneemberichten, verwijzingen SEH <-> HAP", mime_types=fhir_mime,
    )  # fmt: skip
    _endpoint(
        region, "demo-endpoint-his-vijverhof", "HIS (Medicom) - Huisartsenpraktijk De Vijverhof (demo)",
        organization=GP_VIJVERHOF, connection="hl7-fhir-rest", address="https://his.vijverhof.demo.example/fhir",
        payload="Professionele Samenvatting, huisartsbrieven", mime_types=fhir_mime,
    )  # fmt: skip
    _endpoint(
        region, "demo-endpoint-his-haagse-duinen", "HIS (Promedico ASP) - Huisartsenpraktijk Haagse Duinen (demo)",
        organization=GP_HAAGSE_DUINEN, connection="hl7-fhir-rest",
        address="https://his.haagseduinen.demo.example/fhir",
        payload="Professionele Samenvatting, huisartsbrieven", mime_types=fhir_mime,
    )  # fmt: skip
    _endpoint(
        region, "demo-endpoint-vvt-ecd", "ECD (eOverdracht) - Zorggroep De Zoete Hof (demo)",
        organization=VVT, connection="hl7-fhir-rest", address="https://ecd.zoetehof.demo.example/fhir",
        payload="eOverdracht (Task, aanmeldbericht, verpleegkundige overdracht)", mime_types=fhir_mime,
    )  # fmt: skip

    _location(
        region, LOC_HOSPITAL, "Ziekenhuis Zoetermeer-Haaglanden (demo), hoofdlocatie",
        organization=HOSPITAL, address=hospital_address, phone="+31799990000", type_=("HOSP", "Hospital"),
    )  # fmt: skip
    _location(
        region, LOC_SEH, "Spoedeisende Hulp (SEH), Ziekenhuis Zoetermeer-Haaglanden (demo)",
        organization=HOSPITAL, address=hospital_address, phone="+31799990200", type_=("ER", "Emergency room"),
        part_of=LOC_HOSPITAL,
    )  # fmt: skip
    _location(
        region, LOC_HAP, "Huisartsenpost Zoetermeer-Haaglanden (demo), locatie ziekenhuis",
        organization=HAP, address=_address("Gezondheidsboulevard", "3", "2725 NA", "Zoetermeer", work=True),
        phone="+31799990300",
    )  # fmt: skip
    _location(
        region, LOC_ZOETE_HOF, "Verpleeghuis De Zoete Hof (demo)",
        organization=VVT, address=_address("Zoete Hof", "3", "2719 EE", "Zoetermeer", work=True),
        phone="+31799990600", type_=("NCCF", "Nursing or custodial care facility"),
    )  # fmt: skip


# --- professionals -----------------------------------------------------------------------------

ROLE_SEH_ARTS = "demo-role-seh-arts-de-vries"
ROLE_HUISARTS_JANSEN = "demo-role-huisarts-jansen"
ROLE_HAP_HUISARTS_JANSEN = "demo-role-hap-huisarts-jansen"
ROLE_HUISARTS_EL_AMRANI = "demo-role-huisarts-el-amrani"
ROLE_TRIAGIST = "demo-role-triagist-van-den-berg"
ROLE_WIJKVERPLEEGKUNDIGE = "demo-role-wijkverpleegkundige-bakker"
ROLE_APOTHEKER = "demo-role-apotheker-smit"

#: UZI role codes (RoleCodeNL zorgverlenertypen), as in the fixture CodeSystem uzi-rolcode.
UZI_HUISARTS = ("01.015", "Huisarts")
UZI_SEH_ARTS = ("01.071", "Spoedeisende hulp arts (SEH-arts)")
UZI_VERPLEEGKUNDIGE = ("30.000", "Verpleegkundige")
UZI_OPENBAAR_APOTHEKER = ("17.075", "Openbaar apotheker")


def _practitioner(
    region: _Region,
    id_: str,
    names: list[JSON],
    *,
    gender: str,
    uzi: str,
    agb: str,
    phone: str,
    email: str,
) -> None:
    gender_code, gender_ext = _gender(gender)
    region.add(
        {
            "resourceType": "Practitioner",
            "id": id_,
            "meta": {"profile": [NL_CORE + "nl-core-HealthProfessional-Practitioner"]},
            "identifier": [{"system": SYS_UZI, "value": uzi}, {"system": SYS_AGB, "value": agb}],
            "active": True,
            "name": names,
            "telecom": [_phone(phone), _email(email)],
            "gender": gender_code,
            "_gender": gender_ext,
        },
        f"{names[0]['text']}, UZI {uzi}, AGB {agb}",
        display=names[0]["text"],
    )


def _practitioner_role(
    region: _Region,
    id_: str,
    *,
    practitioner: str,
    organization: str,
    specialty: tuple[str, str],
    role_text: str,
    phone: str,
    location: str | None = None,
) -> None:
    role: JSON = {
        "resourceType": "PractitionerRole",
        "id": id_,
        "meta": {"profile": [NL_CORE + "nl-core-HealthProfessional-PractitionerRole"]},
        "active": True,
        "practitioner": _ref("Practitioner", practitioner),
        "organization": _ref("Organization", organization),
        "code": [{"text": role_text}],
        "specialty": [_cc(SYS_UZI_ROLE, *specialty)],
    }
    if location:
        role["location"] = [_ref("Location", location)]
    role["telecom"] = [_phone(phone)]
    name = region.display[f"Practitioner/{practitioner}"]
    org_name = region.display[f"Organization/{organization}"]
    region.add(role, f"{name}, {role_text}, {org_name}", display=f"{name}, {role_text}")


def _add_professionals(region: _Region) -> None:
    _practitioner(
        region, "demo-practitioner-de-vries", _names(["Sanne"], "Vries", own_prefix="de"),
        gender="female", uzi="999300001", agb="99920001", phone="+31799990201", email="s.devries@zzh.demo.example",
    )  # fmt: skip
    _practitioner(
        region, "demo-practitioner-jansen", _names(["Pieter", "Willem"], "Jansen"),
        gender="male", uzi="999300002", agb="99920002", phone="+31799990401", email="p.jansen@vijverhof.demo.example",
    )  # fmt: skip
    _practitioner(
        region, "demo-practitioner-el-amrani", _names(["Fatima"], "El Amrani"),
        gender="female", uzi="999300003", agb="99920003", phone="+31709990501",
        email="f.elamrani@haagseduinen.demo.example",
    )  # fmt: skip
    _practitioner(
        region, "demo-practitioner-van-den-berg", _names(["Eva"], "Berg", own_prefix="van den"),
        gender="female", uzi="999300004", agb="99920004", phone="+31799990301", email="triage@hap.demo.example",
    )  # fmt: skip
    _practitioner(
        region, "demo-practitioner-bakker", _names(["Hendrik"], "Bakker", call_name="Henk"),
        gender="male", uzi="999300005", agb="99920005", phone="+31699990605", email="h.bakker@zoetehof.demo.example",
    )  # fmt: skip
    _practitioner(
        region, "demo-practitioner-smit", _names(["Linda"], "Smit", partner="Wit", partner_prefix="de"),
        gender="female", uzi="999300006", agb="99920006", phone="+31799990701",
        email="l.smit@stadshart.demo.example",
    )  # fmt: skip

    _practitioner_role(
        region, ROLE_SEH_ARTS, practitioner="demo-practitioner-de-vries", organization=HOSPITAL,
        specialty=UZI_SEH_ARTS, role_text="SEH-arts", phone="+31799990200", location=LOC_SEH,
    )  # fmt: skip
    _practitioner_role(
        region, ROLE_HUISARTS_JANSEN, practitioner="demo-practitioner-jansen", organization=GP_VIJVERHOF,
        specialty=UZI_HUISARTS, role_text="Huisarts", phone="+31799990400",
    )  # fmt: skip
    _practitioner_role(
        region, ROLE_HAP_HUISARTS_JANSEN, practitioner="demo-practitioner-jansen", organization=HAP,
        specialty=UZI_HUISARTS, role_text="Dienstdoend huisarts HAP", phone="+31799990300", location=LOC_HAP,
    )  # fmt: skip
    _practitioner_role(
        region, ROLE_HUISARTS_EL_AMRANI, practitioner="demo-practitioner-el-amrani", organization=GP_HAAGSE_DUINEN,
        specialty=UZI_HUISARTS, role_text="Huisarts", phone="+31709990500",
    )  # fmt: skip
    _practitioner_role(
        region, ROLE_TRIAGIST, practitioner="demo-practitioner-van-den-berg", organization=HAP,
        specialty=UZI_VERPLEEGKUNDIGE, role_text="Triagist", phone="+31799990300", location=LOC_HAP,
    )  # fmt: skip
    _practitioner_role(
        region, ROLE_WIJKVERPLEEGKUNDIGE, practitioner="demo-practitioner-bakker", organization=VVT,
        specialty=UZI_VERPLEEGKUNDIGE, role_text="Wijkverpleegkundige", phone="+31799990600",
    )  # fmt: skip
    _practitioner_role(
        region, ROLE_APOTHEKER, practitioner="demo-practitioner-smit", organization=PHARMACY,
        specialty=UZI_OPENBAAR_APOTHEKER, role_text="Openbaar apotheker", phone="+31799990700",
    )  # fmt: skip


# --- medicinal products (nl-core-PharmaceuticalProduct) ------------------------------------------

MED_APIXABAN = "demo-medication-apixaban"
MED_LISINOPRIL = "demo-medication-lisinopril"
MED_IBUPROFEN = "demo-medication-ibuprofen"
MED_DOXYCYCLINE = "demo-medication-doxycycline"
MED_METHOTREXAAT = "demo-medication-methotrexaat"


def _add_medications(region: _Region) -> None:
    tablet = _cc(SYS_GSTD_FORM, "230", "Tablet")
    products = [
        (MED_APIXABAN, SYS_GSTD_HPK, "2182416", "ELIQUIS 2.5MG", "Apixaban 2,5 mg tablet", tablet),
        (MED_LISINOPRIL, SYS_GSTD_GPK, "71587", "LISINOPRIL 10MG TABLET", "Lisinopril 10 mg tablet", tablet),
        (MED_IBUPROFEN, SYS_GSTD_HPK, "2613093", "Ibuprofen 600mg", "Ibuprofen 600 mg tablet", tablet),
        (MED_DOXYCYCLINE, SYS_GSTD_GPK, "22179", "doxycycline 100mg tablet", "Doxycycline 100 mg tablet", tablet),
        (
            MED_METHOTREXAAT, SYS_GSTD_GPK, "89907", "Methotrexaat injvlst 25mg/ml 0,6 ml",
            "Methotrexaat injectievloeistof 25 mg/ml, wegwerpspuit 0,6 ml", None,
        ),
    ]  # fmt: skip
    for id_, system, code, display, text, form in products:
        medication: JSON = {
            "resourceType": "Medication",
            "id": id_,
            "meta": {"profile": [NL_CORE + "nl-core-PharmaceuticalProduct"]},
            "code": _cc(system, code, display, text=text),
        }
        if form:
            medication["form"] = form
        region.add(medication, text)


# --- patients and their clinical data -------------------------------------------------------------


class _Contact(NamedTuple):
    id: str
    person: JSON  # the RelatedPerson
    contact: JSON  # the Patient.contact element pointing to it
    summary: str


class _Patient:
    """Builds one patient's resources; ids are `demo-<key>-<what>`."""

    def __init__(self, region: _Region, key: str) -> None:
        self.region = region
        self.key = key
        self.id = f"demo-patient-{key}"

    def rid(self, what: str) -> str:
        return f"demo-{self.key}-{what}"

    @property
    def ref(self) -> JSON:
        return _ref("Patient", self.id)

    def patient(
        self,
        *,
        bsn: str,
        names: list[JSON],
        gender: str,
        birth_date: str,
        address: JSON,
        phone: str,
        mobile: bool,
        email: str | None,
        gp: str,
        gp_role: str,
        marital: tuple[str, str] | None = None,
        contacts: list[JSON] | None = None,
    ) -> None:
        if not bsn_is_valid(bsn):
            raise ValueError(f"demo BSN {bsn} fails the 11-proof")
        gender_code, gender_ext = _gender(gender)
        telecom = [_phone(phone, mobile=mobile, use=None if mobile else "home")]
        if email:
            telecom.append(_email(email, use="home"))
        patient: JSON = {
            "resourceType": "Patient",
            "id": self.id,
            "meta": {"profile": [NL_CORE + "nl-core-Patient"]},
            "identifier": [{"system": SYS_BSN, "value": bsn}],
            "active": True,
            "name": names,
            "telecom": telecom,
            "gender": gender_code,
            "_gender": gender_ext,
            "birthDate": birth_date,
            "address": [address],
        }
        if marital:
            patient["maritalStatus"] = _cc(SYS_V3_MARITAL, *marital)
        if contacts:
            patient["contact"] = contacts
        patient["generalPractitioner"] = [_ref("Organization", gp), _ref("PractitionerRole", gp_role)]
        name = names[0]["text"]
        self.region.add(patient, f"{name}, geboren {birth_date}, BSN {bsn}", display=name)

    def contact_person(
        self,
        what: str,
        names: list[JSON],
        *,
        role: tuple[str, str],
        relationship: tuple[str, str],
        phone: str,
    ) -> _Contact:
        """A RelatedPerson (nl-core-ContactPerson) and the matching Patient.contact element.

        Add the person with `add_contact_person` after the Patient (the two refer to each other).
        """
        id_ = self.rid(what)
        relationships = [_cc(SYS_CONTACT_ROLE, *role), _cc(SYS_V3_ROLE, *relationship)]
        person: JSON = {
            "resourceType": "RelatedPerson",
            "id": id_,
            "meta": {"profile": [NL_CORE + "nl-core-ContactPerson"]},
            "active": True,
            "patient": self.ref,
            "relationship": relationships,
            "name": names,
            "telecom": [_phone(phone, mobile=True, use=None)],
        }
        contact: JSON = {
            "extension": [{"url": HL7_EXT + "patient-relatedPerson", "valueReference": _ref("RelatedPerson", id_)}],
            "relationship": relationships,
            "name": names[0],
            "telecom": [_phone(phone, mobile=True, use=None)],
        }
        return _Contact(id_, person, contact, f"{names[0]['text']} ({relationship[1]})")

    def add_contact_person(self, contact: _Contact) -> None:
        self.region.add(contact.person, contact.summary, display=contact.person["name"][0]["text"])

    def problem(
        self,
        what: str,
        code: tuple[str, str],
        *,
        onset: str,
        category: tuple[str, str] = ("282291009", "Interpretatie van diagnose"),
        active: bool = True,
        abatement: str | None = None,
        recorder: str | None = None,
        encounter: str | None = None,
        note: str | None = None,
    ) -> str:
        """nl-core-Problem: SNOMED problem name, zib problem type and verification status."""
        id_ = self.rid(what)
        condition: JSON = {
            "resourceType": "Condition",
            "id": id_,
            "meta": {"profile": [NL_CORE + "nl-core-Problem"]},
            "clinicalStatus": _cc(
                SYS_CONDITION_CLINICAL, *(("active", "Active") if active else ("inactive", "Inactive"))
            ),
            "verificationStatus": {
                "coding": [
                    _coding(SYS_CONDITION_VERIFICATION, "confirmed", "Confirmed"),
                    _coding(SYS_SNOMED, "410605003", "Aanwezigheid bevestigd"),
                ]
            },
            "category": [_cc(SYS_SNOMED, *category)],
            "code": _cc(SYS_SNOMED, *code),
            "subject": self.ref,
        }
        if encounter:
            condition["encounter"] = _ref("Encounter", self.rid(encounter))
        condition["onsetDateTime"] = onset
        if abatement:
            condition["abatementDateTime"] = abatement
        if recorder:
            condition["recorder"] = _ref("PractitionerRole", recorder)
        if note:
            condition["note"] = [{"text": note}]
        self.region.add(condition, f"{code[1]} (sinds {onset[:10]})", display=code[1])
        return id_

    def allergy(
        self,
        what: str,
        substance: tuple[str, str],
        *,
        category: str,
        criticality_code: tuple[str, str],
        reaction: tuple[str, str],
        severity: str,
        onset: str,
        description: str,
        recorder: str,
    ) -> None:
        """nl-core-AllergyIntolerance, with the zib category and criticality codes as CodeSpecification."""
        zib_category = {
            "medication": ("419511003", "Neiging tot ongewenste reactie op geneesmiddel"),
            "food": ("418471000", "Neiging tot ongewenste reactie op voedsel"),
            "environment": ("426232007", "Omgevingsgerelateerde allergie"),
        }[category]
        criticality = {"24484000": "high", "399166001": "high", "6736007": "high", "255604002": "low"}[
            criticality_code[0]
        ]
        self.region.add(
            {
                "resourceType": "AllergyIntolerance",
                "id": self.rid(what),
                "meta": {"profile": [NL_CORE + "nl-core-AllergyIntolerance"]},
                "clinicalStatus": _cc(SYS_ALLERGY_CLINICAL, "active", "Active"),
                "verificationStatus": _cc(SYS_ALLERGY_VERIFICATION, "confirmed", "Confirmed"),
                "category": [category],
                "_category": [{"extension": [_code_spec(SYS_SNOMED, *zib_category)]}],
                "criticality": criticality,
                "_criticality": {"extension": [_code_spec(SYS_SNOMED, *criticality_code)]},
                "code": _cc(SYS_SNOMED, *substance),
                "patient": self.ref,
                "onsetDateTime": onset,
                "recorder": _ref("PractitionerRole", recorder),
                "reaction": [
                    {
                        "substance": _cc(SYS_SNOMED, *substance),
                        "manifestation": [_cc(SYS_SNOMED, *reaction)],
                        "description": description,
                        "severity": severity,
                    }
                ],
            },
            f"Allergie: {substance[1]} ({reaction[1]})",
            display=f"Allergie: {substance[1]}",
        )

    def encounter(
        self,
        what: str,
        *,
        klass: tuple[str, str],
        type_text: str,
        start: str,
        end: str,
        participants: list[str],
        provider: str,
        location: str | None = None,
        reasons: list[str] | None = None,
    ) -> None:
        """nl-core-Encounter: contact type (ActCode), professionals (PractitionerRole), location, reason."""
        encounter: JSON = {
            "resourceType": "Encounter",
            "id": self.rid(what),
            "meta": {"profile": [NL_CORE + "nl-core-Encounter"]},
            "status": "finished",
            "class": _coding(SYS_V3_ACT, *klass),
            "type": [{"text": type_text}],
            "subject": self.ref,
            "participant": [{"individual": _ref("PractitionerRole", p)} for p in participants],
            "period": {"start": dt(start), "end": dt(end)},
        }
        if reasons:
            encounter["reasonReference"] = [_ref("Condition", self.rid(r)) for r in reasons]
        if location:
            encounter["location"] = [{"location": _ref("Location", location)}]
        encounter["serviceProvider"] = _ref("Organization", provider)
        self.region.add(encounter, f"{type_text}, {start[:10]}", display=f"{type_text}, {start[:10]}")

    def _vital(self, what: str, profile: str, code: JSON, when: str, performer: str, encounter: str | None) -> JSON:
        observation: JSON = {
            "resourceType": "Observation",
            "id": self.rid(what),
            "meta": {"profile": [NL_CORE + profile]},
            "status": "final",
            "category": [_cc(SYS_OBSERVATION_CATEGORY, "vital-signs", "Vital Signs")],
            "code": code,
            "subject": self.ref,
        }
        if encounter:
            observation["encounter"] = _ref("Encounter", self.rid(encounter))
        observation["effectiveDateTime"] = dt(when)
        observation["performer"] = [_ref("PractitionerRole", performer)]
        return observation

    def blood_pressure(
        self, what: str, systolic: int, diastolic: int, *, when: str, performer: str, encounter: str | None = None
    ) -> None:
        obs = self._vital(
            what, "nl-core-BloodPressure",
            _cc(SYS_LOINC, "85354-9", "Blood pressure panel with all children optional"), when, performer, encounter,
        )  # fmt: skip
        obs["extension"] = [
            {
                "url": HL7_EXT + "observation-bodyPosition",
                "valueCodeableConcept": _cc(SYS_SNOMED, "33586001", "Zittende positie"),
            }
        ]
        obs["method"] = _cc(SYS_SNOMED, "371911009", "Bloeddrukmeting met gebruikmaking van manchet")
        obs["component"] = [
            {
                "code": _cc(SYS_LOINC, "8480-6", "Systolic blood pressure"),
                "valueQuantity": _ucum(systolic, "mm[Hg]", "mmHg"),
            },
            {
                "code": _cc(SYS_LOINC, "8462-4", "Diastolic blood pressure"),
                "valueQuantity": _ucum(diastolic, "mm[Hg]", "mmHg"),
            },
        ]
        self.region.add(obs, f"Bloeddruk {systolic}/{diastolic} mmHg ({when[:10]})")

    def body_weight(self, what: str, kg: float, *, when: str, performer: str, encounter: str | None = None) -> None:
        obs = self._vital(
            what, "nl-core-BodyWeight", _cc(SYS_LOINC, "29463-7", "Body weight"), when, performer, encounter
        )
        obs["valueQuantity"] = _ucum(kg, "kg")
        self.region.add(obs, f"Lichaamsgewicht {kg} kg ({when[:10]})")

    def heart_rate(self, what: str, bpm: int, *, when: str, performer: str, encounter: str | None = None) -> None:
        obs = self._vital(what, "nl-core-HeartRate", _cc(SYS_LOINC, "8867-4", "Heart rate"), when, performer, encounter)
        obs["valueQuantity"] = _ucum(bpm, "/min")
        self.region.add(obs, f"Hartfrequentie {bpm} /min ({when[:10]})")

    def body_temperature(
        self, what: str, celsius: float, *, when: str, performer: str, encounter: str | None = None
    ) -> None:
        code = {
            "coding": [
                _coding(SYS_LOINC, "8310-5", "Body temperature"),
                _coding(SYS_SNOMED, "415974002", "Tympanische temperatuur"),
            ]
        }
        obs = self._vital(what, "nl-core-BodyTemperature", code, when, performer, encounter)
        obs["valueQuantity"] = _ucum(celsius, "Cel")
        self.region.add(obs, f"Lichaamstemperatuur {celsius} °C ({when[:10]})")

    def medication_request(
        self,
        what: str,
        medication: str,
        *,
        status: str,
        authored: str,
        requester: str,
        dosage: JSON,
        reason: str | None = None,
        encounter: str | None = None,
        period: tuple[str, str | None] | None = None,
    ) -> str:
        """A medication agreement (medicatieafspraak): MedicationRequest with category 16076005."""
        id_ = self.rid(what)
        request: JSON = {
            "resourceType": "MedicationRequest",
            "id": id_,
            "status": status,
            "intent": "order",
            "category": [_cc(SYS_SNOMED, "16076005", "Voorschrijven (verrichting)")],
            "medicationReference": _ref("Medication", medication),
            "subject": self.ref,
        }
        if encounter:
            request["encounter"] = _ref("Encounter", self.rid(encounter))
        request["authoredOn"] = dt(authored)
        request["requester"] = _ref("PractitionerRole", requester)
        if reason:
            request["reasonReference"] = [_ref("Condition", self.rid(reason))]
        request["dosageInstruction"] = [dosage]
        if period:
            validity = {"start": dt(period[0])}
            if period[1]:
                validity["end"] = dt(period[1])
            request["dispenseRequest"] = {"validityPeriod": validity}
        med = self.region.display[f"Medication/{medication}"]
        self.region.add(request, f"Medicatieafspraak: {med}, {dosage['text']}", display=f"Medicatieafspraak: {med}")
        return id_

    def medication_statement(
        self,
        what: str,
        medication: str,
        *,
        start: str,
        asserted: str,
        source: JSON,
        dosage: JSON,
        based_on: str | None = None,
        reason: str | None = None,
    ) -> None:
        """Medication use (medicatiegebruik): MedicationStatement with the MP9 category 422979000."""
        statement: JSON = {
            "resourceType": "MedicationStatement",
            "id": self.rid(what),
        }
        if based_on:
            statement["basedOn"] = [_ref("MedicationRequest", based_on)]
        statement.update(
            {
                "status": "active",
                "category": _cc(
                    SYS_SNOMED, "422979000", "Bevinding betreffende gedrag met betrekking tot medicatieregime"
                ),
                "medicationReference": _ref("Medication", medication),
                "subject": self.ref,
                "effectivePeriod": {"start": start},
                "dateAsserted": dt(asserted),
                "informationSource": source,
            }
        )
        if reason:
            statement["reasonReference"] = [_ref("Condition", self.rid(reason))]
        statement["dosage"] = [dosage]
        med = self.region.display[f"Medication/{medication}"]
        self.region.add(statement, f"Medicatiegebruik: {med}, {dosage['text']}", display=f"Medicatiegebruik: {med}")

    def advance_directive(
        self,
        what: str,
        *,
        kind: tuple[str, str],
        date_: str,
        representative: str,
        disorder: str | None,
        comment: str,
    ) -> str:
        """nl-core-AdvanceDirective (wilsverklaring) as Consent: scope adr, category acd."""
        id_ = self.rid(what)
        extensions: list[JSON] = []
        if disorder:
            extensions.append({"url": EXT_AD_DISORDER, "valueReference": _ref("Condition", self.rid(disorder))})
        extensions.append({"url": EXT_COMMENT, "valueString": comment})
        self.region.add(
            {
                "resourceType": "Consent",
                "id": id_,
                "meta": {"profile": [NL_CORE + "nl-core-AdvanceDirective"]},
                "extension": extensions,
                "status": "active",
                "scope": _cc(SYS_CONSENT_SCOPE, "adr", "Advanced Care Directive"),
                "category": [_cc(SYS_CONSENT_CATEGORY, "acd", "Advance Directive")],
                "patient": self.ref,
                "dateTime": date_,
                "policy": [{"uri": "https://wetten.overheid.nl/"}],
                "provision": {
                    "actor": [
                        {
                            "role": _cc(SYS_V3_ROLE, "RESPRSN", "responsible party"),
                            "reference": _ref("RelatedPerson", representative),
                        }
                    ],
                    "code": [_cc(SYS_ADVANCE_DIRECTIVE_TYPE, *kind)],
                },
            },
            f"Wilsverklaring: {kind[1]}, {date_}",
        )
        return id_

    def treatment_directive(
        self,
        what: str,
        *,
        treatment: tuple[str, str],
        decision: str,
        date_: str,
        professional: str,
        comment: str | None = None,
        source: str | None = None,
    ) -> None:
        """nl-core-TreatmentDirective2 (behandelgrens) as Consent: scope treatment, category 129125009.

        `decision` is the zib BehandelBesluit mapped to Consent.provision.type: permit (ja) or deny (nee).
        """
        directive: JSON = {
            "resourceType": "Consent",
            "id": self.rid(what),
            "meta": {"profile": [NL_CORE + "nl-core-TreatmentDirective2"]},
        }
        if comment:
            directive["extension"] = [{"url": EXT_COMMENT, "valueString": comment}]
        directive.update(
            {
                "status": "active",
                "scope": _cc(SYS_CONSENT_SCOPE, "treatment", "Treatment"),
                "category": [_cc(SYS_SNOMED, "129125009", "Verrichting met expliciete context")],
                "patient": self.ref,
                "dateTime": date_,
            }
        )
        if source:
            directive["sourceReference"] = _ref("Consent", source)
        consenter = _cc(SYS_V3_ROLE, "CONSENTER", "consenter")
        directive["policy"] = [{"uri": "https://wetten.overheid.nl/"}]
        directive["provision"] = {
            "type": decision,
            "actor": [
                {"role": consenter, "reference": self.ref},
                {"role": consenter, "reference": _ref("PractitionerRole", professional)},
            ],
            "code": [_cc(SYS_SNOMED, *treatment)],
        }
        verdict = {"permit": "wel", "deny": "niet"}[decision]
        self.region.add(directive, f"Behandelgrens: {treatment[1]}: {verdict} ({date_})")


def _dosage(
    text: str,
    *,
    per_day: int | None = None,
    per_week: int | None = None,
    dose: JSON | None = None,
    oral: bool = True,
    as_needed: bool = False,
    max_per_day: JSON | None = None,
    days: int | None = None,
) -> JSON:
    """A Dosage as MP9 fills it: text, timing, G-Standaard route and dose units."""
    dosage: JSON = {"sequence": 1, "text": text}
    repeat: JSON = {}
    if days:
        repeat["boundsDuration"] = {"value": days, "unit": "dag", "system": SYS_UCUM, "code": "d"}
    if per_day:
        repeat.update({"frequency": per_day, "period": 1, "periodUnit": "d"})
    if per_week:
        repeat.update({"frequency": per_week, "period": 1, "periodUnit": "wk"})
    if repeat:
        dosage["timing"] = {"repeat": repeat}
    if as_needed:
        dosage["asNeededCodeableConcept"] = _cc(SYS_GSTD_AS_NEEDED, "1028", "Bij pijn")
    if oral:
        dosage["route"] = _cc(SYS_GSTD_ROUTE, "9", "Oraal")
    if dose:
        dosage["doseAndRate"] = [{"doseQuantity": dose}]
    if max_per_day:
        dosage["maxDosePerPeriod"] = {
            "numerator": max_per_day,
            "denominator": {"value": 1, "unit": "dag", "system": SYS_UCUM, "code": "d"},
        }
    return dosage


CPR = ("89666000", "Cardiopulmonale resuscitatie")
ICU_ADMISSION = ("305351004", "Opname op intensive care")
HOSPITAL_ADMISSION = ("32485007", "Opname in ziekenhuis")
VENTILATION = ("40617009", "Kunstmatige beademing")
KLACHT = ("409586006", "Klacht")


def _add_patients(region: _Region) -> None:
    # 1. Elderly woman with heart failure and atrial fibrillation, home care, ACP: no resuscitation.
    p = _Patient(region, "verhoeven")
    daughter = p.contact_person(
        "dochter", _names(["Marieke"], "Jong", own_prefix="de"),
        role=("01", "Eerste relatie/contactpersoon"), relationship=("DAUC", "Daughter"), phone="+31699991001",
    )  # fmt: skip
    p.patient(
        bsn="999951750",
        names=_names(["Hendrika", "Johanna"], "Verhoeven", partner="Jong", partner_prefix="de", call_name="Riek"),
        gender="female", birth_date="1934-03-12",
        address=_address("Lindenhof", "14", "2717 BS", "Zoetermeer"), phone="+31799991000", mobile=False,
        email=None, gp=GP_VIJVERHOF, gp_role=ROLE_HUISARTS_JANSEN, marital=("W", "Widowed"),
        contacts=[daughter.contact],
    )  # fmt: skip
    p.add_contact_person(daughter)
    p.problem("hartfalen", ("195111005", "Hartfalen"), onset="2019-03-05", recorder=ROLE_HUISARTS_JANSEN)
    p.problem("atriumfibrilleren", ("49436004", "Atriumfibrilleren"), onset="2016-09-20", recorder=ROLE_HUISARTS_JANSEN)
    p.problem("hypertensie", ("59621000", "Essentiële hypertensie"), onset="2004", recorder=ROLE_HUISARTS_JANSEN)
    p.allergy(
        "allergie-penicilline", ("764146007", "Penicilline"), category="medication",
        criticality_code=("24484000", "Ernstig"), reaction=("271807003", "Exantheem"), severity="moderate",
        onset="1998-06-02", description="Rode jeukende huiduitslag op romp en armen", recorder=ROLE_HUISARTS_JANSEN,
    )  # fmt: skip
    twice_daily = _dosage("2 maal per dag 1 tablet", per_day=2, dose=_stuks(1))
    agreement = p.medication_request(
        "medicatieafspraak-apixaban", MED_APIXABAN, status="active", authored="2024-10-02T15:10",
        requester=ROLE_HUISARTS_JANSEN, dosage=twice_daily, reason="atriumfibrilleren",
        period=("2024-10-02T00:00", None),
    )  # fmt: skip
    p.medication_statement(
        "medicatiegebruik-apixaban", MED_APIXABAN, start="2016-10-01", asserted="2025-01-13T09:45",
        source=_ref("PractitionerRole", ROLE_WIJKVERPLEEGKUNDIGE), dosage=twice_daily, based_on=agreement,
        reason="atriumfibrilleren",
    )  # fmt: skip
    p.encounter(
        "acp-gesprek", klass=("HH", "home health"), type_text="ACP-gesprek (proactieve zorgplanning) thuis",
        start="2024-10-02T14:00", end="2024-10-02T14:50", participants=[ROLE_HUISARTS_JANSEN], provider=GP_VIJVERHOF,
        reasons=["hartfalen"],
    )  # fmt: skip
    p.encounter(
        "thuisbezoek", klass=("HH", "home health"), type_text="Thuisbezoek wijkverpleging",
        start="2025-01-13T09:30", end="2025-01-13T10:00", participants=[ROLE_WIJKVERPLEEGKUNDIGE], provider=VVT,
    )  # fmt: skip
    p.blood_pressure(
        "bloeddruk", 148, 82, when="2025-01-13T09:40", performer=ROLE_WIJKVERPLEEGKUNDIGE, encounter="thuisbezoek"
    )
    p.heart_rate(
        "hartfrequentie", 76, when="2025-01-13T09:40", performer=ROLE_WIJKVERPLEEGKUNDIGE, encounter="thuisbezoek"
    )
    p.body_weight("gewicht", 61.5, when="2025-01-13T09:45", performer=ROLE_WIJKVERPLEEGKUNDIGE, encounter="thuisbezoek")
    advance = p.advance_directive(
        "wilsverklaring-niet-reanimeren", kind=("NR", "Niet reanimeren verklaring"), date_="2022-06-14",
        representative=daughter.id, disorder="hartfalen",
        comment="Draagt een niet-reanimerenpenning; verklaring ligt in de la van het dressoir.",
    )  # fmt: skip
    p.treatment_directive(
        "behandelgrens-reanimatie", treatment=CPR, decision="deny", date_="2024-10-02",
        professional=ROLE_HUISARTS_JANSEN, source=advance,
        comment="Besproken in ACP-gesprek, dochter was aanwezig. Niet reanimeren, conform wilsverklaring.",
    )  # fmt: skip
    p.treatment_directive(
        "behandelgrens-ic-opname", treatment=ICU_ADMISSION, decision="deny", date_="2024-10-02",
        professional=ROLE_HUISARTS_JANSEN,
    )  # fmt: skip
    p.treatment_directive(
        "behandelgrens-ziekenhuisopname", treatment=HOSPITAL_ADMISSION, decision="permit", date_="2024-10-02",
        professional=ROLE_HUISARTS_JANSEN, comment="Wel opname voor behandeling van klachten, niet op de IC.",
    )  # fmt: skip

    # 2. Elderly man with COPD and diabetes; HAP visit for dyspnoea; ACP: no ICU, no ventilation.
    p = _Patient(region, "van-der-meer")
    p.patient(
        bsn="999970239", names=_names(["Cornelis", "Adrianus"], "Meer", own_prefix="van der", call_name="Kees"),
        gender="male", birth_date="1941-11-02",
        address=_address("Zeezwaluwstraat", "88", "2552 GH", "Den Haag"), phone="+31709991002", mobile=False,
        email="kees.vandermeer@mail.demo.example", gp=GP_HAAGSE_DUINEN, gp_role=ROLE_HUISARTS_EL_AMRANI,
        marital=("M", "Married"),
    )  # fmt: skip
    p.problem("copd", ("13645005", "COPD"), onset="2010-02-15", recorder=ROLE_HUISARTS_EL_AMRANI)
    p.problem("diabetes", ("44054006", "Diabetes mellitus type 2"), onset="2012-06", recorder=ROLE_HUISARTS_EL_AMRANI)
    p.problem(
        "kortademigheid", ("267036007", "Kortademigheid"), category=KLACHT, onset="2025-02-06",
        recorder=ROLE_HAP_HUISARTS_JANSEN, encounter="hap-consult",
        note="Toegenomen kortademigheid en opgeven van groen sputum sinds 2 dagen, koorts. Exacerbatie COPD.",
    )  # fmt: skip
    p.encounter(
        "hap-consult", klass=("AMB", "ambulatory"), type_text="Consult huisartsenpost",
        start="2025-02-08T10:15", end="2025-02-08T10:40", participants=[ROLE_TRIAGIST, ROLE_HAP_HUISARTS_JANSEN],
        provider=HAP, location=LOC_HAP, reasons=["kortademigheid"],
    )  # fmt: skip
    p.body_temperature("temperatuur", 38.4, when="2025-02-08T10:20", performer=ROLE_TRIAGIST, encounter="hap-consult")
    p.medication_request(
        "medicatieafspraak-doxycycline", MED_DOXYCYCLINE, status="completed", authored="2025-02-08T10:38",
        requester=ROLE_HAP_HUISARTS_JANSEN, encounter="hap-consult", reason="kortademigheid",
        dosage=_dosage(
            "Eerste dag 2 tabletten, daarna 1 maal per dag 1 tablet, 7 dagen", per_day=1, dose=_stuks(1), days=7,
        ),
        period=("2025-02-08T00:00", "2025-02-14T23:59"),
    )  # fmt: skip
    p.body_weight("gewicht", 71.0, when="2024-11-20T11:00", performer=ROLE_HUISARTS_EL_AMRANI)
    p.treatment_directive(
        "behandelgrens-ic-opname", treatment=ICU_ADMISSION, decision="deny", date_="2024-11-20",
        professional=ROLE_HUISARTS_EL_AMRANI, comment="Bij ernstige exacerbatie wel opname, geen IC-opname.",
    )  # fmt: skip
    p.treatment_directive(
        "behandelgrens-beademing", treatment=VENTILATION, decision="deny", date_="2024-11-20",
        professional=ROLE_HUISARTS_EL_AMRANI,
    )  # fmt: skip

    # 3. Middle-aged man with diabetes and hypertension, on lisinopril.
    p = _Patient(region, "yilmaz")
    p.patient(
        bsn="999966510", names=_names(["Mehmet"], "Yilmaz"), gender="male", birth_date="1968-05-20",
        address=_address("Kamperfoeliestraat", "17", "2563 VA", "Den Haag"), phone="+31699991003", mobile=True,
        email="m.yilmaz@mail.demo.example", gp=GP_HAAGSE_DUINEN, gp_role=ROLE_HUISARTS_EL_AMRANI,
    )  # fmt: skip
    p.problem(
        "diabetes", ("44054006", "Diabetes mellitus type 2"), onset="2018-04-11", recorder=ROLE_HUISARTS_EL_AMRANI
    )
    p.problem(
        "hypertensie", ("59621000", "Essentiële hypertensie"), onset="2019-11-26", recorder=ROLE_HUISARTS_EL_AMRANI
    )
    once_daily = _dosage("1 maal per dag 1 tablet", per_day=1, dose=_stuks(1))
    agreement = p.medication_request(
        "medicatieafspraak-lisinopril", MED_LISINOPRIL, status="active", authored="2024-11-05T09:20",
        requester=ROLE_HUISARTS_EL_AMRANI, dosage=once_daily, reason="hypertensie", period=("2024-11-05T00:00", None),
    )  # fmt: skip
    p.medication_statement(
        "medicatiegebruik-lisinopril", MED_LISINOPRIL, start="2019-12-01", asserted="2024-11-05T09:15",
        source=p.ref, dosage=once_daily, based_on=agreement, reason="hypertensie",
    )  # fmt: skip
    p.blood_pressure("bloeddruk", 142, 88, when="2024-11-05T09:05", performer=ROLE_HUISARTS_EL_AMRANI)
    p.body_weight("gewicht", 92.4, when="2024-11-05T09:08", performer=ROLE_HUISARTS_EL_AMRANI)

    # 4. Young woman, peanut allergy, SEH visit for an ankle sprain.
    p = _Patient(region, "de-boer")
    p.patient(
        bsn="999956838", names=_names(["Sophie", "Anne"], "Boer", own_prefix="de", call_name="Sophie"),
        gender="female", birth_date="1995-08-14",
        address=_address("Meerzichtlaan", "201", "2713 RB", "Zoetermeer"), phone="+31699991004", mobile=True,
        email="sophie.deboer@mail.demo.example", gp=GP_VIJVERHOF, gp_role=ROLE_HUISARTS_JANSEN,
    )  # fmt: skip
    p.problem("hooikoorts", ("367498001", "Hooikoorts"), onset="2008", recorder=ROLE_HUISARTS_JANSEN)
    p.allergy(
        "allergie-pinda", ("762952008", "Pinda"), category="food", criticality_code=("24484000", "Ernstig"),
        reaction=("39579001", "Anafylaxie"), severity="severe", onset="2001-05-03",
        description="Zwelling van lippen en keel, benauwd; adrenaline-autoinjector voorgeschreven",
        recorder=ROLE_HUISARTS_JANSEN,
    )  # fmt: skip
    p.problem(
        "enkeldistorsie", ("44465007", "Distorsie van enkel"), onset="2024-09-14", active=False,
        abatement="2024-10-15", recorder=ROLE_SEH_ARTS, encounter="seh-bezoek",
        note="Inversietrauma links tijdens hockey. Ottawa ankle rules negatief, geen röntgenfoto.",
    )  # fmt: skip
    p.encounter(
        "seh-bezoek", klass=("EMER", "emergency"), type_text="SEH-bezoek",
        start="2024-09-14T16:20", end="2024-09-14T17:45", participants=[ROLE_SEH_ARTS], provider=HOSPITAL,
        location=LOC_SEH, reasons=["enkeldistorsie"],
    )  # fmt: skip
    p.medication_request(
        "medicatieafspraak-ibuprofen", MED_IBUPROFEN, status="completed", authored="2024-09-14T17:30",
        requester=ROLE_SEH_ARTS, encounter="seh-bezoek", reason="enkeldistorsie",
        dosage=_dosage(
            "Zo nodig, bij pijn, maximaal 3 maal per dag 1 tablet", dose=_stuks(1), as_needed=True,
            max_per_day=_stuks(3),
        ),
        period=("2024-09-14T00:00", "2024-09-28T23:59"),
    )  # fmt: skip

    # 5. Man with chest pain: HAP in the evening, referred to the SEH, ACS ruled out.
    p = _Patient(region, "mulder")
    p.patient(
        bsn="999931544", names=_names(["Jeroen"], "Mulder"), gender="male", birth_date="1979-02-03",
        address=_address("Akkerwinde", "9", "2722 LP", "Zoetermeer"), phone="+31699991005", mobile=True,
        email="jeroen.mulder@mail.demo.example", gp=GP_VIJVERHOF, gp_role=ROLE_HUISARTS_JANSEN,
    )  # fmt: skip
    p.problem(
        "pijn-op-de-borst", ("29857009", "Pijn op de borst"), category=KLACHT, onset="2025-01-18T20:45:00+01:00",
        active=False, abatement="2025-01-19", recorder=ROLE_HAP_HUISARTS_JANSEN, encounter="hap-consult",
        note="Drukkende pijn op de borst sinds 20:45, niet uitstralend. Op SEH ACS uitgesloten: ECG zonder "
        "afwijkingen, troponine tweemaal negatief. Waarschijnlijk musculoskeletaal.",
    )  # fmt: skip
    p.encounter(
        "hap-consult", klass=("AMB", "ambulatory"), type_text="Consult huisartsenpost",
        start="2025-01-18T21:40", end="2025-01-18T22:05", participants=[ROLE_TRIAGIST, ROLE_HAP_HUISARTS_JANSEN],
        provider=HAP, location=LOC_HAP, reasons=["pijn-op-de-borst"],
    )  # fmt: skip
    p.encounter(
        "seh-bezoek", klass=("EMER", "emergency"), type_text="SEH-bezoek na verwijzing door huisartsenpost",
        start="2025-01-18T22:35", end="2025-01-19T01:10", participants=[ROLE_SEH_ARTS], provider=HOSPITAL,
        location=LOC_SEH, reasons=["pijn-op-de-borst"],
    )  # fmt: skip
    p.blood_pressure("bloeddruk-seh", 138, 86, when="2025-01-18T22:45", performer=ROLE_SEH_ARTS, encounter="seh-bezoek")
    p.heart_rate("hartfrequentie-seh", 88, when="2025-01-18T22:45", performer=ROLE_SEH_ARTS, encounter="seh-bezoek")

    # 6. Child with acute otitis media at the HAP on Boxing Day.
    p = _Patient(region, "visser")
    p.patient(
        bsn="999908108", names=_names(["Noor"], "Visser"), gender="female", birth_date="2016-04-22",
        address=_address("Schelpenpad", "30", "2583 ZT", "Den Haag"), phone="+31699991006", mobile=True,
        email=None, gp=GP_HAAGSE_DUINEN, gp_role=ROLE_HUISARTS_EL_AMRANI,
        contacts=[
            {
                "relationship": [
                    _cc(SYS_CONTACT_ROLE, "01", "Eerste relatie/contactpersoon"), _cc(SYS_V3_ROLE, "MTH", "Mother"),
                ],
                "name": _names(["Lisa"], "Visser")[0],
                "telecom": [_phone("+31699991006", mobile=True, use=None)],
            }
        ],
    )  # fmt: skip
    p.problem(
        "otitis-media", ("65363002", "Otitis media"), onset="2024-12-24", active=False, abatement="2025-01-02",
        recorder=ROLE_HAP_HUISARTS_JANSEN, encounter="hap-consult",
        note="Oorpijn rechts en koorts sinds 2 dagen. Paracetamol op geleide van pijn en koorts; "
        "bij aanhouden na 3 dagen contact met eigen huisarts.",
    )  # fmt: skip
    p.encounter(
        "hap-consult", klass=("AMB", "ambulatory"), type_text="Consult huisartsenpost",
        start="2024-12-26T11:05", end="2024-12-26T11:20", participants=[ROLE_TRIAGIST, ROLE_HAP_HUISARTS_JANSEN],
        provider=HAP, location=LOC_HAP, reasons=["otitis-media"],
    )  # fmt: skip
    p.body_temperature("temperatuur", 38.9, when="2024-12-26T11:08", performer=ROLE_TRIAGIST, encounter="hap-consult")

    # 7. Very old woman with dementia in the nursing home, history of hip fracture.
    p = _Patient(region, "hoekstra")
    p.patient(
        bsn="999951993",
        names=_names(["Wilhelmina", "Maria"], "Kok", partner="Hoekstra", partner_first=True, call_name="Mien"),
        gender="female", birth_date="1929-07-30",
        address=_address("Zoete Hof", "3", "2719 EE", "Zoetermeer"), phone="+31799990600", mobile=False,
        email=None, gp=GP_VIJVERHOF, gp_role=ROLE_HUISARTS_JANSEN, marital=("W", "Widowed"),
        contacts=[
            {
                "relationship": [
                    _cc(SYS_CONTACT_ROLE, "24", "Wettelijke vertegenwoordiger"), _cc(SYS_V3_ROLE, "SONC", "Son"),
                ],
                "name": _names(["Johan"], "Hoekstra")[0],
                "telecom": [_phone("+31699991007", mobile=True, use=None)],
            }
        ],
    )  # fmt: skip
    p.problem("dementie", ("26929004", "Ziekte van Alzheimer"), onset="2021-06-08", recorder=ROLE_HUISARTS_JANSEN)
    p.problem(
        "heupfractuur", ("359817006", "Gesloten heupfractuur"), onset="2023-02-11", active=False,
        abatement="2023-06-30", recorder=ROLE_HUISARTS_JANSEN, note="Val in huis; kophalsprothese rechts.",
    )  # fmt: skip
    p.blood_pressure("bloeddruk", 128, 70, when="2025-01-06T10:15", performer=ROLE_WIJKVERPLEEGKUNDIGE)
    p.body_weight("gewicht", 54.2, when="2025-01-06T10:20", performer=ROLE_WIJKVERPLEEGKUNDIGE)

    # 8. Man with rheumatoid arthritis on weekly methotrexate; hay fever.
    p = _Patient(region, "el-idrissi")
    p.patient(
        bsn="999937959", names=_names(["Ahmed"], "El Idrissi"), gender="male", birth_date="1985-12-09",
        address=_address("Wolfraamstraat", "52", "2516 BG", "Den Haag"), phone="+31699991008", mobile=True,
        email="a.elidrissi@mail.demo.example", gp=GP_HAAGSE_DUINEN, gp_role=ROLE_HUISARTS_EL_AMRANI,
        marital=("M", "Married"),
    )  # fmt: skip
    p.problem(
        "reumatoide-artritis", ("69896004", "Reumatoïde artritis"), onset="2020-03-17", recorder=ROLE_HUISARTS_EL_AMRANI
    )
    p.allergy(
        "allergie-graspollen", ("256277009", "Graspollen"), category="environment",
        criticality_code=("255604002", "Licht"),
        reaction=("490008", "Overgevoeligheidsreactie van de bovenste luchtwegen"),
        severity="mild", onset="2002", description="Niezen, loopneus en jeukende ogen in mei en juni",
        recorder=ROLE_HUISARTS_EL_AMRANI,
    )  # fmt: skip
    p.medication_statement(
        "medicatiegebruik-methotrexaat", MED_METHOTREXAAT, start="2020-04-01", asserted="2024-10-15T14:10",
        source=p.ref, reason="reumatoide-artritis",
        dosage=_dosage("1 maal per week 0,6 ml (15 mg) subcutaan, op zondag", per_week=1, oral=False,
                       dose=_ucum(0.6, "mL", "ml")),
    )  # fmt: skip
    p.blood_pressure("bloeddruk", 124, 78, when="2024-10-15T14:00", performer=ROLE_HUISARTS_EL_AMRANI)


# --- public API ----------------------------------------------------------------------------------


def demo_bundle() -> JSON:
    """The demo region as one FHIR R4 transaction Bundle of `PUT Type/id` entries (a fresh dict per call)."""
    region = _Region()
    _add_organisations(region)
    _add_professionals(region)
    _add_medications(region)
    _add_patients(region)
    return region.bundle()
