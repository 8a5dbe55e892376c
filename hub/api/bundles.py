"""Batch and transaction bundles (R4 http.html#transaction).

A transaction is all or nothing, processed in the spec's order: identities first (new ids for POST,
conditional create / update / delete resolved by search), then every reference inside the entries
rewritten (urn:uuid fullUrls, conditional references such as `Patient?identifier=...`, absolute URLs
on this server), then all writes applied in bulk in the one database transaction, then the GET
entries. Any failure raises and the pipeline's transaction rolls everything back.

A batch runs each entry on its own (inside a savepoint), so one failing entry does not stop the rest.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from sqlalchemy.exc import IntegrityError

from hub.api.headers import parse_etag
from hub.api.interactions import check_id, match, validated
from hub.api.paging import full_url
from hub.api.references import References
from hub.fhirmodel import patch as patching
from hub.fhirmodel.structure import structure
from hub.formats import jsonfmt
from hub.formats.outcome import FhirError, invalid, not_found
from hub.pipeline import (
    CREATE,
    DELETE,
    HISTORY_INSTANCE,
    HISTORY_SYSTEM,
    HISTORY_TYPE,
    OPERATION,
    PATCH,
    READ,
    SEARCH_COMPARTMENT,
    SEARCH_SYSTEM,
    SEARCH_TYPE,
    UPDATE,
    VREAD,
    Context,
    Interaction,
    Result,
)
from hub.store.repository import Stored, Write, WriteResult, format_instant, new_id

_ORDER = {"DELETE": 0, "POST": 1, "PUT": 2, "PATCH": 2, "GET": 3, "HEAD": 3}


def _status(code: int) -> str:
    """ "201 Created": Bundle.entry.response.status carries the code and its reason phrase."""
    try:
        return f"{code} {HTTPStatus(code).phrase}"
    except ValueError:
        return str(code)


def _error_entry(err: FhirError) -> dict[str, Any]:
    return {"response": {"status": _status(err.status), "outcome": err.outcome()}}


@dataclass
class Entry:
    """One bundle entry as understood before anything is written."""

    index: int
    method: str
    url: str
    full_url: str | None
    resource: dict[str, Any] | None
    request: dict[str, Any]
    res_type: str | None = None
    res_id: str | None = None
    query: list[tuple[str, str]] = field(default_factory=list)
    existing: Stored | None = None  # a conditional create that matched
    result: WriteResult | None = None
    response: dict[str, Any] | None = None
    ctx: Context | None = None


def _entries(bundle: Any, kind: str) -> list[dict[str, Any]]:
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise invalid(f"A {kind} must be a Bundle")
    if bundle.get("type") != kind:
        raise invalid(f"Bundle.type must be {kind!r}, not {bundle.get('type')!r}", "Bundle.type")
    entries = bundle.get("entry", [])
    if not isinstance(entries, list):
        raise invalid("Bundle.entry must be a list", "Bundle.entry")
    return entries


def _parse_entry(index: int, raw: Any) -> Entry:
    where = f"Bundle.entry[{index}]"
    if not isinstance(raw, dict):
        raise invalid("A bundle entry must be an object", where)
    request = raw.get("request")
    if not isinstance(request, dict) or not isinstance(request.get("method"), str) or not request.get("url"):
        raise invalid("Each entry needs request.method and request.url", f"{where}.request")
    method = request["method"].upper()
    if method not in _ORDER:
        raise invalid(f"request.method {method!r} is not supported", f"{where}.request.method")
    resource = raw.get("resource")
    if resource is not None and (not isinstance(resource, dict) or "resourceType" not in resource):
        raise invalid("entry.resource must be a FHIR resource", f"{where}.resource")
    if method in ("POST", "PUT", "PATCH") and resource is None:
        raise invalid(f"A {method} entry needs a resource", f"{where}.resource")
    entry = Entry(index, method, str(request["url"]), raw.get("fullUrl"), resource, request)
    _parse_url(entry)
    return entry


def _parse_url(entry: Entry) -> None:
    """Split request.url into type, id and query; ids must be valid, types known."""
    url = entry.url
    parts = urlsplit(url)
    path = parts.path.strip("/")
    if parts.scheme or parts.netloc:  # an absolute URL on this server: keep the path after /fhir/
        path = path.split("/fhir/", 1)[-1] if "/fhir/" in path else path
    segments = [s for s in path.split("/") if s]
    entry.query = parse_qsl(parts.query, keep_blank_values=True)
    if entry.method in ("GET", "HEAD"):
        return  # reads are classified by the router itself
    if not segments:
        raise invalid(f"request.url {url!r} does not name a resource type", f"Bundle.entry[{entry.index}].request.url")
    rt = segments[0]
    if not structure().is_resource_type(rt):
        raise not_found(f"Unknown resource type {rt!r} in request.url {url!r}")
    entry.res_type = rt
    if len(segments) > 1:
        if entry.method == "POST":
            raise invalid(f"POST goes to the type ({rt}), not {url!r}", f"Bundle.entry[{entry.index}].request.url")
        entry.res_id = check_id(segments[1])
    elif entry.method in ("PUT", "PATCH", "DELETE") and not entry.query:
        raise invalid(f"{entry.method} needs [type]/[id] or search criteria: {url!r}")


def _sub_interaction(ctx: Context, entry: Entry, kind: str) -> Interaction:
    parent = ctx.interaction
    return Interaction(
        kind,
        res_type=entry.res_type,
        res_id=entry.res_id,
        params=entry.query,
        body=entry.resource,
        if_match=entry.request.get("ifMatch"),
        if_none_match=entry.request.get("ifNoneMatch"),
        if_none_exist=entry.request.get("ifNoneExist"),
        principal=parent.principal,
        base_url=parent.base_url,
        request_headers=parent.request_headers,
        client_address=parent.client_address,
        prefer_return=parent.prefer_return,
        nested=True,
    )


_KIND = {"POST": CREATE, "PUT": UPDATE, "PATCH": PATCH, "DELETE": DELETE}


# -- transaction ----------------------------------------------------------------------------------


def transaction(ctx: Context) -> Result:
    raw_entries = _entries(ctx.interaction.body, "transaction")
    entries = [_parse_entry(i, e) for i, e in enumerate(raw_entries)]
    try:
        responses = _run_transaction(ctx, entries)
    except FhirError as err:
        raise _at_entry(err, ctx, entries) from None
    return Result(200, resource=_response_bundle("transaction-response", responses))


def _at_entry(err: FhirError, ctx: Context, entries: list[Entry]) -> FhirError:
    """Name the failing entry in the error, keeping the entry's own status."""
    current = ctx.facts.get("bundle-entry")
    if current is None:
        return err
    e = entries[current]
    prefix = f"Bundle.entry[{current}] ({e.method} {e.url})"
    for issue in err.issues:
        issue.diagnostics = f"{prefix}: {issue.diagnostics}"
        issue.expression = [f"Bundle.entry[{current}]" + (f".resource.{x}" if x else "") for x in issue.expression] or [
            f"Bundle.entry[{current}]"
        ]
    return err


