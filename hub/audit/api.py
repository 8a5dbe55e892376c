"""The audit trail through the FHIR API, for auditors: AuditEvent read, search and export.

AuditEvents are served from the audit table, not stored as ordinary resources: create, update,
patch and delete answer 405 (hub/audit/interceptor.py refuses them and every non-auditor).

Search parameters (several values of one parameter: comma = or; repeated parameters: and):
  patient (Patient/[id]), patient.identifier / patient:identifier (BSN: [system|]value),
  agent / altid / user (the professional's UZI/AGB id, a patient's login, or a client id),
  organization (URA or AGB of the responsible organisation; a hub extension), entity (Type/id),
  date (eq ge gt le lt, any precision), outcome (0 4 8 12), type, subtype, action (C R U D E),
  _id, _count (<= 1000), _sort (date | -date, default -date), _total=none.
Export: GET [base]/AuditEvent/$export-audit?[the same parameters]&_outputFormat=ndjson|csv
(default ndjson; at most 50,000 records per request, narrow by date beyond that).
"""

from __future__ import annotations

import base64
import csv
import io
from collections.abc import Callable
from typing import Any

import orjson
from sqlalchemy import ColumnElement, Connection, Select, and_, false, func, or_, select
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from conformance import capability as capabilities
from hub.api import dispatch, operations
from hub.api.render import Shape, error_response
from hub.audit import access_log  # noqa: F401  (registers $access-log)
from hub.audit.record import BSN_SYSTEM
from hub.audit.tables import audit_record
from hub.formats.dates import parse_range
from hub.formats.negotiate import JSON
from hub.formats.outcome import FhirError, invalid, not_found
from hub.pipeline import READ, SEARCH_COMPARTMENT, SEARCH_SYSTEM, SEARCH_TYPE, VREAD, Context, Result
from hub.store.tables import idx_token, resource

EXPORT = "$export-audit"
MAX_EXPORT = 50_000
_IGNORED = {"_format", "_pretty", "_summary", "_elements", "_count", "_page", "_sort", "_total", "_outputFormat"}
r = audit_record.c


def _token(value: str) -> str:
    return value.split("|", 1)[1] if "|" in value else value


def _date(value: str) -> ColumnElement[bool]:
    prefix, rest = (value[:2], value[2:]) if value[:2] in ("eq", "ge", "gt", "le", "lt", "ne") else ("eq", value)
    low, high = parse_range(rest, "date")
    return {
        "eq": and_(r.recorded >= low, r.recorded <= high),
        "ne": or_(r.recorded < low, r.recorded > high),
        "ge": r.recorded >= low,
        "gt": r.recorded > high,
        "le": r.recorded <= high,
        "lt": r.recorded < low,
    }[prefix]


def _entity(conn: Connection, value: str) -> ColumnElement[bool]:
    """Records listing a resource: narrowed to its patient's records (indexed) when it has one."""
    ref = value.split("/_history/")[0]
    rt, _, rid = ref.partition("/")
    listed = or_(r.content.like(f'%"reference":"{ref}/_history/%'), r.content.like(f'%"reference":"{ref}"%'))
    owner = conn.execute(
        select(resource.c.patient_id)
        .where(resource.c.res_type == rt, resource.c.res_id == rid, resource.c.patient_id.is_not(None))
        .limit(1)
    ).scalar()
    return and_(r.patient_id == owner, listed) if owner else listed


def _bsn(conn: Connection, value: str) -> ColumnElement[bool]:
    """By BSN: through the patients that carry it (indexed); else the unindexed column."""
    bsn = _token(value)
    ids = list(
        conn.execute(
            select(resource.c.res_id)
            .join(idx_token, idx_token.c.resource_pk == resource.c.pk)
            .where(
                idx_token.c.res_type == "Patient",
                idx_token.c.param == "identifier",
                idx_token.c.system == BSN_SYSTEM,
                idx_token.c.code == bsn,
                resource.c.is_current,
            )
        ).scalars()
    )
    return r.patient_id.in_(ids) if ids else r.bsn == bsn


