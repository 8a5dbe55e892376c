"""The single-resource REST interactions over HTTP: create, read, vread, update, patch, delete,
conditional variants, versioning headers, Prefer, formats and errors."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from conftest import BASE, fhir_json, patient
from fastapi.testclient import TestClient

JSON = {"Content-Type": "application/fhir+json"}


def create(client: TestClient, res: dict[str, Any], **headers: str) -> Any:
    return client.post(f"/fhir/{res['resourceType']}", json=res, headers=fhir_json(**headers))


def outcome(r: Any) -> dict[str, Any]:
    body = r.json()
    assert body["resourceType"] == "OperationOutcome", body
    assert body["issue"][0]["severity"] in ("error", "fatal", "warning", "information")
    return body


def count(client: TestClient, rt: str) -> int:
    return int(client.get(f"/fhir/{rt}", params={"_summary": "count"}).json()["total"])


# -- create / read / vread ---------------------------------------------------------------------


def test_create_then_read_and_vread(client: TestClient) -> None:
    r = create(client, patient())
    assert r.status_code == 201
    body = r.json()
    rid = body["id"]
    assert body["meta"]["versionId"] == "1"
    assert r.headers["ETag"] == 'W/"1"'
    assert r.headers["Location"] == f"{BASE}/Patient/{rid}/_history/1"
    assert r.headers["Content-Type"].startswith("application/fhir+json")
    assert "Last-Modified" in r.headers

    got = client.get(f"/fhir/Patient/{rid}")
    assert got.status_code == 200
    assert got.json() == body
    assert got.headers["ETag"] == 'W/"1"'
    assert client.get(f"/fhir/Patient/{rid}/_history/1").json() == body


def test_create_ignores_client_id(client: TestClient) -> None:
    r = create(client, patient(id="my-own-id"))
    assert r.status_code == 201
    assert r.json()["id"] != "my-own-id"


def test_read_unknown_is_404_with_outcome(client: TestClient) -> None:
    r = client.get("/fhir/Patient/does-not-exist")
    assert r.status_code == 404
    assert outcome(r)["issue"][0]["code"] == "not-found"


def test_unknown_resource_type_is_404(client: TestClient) -> None:
    assert client.get("/fhir/Patiënt/1").status_code == 404
    r = client.post("/fhir/Banana", json={"resourceType": "Banana"}, headers=JSON)
    assert r.status_code == 404
    assert "Banana" in outcome(r)["issue"][0]["diagnostics"]
    assert client.post("/fhir/DomainResource", json={"resourceType": "DomainResource"}, headers=JSON).status_code == 404


def test_vread_of_unknown_version_is_404(client: TestClient) -> None:
    rid = create(client, patient()).json()["id"]
    assert client.get(f"/fhir/Patient/{rid}/_history/7").status_code == 404
    assert client.get(f"/fhir/Patient/{rid}/_history/x").status_code == 404


# -- bad input ----------------------------------------------------------------------------------


def test_malformed_json_is_400(client: TestClient) -> None:
    r = client.post("/fhir/Patient", content=b'{"resourceType": "Patient",', headers=JSON)
    assert r.status_code == 400
    assert "JSON" in outcome(r)["issue"][0]["diagnostics"]


def test_body_must_be_a_resource(client: TestClient) -> None:
    assert client.post("/fhir/Patient", content=b"[1,2]", headers=JSON).status_code == 400
    assert client.post("/fhir/Patient", content=b'{"name": []}', headers=JSON).status_code == 400


def test_resource_type_must_match_url(client: TestClient) -> None:
    r = client.post("/fhir/Patient", json={"resourceType": "Observation"}, headers=JSON)
    assert r.status_code == 400
    assert outcome(r)["issue"][0]["expression"] == ["resourceType"]


def test_invalid_resource_is_400_with_expression_and_nothing_stored(client: TestClient) -> None:
    r = create(client, patient(favouriteColour="blue"))
    assert r.status_code == 400
    issue = outcome(r)["issue"][0]
    assert issue["severity"] == "error"
    assert any("favouriteColour" in e for e in issue.get("expression", [])) or "favouriteColour" in issue["diagnostics"]
    assert count(client, "Patient") == 0


@pytest.mark.parametrize(
    ("bad", "where"),
    [
        ({"gender": ["male"]}, "gender"),  # max 1 given as a list
        ({"name": {"family": "x"}}, "name"),  # list given as an object
        ({"birthDate": "1950-13-01"}, "birthDate"),  # bad date
        ({"active": "yes"}, "active"),  # wrong primitive kind
        ({"deceasedString": "no"}, "deceased"),  # choice type not allowed
    ],
)
def test_base_structure_violations_are_rejected(client: TestClient, bad: dict[str, Any], where: str) -> None:
    r = create(client, patient(**bad))
    assert r.status_code == 400, r.text
    text = orjson.dumps(outcome(r)).decode()
    assert where in text


def test_missing_required_element_is_400(client: TestClient) -> None:
    r = client.post("/fhir/Observation", json={"resourceType": "Observation", "status": "final"}, headers=JSON)
    assert r.status_code == 400
    assert "code" in orjson.dumps(outcome(r)).decode()


def test_unsupported_media_type_is_415(client: TestClient) -> None:
    r = client.post("/fhir/Patient", content=b"name=Jan", headers={"Content-Type": "text/plain"})
    assert r.status_code == 415
    assert outcome(r)["issue"][0]["code"] == "not-supported"
    r = client.post("/fhir/Patient", json=patient(), headers={"Content-Type": "application/fhir+json; fhirVersion=3.0"})
    assert r.status_code == 415


def test_body_over_the_limit_is_413(client: TestClient) -> None:
    big = patient(name=[{"family": "x" * (3 * 1024 * 1024)}])
    r = client.post("/fhir/Patient", content=orjson.dumps(big), headers=JSON)
    assert r.status_code == 413
    assert outcome(r)["issue"][0]["code"] == "too-costly"
    assert count(client, "Patient") == 0


def test_post_without_body_is_400(client: TestClient) -> None:
    r = client.post("/fhir/Patient", headers=JSON)
    assert r.status_code == 400


def test_method_not_allowed(client: TestClient) -> None:
    r = client.delete("/fhir/metadata")
    assert r.status_code in (404, 405)
    outcome(r)


def test_invalid_id_in_url(client: TestClient) -> None:
    r = client.put("/fhir/Patient/bad_id!", json=patient(id="bad_id!"), headers=JSON)
    assert r.status_code == 400


# -- update ---------------------------------------------------------------------------------------


def test_update_as_create_with_client_id(client: TestClient) -> None:
    r = client.put("/fhir/Patient/pat-1", json=patient(id="pat-1"), headers=JSON)
    assert r.status_code == 201
    assert r.headers["Location"].endswith("/Patient/pat-1/_history/1")
    r = client.put("/fhir/Patient/pat-1", json=patient(id="pat-1", gender="female"), headers=JSON)
    assert r.status_code == 200
    assert r.json()["meta"]["versionId"] == "2"
    assert client.get("/fhir/Patient/pat-1").json()["gender"] == "female"
    assert client.get("/fhir/Patient/pat-1/_history/1").json()["gender"] == "male"


def test_update_needs_matching_id(client: TestClient) -> None:
    r = client.put("/fhir/Patient/pat-1", json=patient(id="pat-2"), headers=JSON)
    assert r.status_code == 400
    assert "differs" in outcome(r)["issue"][0]["diagnostics"]
    r = client.put("/fhir/Patient/pat-1", json=patient(), headers=JSON)
    assert r.status_code == 400


def test_unchanged_update_makes_no_new_version(client: TestClient) -> None:
    client.put("/fhir/Patient/p", json=patient(id="p"), headers=JSON)
    r = client.put("/fhir/Patient/p", json=patient(id="p"), headers=JSON)
    assert r.status_code == 200
    assert r.json()["meta"]["versionId"] == "1"


def test_if_match(client: TestClient) -> None:
    client.put("/fhir/Patient/p", json=patient(id="p"), headers=JSON)
    ok = client.put("/fhir/Patient/p", json=patient(id="p", gender="other"), headers=fhir_json(**{"If-Match": 'W/"1"'}))
    assert ok.status_code == 200
    stale = client.put(
        "/fhir/Patient/p", json=patient(id="p", gender="female"), headers=fhir_json(**{"If-Match": 'W/"1"'})
    )
    assert stale.status_code == 412
    assert outcome(stale)["issue"][0]["severity"] == "error"
    assert client.get("/fhir/Patient/p").json()["gender"] == "other"
    bad = client.put("/fhir/Patient/p", json=patient(id="p"), headers=fhir_json(**{"If-Match": "banana"}))
    assert bad.status_code == 400


def test_if_none_match_and_if_modified_since_on_read(client: TestClient) -> None:
    r = client.put("/fhir/Patient/p", json=patient(id="p"), headers=JSON)
    assert client.get("/fhir/Patient/p", headers={"If-None-Match": 'W/"1"'}).status_code == 304
    assert client.get("/fhir/Patient/p", headers={"If-None-Match": 'W/"0"'}).status_code == 200
    assert client.get("/fhir/Patient/p", headers={"If-Modified-Since": r.headers["Last-Modified"]}).status_code == 304
    assert (
        client.get("/fhir/Patient/p", headers={"If-Modified-Since": "Mon, 01 Jan 2001 00:00:00 GMT"}).status_code == 200
    )


def test_create_only_put_with_if_none_match_star(client: TestClient) -> None:
    h = fhir_json(**{"If-None-Match": "*"})
    assert client.put("/fhir/Patient/p", json=patient(id="p"), headers=h).status_code == 201
    assert client.put("/fhir/Patient/p", json=patient(id="p", gender="female"), headers=h).status_code == 412


# -- delete ---------------------------------------------------------------------------------------


def test_delete_then_read_is_410_and_history_is_kept(client: TestClient) -> None:
    client.put("/fhir/Patient/p", json=patient(id="p"), headers=JSON)
    r = client.delete("/fhir/Patient/p")
    assert r.status_code == 204
    gone = client.get("/fhir/Patient/p")
    assert gone.status_code == 410
    assert outcome(gone)["issue"][0]["code"] == "deleted"
    assert client.get("/fhir/Patient/p/_history/1").status_code == 200
    assert client.get("/fhir/Patient/p/_history/2").status_code == 410
    hist = client.get("/fhir/Patient/p/_history").json()
    assert [e["request"]["method"] for e in hist["entry"]] == ["DELETE", "PUT"]
    assert "resource" not in hist["entry"][0]
    assert client.delete("/fhir/Patient/p").status_code == 204  # idempotent
    assert client.delete("/fhir/Patient/never-was").status_code == 204
    again = client.put("/fhir/Patient/p", json=patient(id="p"), headers=JSON)
    assert again.status_code == 201
    assert again.json()["meta"]["versionId"] == "3"


def test_delete_with_stale_if_match_is_412(client: TestClient) -> None:
    client.put("/fhir/Patient/p", json=patient(id="p"), headers=JSON)
    assert client.delete("/fhir/Patient/p", headers={"If-Match": 'W/"5"'}).status_code == 412
    assert client.get("/fhir/Patient/p").status_code == 200


# -- conditional interactions --------------------------------------------------------------------


def test_conditional_create(client: TestClient) -> None:
    cond = {"If-None-Exist": "identifier=http://fhir.nl/fhir/NamingSystem/bsn|999911120"}
    first = create(client, patient(), **cond)
    assert first.status_code == 201
    second = create(client, patient(), **cond)
    assert second.status_code == 200
    assert second.json()["id"] == first.json()["id"]
    assert count(client, "Patient") == 1
    create(client, patient())  # a second one with the same BSN, unconditionally
    assert create(client, patient(), **cond).status_code == 412
    bad = create(client, patient(), **{"If-None-Exist": "nonsense-param=1"})
    assert bad.status_code == 400


def test_conditional_update(client: TestClient) -> None:
    url = "/fhir/Patient?identifier=http://fhir.nl/fhir/NamingSystem/bsn|999911120"
    r = client.put(url, json=patient(), headers=JSON)
    assert r.status_code == 201
    rid = r.json()["id"]
    r = client.put(url, json=patient(gender="female"), headers=JSON)
    assert r.status_code == 200
    assert r.json()["id"] == rid
    assert r.json()["meta"]["versionId"] == "2"
    r = client.put(url, json=patient(id="other"), headers=JSON)
    assert r.status_code == 400  # the body id must be the matched one
    create(client, patient())
    assert client.put(url, json=patient(), headers=JSON).status_code == 412


def test_conditional_delete(client: TestClient) -> None:
    url = "/fhir/Patient?identifier=http://fhir.nl/fhir/NamingSystem/bsn|999911120"
    assert client.delete(url).status_code == 204  # no match: nothing to do
    create(client, patient())
    assert client.delete(url).status_code == 204
    assert count(client, "Patient") == 0
    create(client, patient())
    create(client, patient())
    assert client.delete(url).status_code == 412
    assert count(client, "Patient") == 2
    assert client.delete("/fhir/Patient").status_code == 400  # no criteria


# -- patch ---------------------------------------------------------------------------------------


def test_json_patch(client: TestClient) -> None:
    client.put("/fhir/Patient/p", json=patient(id="p"), headers=JSON)
    ops = [{"op": "replace", "path": "/gender", "value": "female"}, {"op": "add", "path": "/active", "value": True}]
    r = client.patch("/fhir/Patient/p", json=ops, headers={"Content-Type": "application/json-patch+json"})
    assert r.status_code == 200, r.text
    assert r.json()["gender"] == "female"
    assert r.json()["active"] is True
    assert r.json()["meta"]["versionId"] == "2"


def test_json_patch_that_breaks_the_resource_is_rejected(client: TestClient) -> None:
    client.put("/fhir/Patient/p", json=patient(id="p"), headers=JSON)
    ops = [{"op": "add", "path": "/bogus", "value": 1}]
    r = client.patch("/fhir/Patient/p", json=ops, headers={"Content-Type": "application/json-patch+json"})
    assert r.status_code == 400
    assert client.get("/fhir/Patient/p").json()["meta"]["versionId"] == "1"
    r = client.patch(
        "/fhir/Patient/p",
        json=[{"op": "test", "path": "/gender", "value": "female"}],
        headers={"Content-Type": "application/json-patch+json"},
    )
    assert r.status_code == 422


def test_fhirpath_patch(client: TestClient) -> None:
    client.put("/fhir/Patient/p", json=patient(id="p"), headers=JSON)
    params = {
        "resourceType": "Parameters",
        "parameter": [
            {
                "name": "operation",
                "part": [
                    {"name": "type", "valueCode": "replace"},
                    {"name": "path", "valueString": "Patient.birthDate"},
                    {"name": "value", "valueDate": "1951-02-03"},
                ],
            }
        ],
    }
    r = client.patch("/fhir/Patient/p", json=params, headers=JSON)
    assert r.status_code == 200, r.text
    assert r.json()["birthDate"] == "1951-02-03"


def test_patch_unknown_and_stale(client: TestClient) -> None:
    ops = [{"op": "replace", "path": "/gender", "value": "female"}]
    h = {"Content-Type": "application/json-patch+json"}
    assert client.patch("/fhir/Patient/nope", json=ops, headers=h).status_code == 404
    client.put("/fhir/Patient/p", json=patient(id="p"), headers=JSON)
    assert client.patch("/fhir/Patient/p", json=ops, headers={**h, "If-Match": 'W/"9"'}).status_code == 412


# -- Prefer --------------------------------------------------------------------------------------


def test_prefer_return(client: TestClient) -> None:
    r = create(client, patient(), Prefer="return=minimal")
    assert r.status_code == 201
    assert r.content == b""
    assert r.headers["Location"]
    r = create(client, patient(), Prefer="return=OperationOutcome")
    assert r.status_code == 201
    assert r.json()["resourceType"] == "OperationOutcome"
    r = create(client, patient(), Prefer="return=representation")
    assert r.json()["resourceType"] == "Patient"


# -- formats -------------------------------------------------------------------------------------

XML_PATIENT = b"""<?xml version="1.0" encoding="UTF-8"?>
<Patient xmlns="http://hl7.org/fhir">
  <id value="xml-1"/>
  <identifier><system value="http://fhir.nl/fhir/NamingSystem/bsn"/><value value="999909587"/></identifier>
  <active value="true"/>
  <name><family value="de Vries"/><given value="Anna"/><given value="Maria"/></name>
  <gender value="female"/>
  <birthDate value="1940-04-28"/>