def _run_transaction(ctx: Context, entries: list[Entry]) -> list[dict[str, Any]]:
    pipeline = ctx.services.pipeline
    writes = sorted((e for e in entries if e.method not in ("GET", "HEAD")), key=lambda e: _ORDER[e.method])
    # 1. identities: who is each entry about, and what do fullUrls stand for?
    aliases: dict[str, str] = {}
    targets: set[tuple[str, str]] = set()
    for e in writes:
        ctx.facts["bundle-entry"] = e.index
        e.ctx = pipeline.check(_sub_interaction(ctx, e, _KIND[e.method]), ctx)
        _resolve_identity(ctx, e)
        if e.res_id is not None and e.existing is None:
            key = (e.res_type or "", e.res_id)
            if key in targets:
                raise invalid(f"{key[0]}/{key[1]} is the target of more than one entry in this transaction")
            targets.add(key)
        if e.full_url and e.res_id:
            aliases[e.full_url] = f"{e.res_type}/{e.res_id}"
    # 2. references inside the resources
    resolver = References(ctx, aliases)
    for e in writes:
        if e.resource is not None and e.method in ("POST", "PUT"):
            ctx.facts["bundle-entry"] = e.index
            e.resource = resolver.rewrite(e.resource)
    # 3. build the writes (patches read the current version first) and apply them in bulk
    batch: list[tuple[Entry, Write]] = []
    for e in writes:
        ctx.facts["bundle-entry"] = e.index
        w = _write_for(ctx, e)
        if w is not None:
            batch.append((e, w))
    ctx.facts["bundle-entry"] = None
    results = ctx.repo.apply([w for _, w in batch])
    for (e, _), res in zip(batch, results, strict=True):
        e.result = res
    for e in writes:
        e.response = _write_response(ctx, e)
        assert e.ctx is not None
        pipeline.finish(e.ctx, _entry_result(e))
    # 4. reads, which see the writes above
    for e in entries:
        if e.method in ("GET", "HEAD"):
            ctx.facts["bundle-entry"] = e.index
            e.response = _read_entry(ctx, e)
    ctx.facts.pop("bundle-entry", None)
    return [e.response or {} for e in entries]