def _simple(make: Callable[[str], ColumnElement[bool]]) -> Callable[[Connection, str], ColumnElement[bool]]:
    return lambda _conn, v: make(v)


FILTERS: dict[str, Callable[[Connection, str], ColumnElement[bool]]] = {
    "_id": _simple(lambda v: r.seq == int(v) if v.isdigit() else false()),
    "patient": _simple(lambda v: r.patient_id == v.removeprefix("Patient/")),
    "patient.identifier": _bsn,
    "patient:identifier": _bsn,
    "agent": _simple(lambda v: r.user_id == v.split("/")[-1]),
    "altid": _simple(lambda v: r.user_id == v),
    "user": _simple(lambda v: r.user_id == v),
    "organization": _simple(lambda v: r.organisation == _token(v)),
    "entity": _entity,
    "date": _simple(_date),
    "outcome": _simple(lambda v: r.outcome == _token(v)),
    "type": _simple(lambda v: r.type == _token(v)),
    "subtype": _simple(lambda v: r.subtype == _token(v)),
    "action": _simple(lambda v: r.action == v),
    # Break-the-glass accesses, for their review (not an R4 parameter: the reason is an entity detail).
    "break-the-glass": _simple(
        lambda v: (
            r.content.like('%"type":"break-the-glass"%')
            if v == "true"
            else ~r.content.like('%"type":"break-the-glass"%')
        )
    ),
}


def where(conn: Connection, params: list[tuple[str, str]]) -> list[ColumnElement[bool]]:
    clauses = []
    for name, value in params:
        if name in _IGNORED:
            continue
        make = FILTERS.get(name)
        if make is None:
            raise invalid(f"AuditEvent cannot be searched by {name!r}; see the CapabilityStatement", name)
        values = [value] if name == "date" else [v for v in value.split(",") if v]
        clauses.append(or_(*(make(conn, v) for v in values)) if values else false())
    return clauses


def _int(ctx: Context, name: str, default: int, cap: int) -> int:
    value = ctx.interaction.param(name)
    if value is None:
        return default
    if not value.isdigit():
        raise invalid(f"{name} must be a whole number", name)
    return min(int(value), cap)


def _entry(base: str, row: Any) -> dict[str, Any]:
    return {
        "fullUrl": f"{base}/AuditEvent/{row.seq}",
        "resource": orjson.loads(row.content),
        "search": {"mode": "match"},
    }


def search(ctx: Context) -> Result:
    i = ctx.interaction
    clauses = where(ctx.conn, i.params)
    if i.kind == SEARCH_COMPARTMENT:
        if i.res_type != "Patient":
            raise not_found(f"AuditEvent is not in the {i.res_type} compartment")
        clauses.append(r.patient_id == i.res_id)
    count = _int(ctx, "_count", ctx.services.settings.default_page_size, ctx.services.settings.max_page_size)
    ascending = i.param("_sort") in ("date", "_lastUpdated")
    q: Select[Any] = select(r.seq, r.content).where(*clauses)
    page = i.param("_page")
    if page:
        if not page.isdigit():
            raise invalid("_page is not a page of this search", "_page")
        q = q.where(r.seq > int(page) if ascending else r.seq < int(page))
    q = q.order_by(r.seq.asc() if ascending else r.seq.desc()).limit(count + 1)
    rows = list(ctx.conn.execute(q))
    path = "/".join(x for x in (i.res_type, i.res_id, i.compartment_type) if x)
    echo = [(k, v) for k, v in i.params if k not in ("_page",)]
    links = [{"relation": "self", "url": _link(i.base_url, path, echo + ([("_page", page)] if page else []))}]
    if len(rows) > count:
        rows = rows[:count]
        links.append({"relation": "next", "url": _link(i.base_url, path, [*echo, ("_page", str(rows[-1].seq))])})
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset"}
    if i.param("_total") != "none":
        bundle["total"] = ctx.conn.execute(select(func.count()).select_from(audit_record).where(*clauses)).scalar_one()
    bundle["link"] = links
    bundle["entry"] = [_entry(i.base_url, row) for row in rows]
    return Result(200, resource=bundle)


