"""FHIR XML <-> JSON: the Nictiz nl-core examples, Synthea bundles, and focused cases."""

from __future__ import annotations

import codecs
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from lxml import etree
from support import nictiz_example_files, synthea_bundle, synthea_files

from hub.fhirmodel.structure import structure
from hub.formats import jsonfmt
from hub.formats.outcome import FhirError
from hub.formats.xml import parse_xml, to_xml

F = "http://hl7.org/fhir"
XHTML = "http://www.w3.org/1999/xhtml"
NICTIZ = nictiz_example_files()


def wrap(body: str, root: str = "Patient") -> bytes:
    return f'<{root} xmlns="{F}">{body}</{root}>'.encode()


def fails(data: bytes, *words: str) -> FhirError:
    """Parsing `data` must fail with a 400 whose diagnostics mention every one of `words`."""
    with pytest.raises(FhirError) as info:
        parse_xml(data)
    err = info.value
    assert err.status == 400
    for word in words:
        assert word in err.diagnostics, (word, err.diagnostics)
    return err


# --- canonical XML comparison ------------------------------------------------------------------------


def _norm_text(text: str | None) -> str:
    return " ".join((text or "").split())


def canonical(el: etree._Element, ordered: bool) -> tuple[Any, ...]:
    """Names, attributes and normalised text; FHIR siblings sorted by name unless `ordered`."""
    attrs = tuple(sorted(el.items()))
    children = [(*canonical(c, ordered), _norm_text(c.tail)) for c in el if isinstance(c.tag, str)]
    if not ordered and not el.tag.startswith("{" + XHTML):
        children.sort(key=lambda c: c[0])  # stable: repeated elements keep their relative order
    return (el.tag, attrs, _norm_text(el.text), tuple(children))


def in_definition_order(el: etree._Element, type_name: str) -> bool:
    """Whether every FHIR element's children follow the R4 definition order (walked with the structure)."""
    info = structure()[type_name]
    last = -1
    for child in el:
        if not isinstance(child.tag, str):
            continue
        element = info.elements[etree.QName(child).localname]
        if element.order < last:
            return False
        last = element.order
        if element.type == "xhtml":
            continue
        if element.type == "Resource" or structure()[element.type].kind == "resource":
            inner = child[0]
            if not in_definition_order(inner, etree.QName(inner).localname):
                return False
        elif structure()[element.type].is_primitive:
            if not all(in_definition_order(x, "Extension") for x in child if isinstance(x.tag, str)):
                return False
        elif not in_definition_order(child, element.type):
            return False
    return True


def xml_tree(data: bytes) -> etree._Element:
    parser = etree.XMLParser(remove_comments=True, remove_pis=True, resolve_entities=False, no_network=True)
    return etree.fromstring(data, parser)


# --- the Nictiz examples -----------------------------------------------------------------------------


@cache
def nictiz_round_trip(path: Path) -> tuple[bytes, dict[str, Any], bytes, dict[str, Any]]:
    original = path.read_bytes()
    first = parse_xml(original)
    written = to_xml(first)
    return original, first, written, parse_xml(written)


def test_nictiz_examples_are_all_there() -> None:
    assert len(NICTIZ) == 271


@pytest.mark.parametrize("path", NICTIZ, ids=lambda p: p.name)
def test_nictiz_example_round_trips(path: Path) -> None:
    original, first, written, second = nictiz_round_trip(path)
    assert first["resourceType"] == etree.QName(xml_tree(original)).localname
    assert second == first
    assert jsonfmt.dumps(second) == jsonfmt.dumps(first)  # also the decimals' stated precision
    root = xml_tree(original)
    ordered = in_definition_order(root, first["resourceType"])
    assert canonical(xml_tree(written), ordered) == canonical(root, ordered)