def _resolve_identity(ctx: Context, e: Entry) -> None:
    assert e.res_type is not None
    if e.method == "POST":
        cond = e.request.get("ifNoneExist")
        if cond:
            found = match(ctx, e.res_type, cond)
            if len(found) > 1:
                raise FhirError(412, "duplicate", f"ifNoneExist matched {len(found)} resources; at most one may match")
            if found:
                e.existing = found[0]
                e.res_id = found[0].res_id
                return
        e.res_id = new_id()
        return
    if e.res_id is None:  # conditional update / patch / delete
        found = match(ctx, e.res_type, e.query)
        if len(found) > 1:
            raise FhirError(412, "multiple-matches", f"The criteria match {len(found)} {e.res_type} resources")
        if found:
            e.res_id = found[0].res_id
        elif e.method == "PUT":
            body_id = (e.resource or {}).get("id")
            e.res_id = check_id(body_id) if body_id else new_id()
        elif e.method == "PATCH":
            raise not_found(f"No {e.res_type} matches {e.url}")


def _write_for(ctx: Context, e: Entry) -> Write | None:
    assert e.res_type is not None
    if e.existing is not None:
        return None  # conditional create matched: nothing to write
    if_match = parse_etag(e.request.get("ifMatch"))
    if e.method == "DELETE":
        if e.res_id is None:
            return None  # conditional delete without a match
        return Write(e.res_type, e.res_id, None, "DELETE", if_match=if_match)
    assert e.res_id is not None
    if e.method == "PATCH":
        current = ctx.repo.read(e.res_type, e.res_id)
        patched = _apply_patch(current.resource(), e.resource or {})
        body = validated(ctx, patched, e.res_type)
        return Write(e.res_type, e.res_id, body, "PATCH", if_match=if_match or current.version_id)
    body = dict(e.resource or {})
    if e.method == "PUT" and e.res_id is not None and body.get("id") not in (None, e.res_id):
        raise invalid(f"The resource id {body.get('id')!r} differs from the id in request.url ({e.res_id})", "id")
    body = validated(ctx, body, e.res_type)
    if e.method == "POST":
        return Write(e.res_type, e.res_id, body, "POST", create_only=True)
    return Write(e.res_type, e.res_id, body, "PUT", if_match=if_match)


def _patch_document(resource: dict[str, Any]) -> tuple[Any, str]:
    """In a bundle a patch travels as a Binary (JSON Patch) or a Parameters (FHIRPath Patch)."""
    if resource.get("resourceType") == "Parameters":
        return resource, "fhirpath-patch"
    if resource.get("resourceType") == "Binary":
        try:
            return jsonfmt.loads(base64.b64decode(resource.get("data", ""), validate=True)), "json-patch"
        except (binascii.Error, ValueError):
            raise invalid("The Binary of a JSON Patch entry must hold base64 data") from None
    raise invalid("A PATCH entry's resource must be a Parameters (FHIRPath Patch) or a Binary (JSON Patch)")


def _apply_patch(current: dict[str, Any], patch_resource: dict[str, Any]) -> dict[str, Any]:
    doc, kind = _patch_document(patch_resource)
    if kind == "json-patch":
        return patching.apply_json_patch(current, doc)
    return patching.apply_fhirpath_patch(current, doc)