def _link(base: str, path: str, params: list[tuple[str, str]]) -> str:
    from urllib.parse import urlencode

    return f"{base}/{path}" + (f"?{urlencode(params)}" if params else "")


def read(ctx: Context) -> Result:
    i = ctx.interaction
    if i.kind == VREAD and i.version_id != "1":
        raise not_found(f"AuditEvent/{i.res_id} has no version {i.version_id}")
    seq = int(i.res_id) if i.res_id and i.res_id.isdigit() else -1
    row = ctx.conn.execute(select(r.content).where(r.seq == seq)).first()
    if row is None:
        raise not_found(f"AuditEvent/{i.res_id} is not known")
    return Result(200, resource=orjson.loads(row.content))


def execute(ctx: Context) -> Result:
    """The executor for interactions on AuditEvent (registered in hub/api/dispatch.py)."""
    kind = ctx.interaction.kind
    if kind in (READ, VREAD):
        return read(ctx)
    if kind in (SEARCH_TYPE, SEARCH_COMPARTMENT):
        return search(ctx)
    if kind == SEARCH_SYSTEM:
        raise invalid("search AuditEvent at [base]/AuditEvent, not across types")
    raise FhirError(405, "not-supported", f"{kind} is not supported on AuditEvent: the audit trail is append-only")


# -- export ---------------------------------------------------------------------------------------


def _export(ctx: Context) -> Result:
    q = select(r.seq, r.content).where(*where(ctx.conn, ctx.interaction.params)).order_by(r.seq)
    rows = list(ctx.conn.execute(q.limit(MAX_EXPORT + 1)))
    if len(rows) > MAX_EXPORT:
        raise FhirError(413, "too-costly", f"more than {MAX_EXPORT} records match; export a shorter date range")
    entries = [{"resource": orjson.loads(row.content)} for row in rows]
    return Result(200, resource={"resourceType": "Bundle", "type": "collection", "entry": entries})


operations.register(operations.Operation(EXPORT.lstrip("$"), _export, type_level=True, resource_types=("AuditEvent",)))

CSV_COLUMNS = (
    "recorded", "id", "type", "subtype", "action", "outcome", "outcome_description", "patient", "bsn",
    "user", "user_name", "user_role", "organisation", "client", "network_address", "purpose",
    "data_objects", "query", "consent", "decision", "rule", "break_the_glass", "correlation_ids",
)  # fmt: skip


def csv_row(event: dict[str, Any]) -> dict[str, str]:
    """One flat row per AuditEvent for spreadsheets."""
    row = {c: "" for c in CSV_COLUMNS}
    row.update(
        recorded=event["recorded"],
        id=event["id"],
        type=event["type"]["code"],
        subtype=" ".join(s["code"] for s in event.get("subtype", [])),
        action=event["action"],
        outcome=event["outcome"],
        outcome_description=event.get("outcomeDesc", ""),
        purpose=" ".join(c.get("code", "") for p in event.get("purposeOfEvent", []) for c in p.get("coding", [])),
    )
    for a in event.get("agent", []):
        code = a.get("type", {}).get("coding", [{}])[0].get("code")
        who = a.get("who", {})
        ident = who.get("identifier", {}).get("value", "")
        if code == "110150":
            row["client"] = ident or who.get("display", "")
            row["network_address"] = a.get("network", {}).get("address", "")
        elif code == "PROV":
            row["organisation"] = ident
        if a.get("requestor") and not row["user"]:
            row["user"], row["user_name"] = ident, who.get("display", "")
            row["user_role"] = " ".join(c.get("code", "") for x in a.get("role", []) for c in x.get("coding", []))
    objects, correlation = [], []
    for e in event.get("entity", []):
        role = e.get("role", {}).get("code")
        what = e.get("what", {})
        if role == "1":
            row["patient"] = what.get("reference", "")
            row["bsn"] = what.get("identifier", {}).get("value", "")
        elif role == "4":
            objects.append(what.get("reference", ""))
        elif role == "24":
            row["query"] = base64.b64decode(e.get("query", "")).decode("utf-8", "replace")
        elif role == "13":
            row["consent"] = what.get("reference", "")
            details = {d["type"]: d.get("valueString", "") for d in e.get("detail", [])}
            row["decision"], row["rule"] = details.get("decision", ""), details.get("rule", "")
            row["break_the_glass"] = details.get("break-the-glass", "")
        elif e.get("type", {}).get("code") == "XrequestId":
            ident = what.get("identifier", {})
            correlation.append(f"{ident.get('type', {}).get('text', '')}={ident.get('value', '')}")
    row["data_objects"] = " ".join(objects)
    row["correlation_ids"] = " ".join(correlation)
    return row