</Patient>"""


def test_xml_in_json_and_xml_out(client: TestClient) -> None:
    r = client.put("/fhir/Patient/xml-1", content=XML_PATIENT, headers={"Content-Type": "application/fhir+xml"})
    assert r.status_code == 201, r.text
    as_json = client.get("/fhir/Patient/xml-1").json()
    assert as_json["active"] is True
    assert as_json["name"][0]["given"] == ["Anna", "Maria"]
    as_xml = client.get("/fhir/Patient/xml-1", headers={"Accept": "application/fhir+xml"})
    assert as_xml.headers["Content-Type"].startswith("application/fhir+xml")
    assert b'<given value="Maria"/>' in as_xml.content
    assert b'<versionId value="1"/>' in as_xml.content
    assert client.get("/fhir/Patient/xml-1?_format=xml").content == as_xml.content
    assert client.get("/fhir/Patient/xml-1?_format=json").json() == as_json


def test_malformed_xml_is_400(client: TestClient) -> None:
    r = client.post(
        "/fhir/Patient",
        content=b"<Patient xmlns='http://hl7.org/fhir'><id value='x'/>",
        headers={"Content-Type": "application/fhir+xml"},
    )
    assert r.status_code == 400
    xxe = (
        b'<?xml version="1.0"?><!DOCTYPE p [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
        b'<Patient xmlns="http://hl7.org/fhir"><id value="&x;"/></Patient>'
    )
    assert (
        client.post("/fhir/Patient", content=xxe, headers={"Content-Type": "application/fhir+xml"}).status_code == 400
    )


def test_errors_come_in_the_requested_format(client: TestClient) -> None:
    r = client.get("/fhir/Patient/nope", headers={"Accept": "application/fhir+xml"})
    assert r.status_code == 404
    assert r.content.startswith(b"<?xml")
    assert b"OperationOutcome" in r.content


def test_pretty_summary_and_elements(client: TestClient) -> None:
    client.put(
        "/fhir/Patient/p",
        json=patient(
            id="p",
            text={"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml">Jan</div>'},
            maritalStatus={"text": "getrouwd"},
        ),
        headers=JSON,
    )
    pretty = client.get("/fhir/Patient/p?_pretty=true").text
    assert "\n  " in pretty
    summary = client.get("/fhir/Patient/p?_summary=true").json()
    assert "maritalStatus" not in summary and "text" not in summary
    assert summary["name"] and summary["birthDate"]
    assert any(t["code"] == "SUBSETTED" for t in summary["meta"]["tag"])
    text = client.get("/fhir/Patient/p?_summary=text").json()
    assert "text" in text and "name" not in text
    data = client.get("/fhir/Patient/p?_summary=data").json()
    assert "text" not in data and "maritalStatus" in data
    elements = client.get("/fhir/Patient/p?_elements=gender").json()
    assert set(elements) == {"resourceType", "id", "meta", "gender"}
    assert client.get("/fhir/Patient/p?_summary=bogus").status_code == 400


def test_accept_header_negotiation(client: TestClient) -> None:
    client.put("/fhir/Patient/p", json=patient(id="p"), headers=JSON)
    r = client.get("/fhir/Patient/p", headers={"Accept": "text/html, application/fhir+xml;q=0.9, */*;q=0.1"})
    assert r.headers["Content-Type"].startswith("application/fhir+xml")
    r = client.get("/fhir/Patient/p", headers={"Accept": "application/json"})
    assert r.headers["Content-Type"].startswith("application/fhir+json")


# -- capabilities --------------------------------------------------------------------------------


def test_capability_statement_reflects_the_server(client: TestClient) -> None:
    cs = client.get("/fhir/metadata").json()
    assert cs["resourceType"] == "CapabilityStatement"
    assert cs["fhirVersion"] == "4.0.1"
    rest = cs["rest"][0]
    types = {r["type"]: r for r in rest["resource"]}
    assert "Patient" in types and "DomainResource" not in types
    codes = {i["code"] for i in types["Patient"]["interaction"]}
    assert {"read", "vread", "update", "patch", "delete", "create", "search-type", "history-instance"} <= codes
    assert types["Patient"]["conditionalDelete"] == "single"
    assert any(p["name"] == "identifier" for p in types["Patient"]["searchParam"])
    assert {i["code"] for i in rest["interaction"]} >= {"transaction", "batch", "history-system"}
    xml = client.get("/fhir/metadata", headers={"Accept": "application/fhir+xml"})
    assert xml.status_code == 200 and b"<CapabilityStatement" in xml.content


def test_validate_operation(client: TestClient) -> None:
    ok = client.post("/fhir/Patient/$validate", json=patient(), headers=JSON)
    assert ok.status_code == 200
    assert ok.json()["issue"][0]["severity"] == "information"
    bad = client.post("/fhir/Patient/$validate", json=patient(gender=["x"]), headers=JSON)
    assert bad.status_code == 200
    assert bad.json()["issue"][0]["severity"] == "error"
    assert count(client, "Patient") == 0


def test_binary_json_patch_in_history(client: TestClient) -> None:
    """History entries record how each version came about."""
    client.put("/fhir/Patient/p", json=patient(id="p"), headers=JSON)
    client.patch(
        "/fhir/Patient/p",
        json=[{"op": "replace", "path": "/gender", "value": "female"}],
        headers={"Content-Type": "application/json-patch+json"},
    )
    hist = client.get("/fhir/Patient/p/_history").json()
    assert [e["request"]["method"] for e in hist["entry"]] == ["PATCH", "PUT"]