def _write_response(ctx: Context, e: Entry) -> dict[str, Any]:
    base = ctx.interaction.base_url
    want_resource = ctx.interaction.prefer_return == "representation"
    if e.existing is not None:
        out: dict[str, Any] = {"response": _response(200, e.existing)}
        if want_resource:
            out["resource"] = e.existing
        out["fullUrl"] = full_url(base, e.existing)
        return out
    res = e.result
    if res is None or res.stored is None or res.outcome == "absent":
        return {"response": {"status": "204 No Content"}}
    stored = res.stored
    if res.outcome == "deleted":
        return {"response": {"status": "204 No Content", "etag": stored.etag}}
    status = 201 if res.outcome == "created" else 200
    out = {"fullUrl": full_url(base, stored), "response": _response(status, stored)}
    if want_resource:
        out = {"fullUrl": out["fullUrl"], "resource": stored, "response": out["response"]}
    return out


def _entry_result(e: Entry) -> Result:
    if e.existing is not None:
        return Result(200, stored=e.existing)
    res = e.result
    if res is None or res.stored is None:
        return Result(204)
    return Result(201 if res.outcome == "created" else 200 if res.outcome != "deleted" else 204, stored=res.stored)


def _response(status: int, stored: Stored) -> dict[str, Any]:
    out: dict[str, Any] = {"status": _status(status)}
    if not stored.deleted:
        out["location"] = f"{stored.res_type}/{stored.res_id}/_history/{stored.version_id}"
    out["etag"] = stored.etag
    out["lastModified"] = format_instant(stored.last_updated)
    return out


def _read_entry(ctx: Context, e: Entry) -> dict[str, Any]:
    from hub.api.routes import classify  # the router understands read URLs; avoid an import cycle

    parts = urlsplit(e.url)
    path = parts.path.split("/fhir/", 1)[-1] if parts.scheme else parts.path
    sub = classify("GET", [s for s in path.split("/") if s])
    if sub.kind not in (
        READ, VREAD, SEARCH_TYPE, SEARCH_SYSTEM, SEARCH_COMPARTMENT,
        HISTORY_INSTANCE, HISTORY_TYPE, HISTORY_SYSTEM, OPERATION,
    ):  # fmt: skip
        raise invalid(f"GET {e.url} is not a read")
    sub.params = e.query
    sub.if_none_match = e.request.get("ifNoneMatch")
    sub.if_modified_since = e.request.get("ifModifiedSince")
    sub.principal = ctx.interaction.principal
    sub.base_url = ctx.interaction.base_url
    sub.request_headers = ctx.interaction.request_headers
    sub.client_address = ctx.interaction.client_address
    result = ctx.services.pipeline.run_nested(sub, ctx)
    return _result_entry(ctx, result)


def _result_entry(ctx: Context, result: Result) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if result.stored is not None:
        out["fullUrl"] = full_url(ctx.interaction.base_url, result.stored)
        out["resource"] = result.stored
        out["response"] = _response(result.status, result.stored)
    else:
        if result.resource is not None:
            out["resource"] = result.resource
        out["response"] = {"status": _status(result.status)}
        if "ETag" in result.headers:
            out["response"]["etag"] = result.headers["ETag"]
    return out


def _response_bundle(kind: str, responses: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "id": new_id(),
        "type": kind,
        "entry": responses,
    }


# -- batch ----------------------------------------------------------------------------------------


def batch(ctx: Context) -> Result:
    raw_entries = _entries(ctx.interaction.body, "batch")
    responses: list[dict[str, Any]] = []
    pipeline = ctx.services.pipeline
    for index, raw in enumerate(raw_entries):
        savepoint = ctx.conn.begin_nested()
        try:
            entry = _parse_entry(index, raw)
            if entry.method in ("GET", "HEAD"):
                response = _read_entry(ctx, entry)
            else:
                sub = _sub_interaction(ctx, entry, _KIND[entry.method])
                if entry.resource is not None and entry.method in ("POST", "PUT"):
                    sub.body = References(ctx, {}).rewrite(entry.resource)
                if entry.method == "PATCH":
                    sub.body, sub.body_kind = _patch_document(entry.resource or {})
                response = _result_entry(ctx, pipeline.run_nested(sub, ctx))
                if "resource" in response and ctx.interaction.prefer_return != "representation":
                    del response["resource"]
            savepoint.commit()
        except FhirError as err:
            savepoint.rollback()
            response = _error_entry(err)
        except IntegrityError:  # a concurrent writer won a race for this entry's resource
            savepoint.rollback()
            response = _error_entry(FhirError(409, "conflict", "A concurrent change to this resource won; retry"))
        responses.append(response)
    return Result(200, resource=_response_bundle("batch-response", responses))