def test_nictiz_examples_are_in_definition_order() -> None:
    """So the round-trip comparison above is an ordered one for every example."""
    out_of_order = []
    for path in NICTIZ:
        root = xml_tree(path.read_bytes())
        if not in_definition_order(root, etree.QName(root).localname):
            out_of_order.append(path.name)
    assert out_of_order == []


def test_pretty_output_is_the_same_document() -> None:
    original, first, _, _ = nictiz_round_trip(NICTIZ[0])
    pretty = to_xml(first, pretty=True)
    assert b'\n  <id value="' in pretty
    assert parse_xml(pretty) == first
    assert canonical(xml_tree(pretty), True) == canonical(xml_tree(original), True)


# --- Synthea (JSON in) -------------------------------------------------------------------------------


def numeric(obj: Any) -> Any:
    """Decimals from XML and floats from JSON compare as numbers."""
    if isinstance(obj, dict):
        return {k: numeric(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [numeric(v) for v in obj]
    if isinstance(obj, Decimal):
        return float(obj)
    return obj


SYNTHEA_FEW = sorted((f for f in synthea_files() if not f.name.startswith("0-")), key=lambda f: f.stat().st_size)[:3]


@pytest.mark.parametrize("path", SYNTHEA_FEW, ids=lambda p: p.name[:8])
def test_synthea_bundle_round_trips(path: Path) -> None:
    bundle = synthea_bundle(path.name)
    assert numeric(parse_xml(to_xml(bundle))) == bundle


# --- primitives --------------------------------------------------------------------------------------

EXT = "http://example.org/ext"


def test_primitive_with_extension_only() -> None:
    xml = wrap(f'<birthDate id="b1"><extension url="{EXT}"><valueCode value="UNK"/></extension></birthDate>')
    res = parse_xml(xml)
    assert "birthDate" not in res
    assert res["_birthDate"] == {"id": "b1", "extension": [{"url": EXT, "valueCode": "UNK"}]}
    assert parse_xml(to_xml(res)) == res
    assert b'<birthDate id="b1"><extension url="http://example.org/ext">' in to_xml(res)


def test_primitive_with_value_and_extension() -> None:
    res = parse_xml(
        wrap(
            f'<birthDate value="1934-04-28"><extension url="{EXT}"><valueBoolean value="true"/></extension></birthDate>'
        )
    )
    assert res["birthDate"] == "1934-04-28"
    assert res["_birthDate"] == {"extension": [{"url": EXT, "valueBoolean": True}]}


def test_repeating_primitives_with_partial_extensions() -> None:
    xml = wrap(
        "<name><given value='Johanna'/>"
        f"<given id='g2' value='Petronella'/>"
        f"<given><extension url='{EXT}'><valueString value='x'/></extension></given>"
        "<given value='Maria'/></name>"
    )
    name = parse_xml(xml)["name"][0]
    assert name["given"] == ["Johanna", "Petronella", None, "Maria"]
    assert name["_given"] == [None, {"id": "g2"}, {"extension": [{"url": EXT, "valueString": "x"}]}, None]
    again = to_xml({"resourceType": "Patient", "name": [name]})
    assert parse_xml(again)["name"][0] == name


def test_repeating_primitives_without_extensions_have_no_companion() -> None:
    name = parse_xml(wrap("<name><given value='Jo'/></name>"))["name"][0]
    assert name == {"given": ["Jo"]}  # an array even with one item, and no `_given`


def test_json_companion_list_must_align() -> None:
    with pytest.raises(FhirError) as info:
        to_xml({"resourceType": "Patient", "name": [{"given": ["a", "b"], "_given": [None]}]})
    assert info.value.status == 400 and "_given" in info.value.diagnostics
    assert info.value.issues[0].expression == ["Patient.name[0].given"]


def test_decimal_precision_is_kept() -> None:
    xml = wrap(
        '<status value="final"/><code><text value="x"/></code>'
        '<valueQuantity><value value="1.50"/><unit value="mg"/></valueQuantity>',
        "Observation",
    )
    res = parse_xml(xml)
    value = res["valueQuantity"]["value"]
    assert isinstance(value, Decimal) and str(value) == "1.50"
    assert b'"value":1.50' in jsonfmt.dumps(res)
    assert b'<value value="1.50"/>' in to_xml(res)


@pytest.mark.parametrize(("value", "text"), [(1.5, "1.5"), (2, "2"), (1.0, "1.0"), (Decimal("0.010"), "0.010")])
def test_decimal_from_json_numbers(value: Any, text: str) -> None:
    res = {"resourceType": "Observation", "status": "final", "code": {"text": "x"}, "valueQuantity": {"value": value}}
    assert f'<value value="{text}"/>'.encode() in to_xml(res)


def test_boolean_and_integer_become_json_types() -> None:
    res = parse_xml(wrap('<active value="true"/><multipleBirthInteger value="2"/>'))
    assert res["active"] is True
    assert res["multipleBirthInteger"] == 2 and isinstance(res["multipleBirthInteger"], int)
    assert parse_xml(wrap('<active value="false"/>'))["active"] is False
    xml = to_xml(res)
    assert b'<active value="true"/>' in xml and b'<multipleBirthInteger value="2"/>' in xml


def test_bad_boolean_and_integer_values() -> None:
    err = fails(wrap('<active value="yes"/>'), "'yes'", "boolean", "Patient.active")
    assert err.issues[0].expression == ["Patient.active"]
    fails(wrap('<multipleBirthInteger value="1.2"/>'), "'1.2'", "integer", "multipleBirthInteger")
    fails(wrap('<name><given value=""/></name>'), "empty", "Patient.name.given")


def test_positive_int_range() -> None:
    xml = (
        '<status value="active"/><intent value="order"/><subject><reference value="Patient/1"/></subject>'
        '<dispenseRequest><numberOfRepeatsAllowed value="-1"/></dispenseRequest>'
    )
    fails(wrap(xml, "MedicationRequest"), "unsignedInt", "numberOfRepeatsAllowed")


def test_json_side_type_errors() -> None:
    with pytest.raises(FhirError) as info:
        to_xml({"resourceType": "Patient", "active": "true"})
    assert info.value.status == 400 and "active" in info.value.diagnostics
    with pytest.raises(FhirError, match="Unknown property 'nickname'"):
        to_xml({"resourceType": "Patient", "nickname": "Jo"})
    with pytest.raises(FhirError, match="must be a non-empty array"):
        to_xml({"resourceType": "Patient", "name": {"family": "X"}})
    with pytest.raises(FhirError, match="Only one 'deceased"):
        to_xml({"resourceType": "Patient", "deceasedBoolean": True, "deceasedDateTime": "2020"})
    with pytest.raises(FhirError, match="unknown resourceType"):
        to_xml({"resourceType": "Pasient"})


def test_attribute_values_are_escaped() -> None:
    text = "a & b < c > d \"e\" 'f'\nline2\ttab"
    res = {"resourceType": "Patient", "name": [{"text": text}]}
    xml = to_xml(res)
    assert b"&amp;" in xml and b"&lt;" in xml and b"&quot;" in xml and b"&#10;" in xml
    assert parse_xml(xml) == res


def test_output_follows_definition_order() -> None:
    res = {
        "gender": "female",
        "name": [{"given": ["Jo"], "family": "Putten", "id": "n1", "extension": [{"valueString": "x", "url": EXT}]}],
        "active": True,
        "meta": {"profile": ["http://example.org/p"]},
        "id": "p1",
        "resourceType": "Patient",
    }
    assert to_xml(res) == (
        b'<?xml version="1.0" encoding="UTF-8"?>'
        b'<Patient xmlns="http://hl7.org/fhir"><id value="p1"/><meta><profile value="http://example.org/p"/></meta>'
        b'<active value="true"/><name id="n1"><extension url="http://example.org/ext"><valueString value="x"/>'
        b'</extension><family value="Putten"/><given value="Jo"/></name><gender value="female"/></Patient>'
    )


# --- resources inside resources ----------------------------------------------------------------------


def test_contained_resources() -> None:
    xml = wrap(
        '<id value="p1"/><contained><Organization><id value="org1"/><name value="Huisarts"/></Organization>'
        '</contained><contained><Practitioner><id value="pr1"/><active value="true"/></Practitioner></contained>'
        '<managingOrganization><reference value="#org1"/></managingOrganization>'
    )
    res = parse_xml(xml)
    assert res["contained"] == [
        {"resourceType": "Organization", "id": "org1", "name": "Huisarts"},
        {"resourceType": "Practitioner", "id": "pr1", "active": True},
    ]
    assert b'<contained><Organization><id value="org1"/>' in to_xml(res)
    assert parse_xml(to_xml(res, pretty=True)) == res
    fails(wrap("<contained><Pasient/></contained>"), "Pasient", "not a FHIR resource type")
    fails(wrap("<contained/>"), "exactly one resource")


def test_bundle_with_entry_resources() -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction-response",
        "entry": [
            {
                "fullUrl": "urn:uuid:1",
                "resource": {"resourceType": "Patient", "id": "1", "name": [{"family": "Putten"}]},
                "response": {
                    "status": "201 Created",
                    "outcome": {
                        "resourceType": "OperationOutcome",
                        "issue": [{"severity": "information", "code": "informational"}],
                    },
                },
            },
            {
                "resource": {
                    "resourceType": "Parameters",
                    "parameter": [
                        {"name": "p", "resource": {"resourceType": "Basic", "code": {"text": "x"}}},
                        {"name": "n", "valueInteger": 3, "part": [{"name": "q", "valueBoolean": False}]},
                    ],
                }
            },
        ],
    }
    xml = to_xml(bundle, pretty=True)
    assert b"\n    <resource>\n      <Patient>" in xml
    assert parse_xml(xml) == bundle


# --- narrative ---------------------------------------------------------------------------------------


def test_narrative_div_round_trip() -> None:
    div = (
        f'<div xmlns="{XHTML}"><p>Allergie: <b>pinda</b> &amp; <a href="http://x.org/?a=1&amp;b=2">link</a></p>'
        '<table><tr><td><span title="Ernstig (24484000)">ernstig</span></td></tr></table></div>'
    )
    xml = wrap(f'<text><status value="generated"/>{div}</text><active value="true"/>')
    res = parse_xml(xml)
    assert res["text"] == {"status": "generated", "div": div}
    assert res["active"] is True
    written = to_xml(res)
    assert div.encode() in written
    assert parse_xml(written) == res
    assert parse_xml(to_xml(res, pretty=True)) == res


def test_narrative_div_with_prefix_and_inherited_namespaces() -> None:
    xml = (
        f'<Patient xmlns="{F}" xmlns:h="{XHTML}" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
        '<text><status value="generated"/><h:div><h:p class="c">Hoi<!-- weg --></h:p></h:div></text></Patient>'
    ).encode()
    assert parse_xml(xml)["text"]["div"] == f'<div xmlns="{XHTML}"><p class="c">Hoi</p></div>'


def test_narrative_errors() -> None:
    fails(wrap('<text><status value="generated"/><div><p>x</p></div></text>'), "XHTML namespace")
    bad = {"resourceType": "Patient", "text": {"status": "generated", "div": "<div>unclosed"}}
    with pytest.raises(FhirError, match="not well-formed") as info:
        to_xml(bad)
    assert info.value.issues[0].expression == ["Patient.text.div"]
    with pytest.raises(FhirError, match="XHTML namespace"):
        to_xml({"resourceType": "Patient", "text": {"status": "generated", "div": "<div>x</div>"}})
    sneaky = f'<!DOCTYPE d [<!ENTITY e SYSTEM "file:///etc/passwd">]><div xmlns="{XHTML}">&e;</div>'
    with pytest.raises(FhirError, match="DOCTYPE"):
        to_xml({"resourceType": "Patient", "text": {"status": "generated", "div": sneaky}})


# --- bad input ---------------------------------------------------------------------------------------


def test_malformed_xml() -> None:
    fails(b'<Patient xmlns="http://hl7.org/fhir"><active value="true"></Patient>', "not well-formed")
    fails(b"", "not well-formed")


XXE = (
    b'<?xml version="1.0"?><!DOCTYPE Patient [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
    b'<Patient xmlns="http://hl7.org/fhir"><name><text value="&xxe;"/></name></Patient>'
)


def test_doctype_and_entities_are_rejected() -> None:
    fails(XXE, "DOCTYPE")
    # the same in UTF-16, where a plain byte search for "<!DOCTYPE" sees nothing
    fails(
        codecs.BOM_UTF16_LE
        + XXE.decode().replace('version="1.0"', 'version="1.0" encoding="UTF-16"').encode("utf-16-le"),
        "DOCTYPE",
    )
    laughs = b'<!DOCTYPE l [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;">]><Patient xmlns="http://hl7.org/fhir"/>'
    fails(laughs, "DOCTYPE")
    # an undeclared entity is simply malformed
    fails(wrap('<name><text value="&xxe;"/></name>'), "not well-formed")


def test_wrong_namespace() -> None:
    fails(b'<Patient xmlns="http://hl7.org/fhir/other"><active value="true"/></Patient>', "FHIR namespace")
    fails(b'<Patient><active value="true"/></Patient>', "FHIR namespace", "no namespace")
    fails(f'<Patient xmlns="{F}"><active xmlns="urn:x" value="true"/></Patient>'.encode(), "active", "namespace")


def test_unknown_element() -> None:
    err = fails(
        wrap('<name><nickname value="Jo"/></name>'), "Unknown element 'nickname'", "HumanName", "Patient.name.nickname"
    )
    assert err.issues[0].code == "structure"
    fails(wrap('<valueString value="x"/>'), "Unknown element 'valueString'")


def test_non_repeating_element_twice() -> None:
    fails(wrap('<active value="true"/><active value="false"/>'), "'active'", "not repeating", "Patient.active")
    fails(wrap('<deceasedBoolean value="true"/><deceasedDateTime value="2020"/>'), "deceased[x]")


def test_unknown_root_resource_type() -> None:
    fails(wrap("", "Pasient"), "Unknown resource type 'Pasient'")
    fails(wrap("", "HumanName"), "Unknown resource type 'HumanName'")


def test_text_and_attributes_where_not_allowed() -> None:
    fails(wrap("<active value='true'>ja</active>"), "Text content", "active")
    fails(wrap("<name>Jo<family value='X'/></name>"), "Text content", "HumanName")
    fails(wrap("<active value='true' foo='x'/>"), "Unknown attribute 'foo'")
    fails(wrap("<name/>"), "no content", "Patient.name")
    fails(wrap("<active/>"), "neither a value nor extensions")


def test_comments_and_processing_instructions_are_ignored() -> None:
    xml = (
        b'<?xml version="1.0"?><!-- head --><?pi x?><Patient xmlns="http://hl7.org/fhir" '
        b'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:schemaLocation="http://hl7.org/fhir x.xsd">'
        b'<!-- c --><active value="true"/><?pi y?></Patient>'
    )
    assert parse_xml(xml) == {"resourceType": "Patient", "active": True}


def test_element_id_and_extension_url_are_attributes() -> None:
    xml = wrap(
        f'<extension id="e1" url="{EXT}"><valueString value="x"/></extension><name id="n1"><family value="X"/></name>'
    )
    res = parse_xml(xml)
    assert res == {
        "resourceType": "Patient",
        "extension": [{"id": "e1", "url": EXT, "valueString": "x"}],
        "name": [{"id": "n1", "family": "X"}],
    }
    assert to_xml(res).endswith(xml)