def render_export(result: Result, fmt: str) -> Response:
    entries = (result.resource or {}).get("entry", [])
    contents = [orjson.dumps(e["resource"]) for e in entries]
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, lineterminator="\n")
        writer.writeheader()
        for raw in contents:
            writer.writerow(csv_row(orjson.loads(raw)))
        return Response(out.getvalue(), media_type="text/csv; charset=utf-8")
    body = b"".join(raw + b"\n" for raw in contents)
    return Response(body, media_type="application/fhir+ndjson")


_FORMATS = {
    "ndjson": "ndjson",
    "application/fhir+ndjson": "ndjson",
    "application/ndjson": "ndjson",
    "csv": "csv",
    "text/csv": "csv",
}


def audit_routes(services: Any) -> list[Route]:
    """GET /fhir/AuditEvent/$export-audit: the operation through the pipeline, rendered as NDJSON or CSV."""
    from hub.api.routes import build_interaction

    async def export(request: Request) -> Response:
        shape = Shape(JSON, False, None, None)
        try:
            fmt = _FORMATS.get(request.query_params.get("_outputFormat", "ndjson"))
            if fmt is None:
                raise invalid("_outputFormat must be ndjson or csv", "_outputFormat")
            interaction = await build_interaction(request, services)
            result = await run_in_threadpool(services.pipeline.run, interaction)
            return render_export(result, fmt)
        except FhirError as err:
            return error_response(err, shape)

    return [Route(f"/fhir/AuditEvent/{EXPORT}", export, methods=["GET"])]


_SP = "http://hl7.org/fhir/SearchParameter/"
SEARCH_PARAMS = [
    ("_id", "token", _SP + "Resource-id"),
    ("patient", "reference", _SP + "clinical-patient"),
    ("agent", "reference", _SP + "AuditEvent-agent"),
    ("altid", "token", _SP + "AuditEvent-altid"),
    ("entity", "reference", _SP + "AuditEvent-entity"),
    ("date", "date", _SP + "AuditEvent-date"),
    ("outcome", "token", _SP + "AuditEvent-outcome"),
    ("type", "token", _SP + "AuditEvent-type"),
    ("subtype", "token", _SP + "AuditEvent-subtype"),
    ("action", "token", _SP + "AuditEvent-action"),
    ("organization", "token", "urn:hub:searchparameter:AuditEvent-organization"),
]


def capability(entry: dict[str, Any]) -> dict[str, Any]:
    """AuditEvent in the CapabilityStatement: read and search only, for auditors."""
    ops = [op for op in entry.get("operation", []) if op["name"] == EXPORT.lstrip("$")]
    out: dict[str, Any] = {
        "type": "AuditEvent",
        "documentation": "The hub's NEN 7513 audit trail, read-only, for registered auditor clients. "
        "Export: $export-audit with the search parameters and _outputFormat=ndjson|csv.",
        "interaction": [{"code": c} for c in ("read", "vread", "search-type")],
        "versioning": "no-version",
        "readHistory": False,
        "updateCreate": False,
        "searchParam": [{"name": n, "type": t, "definition": d} for n, t, d in SEARCH_PARAMS],
    }
    if ops:
        out["operation"] = ops
    return out


dispatch.TYPE_EXECUTORS["AuditEvent"] = execute
capabilities.OVERRIDES["AuditEvent"] = capability
