"""The FHIR interactions on single resources: read, vread, create, update, patch, delete (plain and
conditional), and history. Each takes a pipeline Context and returns a Result."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl

from hub.api.headers import parse_etag, parse_http_date
from hub.fhirmodel import patch as patching
from hub.formats.outcome import FhirError, Issue, invalid, not_found
from hub.pipeline import DELETED_ID, Context, Result
from hub.store.repository import Stored, Write, WriteResult, new_id

ID_RE = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")


def check_id(res_id: str) -> str:
    if not ID_RE.match(res_id):
        raise invalid(f"{res_id!r} is not a valid FHIR id ([A-Za-z0-9-.]{{1,64}})")
    return res_id


def location(ctx: Context, stored: Stored) -> str:
    return f"{ctx.interaction.base_url}/{stored.res_type}/{stored.res_id}/_history/{stored.version_id}"


def stored_headers(stored: Stored) -> dict[str, str]:
    return {"ETag": stored.etag, "Last-Modified": stored.last_modified}


def visible_or_404(ctx: Context, stored: Stored) -> Stored:
    """A resource the caller may not see looks like one that does not exist (no existence leak)."""
    if not ctx.shows(stored):
        raise not_found(f"{stored.res_type}/{stored.res_id} is not known")
    return stored


# -- reads ----------------------------------------------------------------------------------------


def read(ctx: Context) -> Result:
    i = ctx.interaction
    assert i.res_type and i.res_id
    stored = visible_or_404(ctx, ctx.repo.read(i.res_type, check_id(i.res_id)))
    headers = stored_headers(stored)
    if i.if_none_match is not None and parse_etag(i.if_none_match, "If-None-Match") == stored.version_id:
        return Result(304, headers=headers)
    since = parse_http_date(i.if_modified_since)
    if since is not None and stored.last_updated.replace(microsecond=0) <= since:
        return Result(304, headers=headers)
    return Result(200, stored=stored, headers=headers)


def vread(ctx: Context) -> Result:
    i = ctx.interaction
    assert i.res_type and i.res_id and i.version_id
    if not i.version_id.isdigit():
        raise not_found(f"{i.res_type}/{i.res_id} has no version {i.version_id!r}")
    stored = visible_or_404(ctx, ctx.repo.vread(i.res_type, check_id(i.res_id), int(i.version_id)))
    return Result(200, stored=stored, headers=stored_headers(stored))


# -- writes ---------------------------------------------------------------------------------------


def validated(ctx: Context, body: Any, res_type: str) -> dict[str, Any]:
    """The request body as a resource of the URL's type, structurally valid (400 otherwise)."""
    if not isinstance(body, dict):
        raise FhirError(400, "structure", "The request body must be a FHIR resource")
    if body.get("resourceType") != res_type:
        raise invalid(f"The body is a {body.get('resourceType')!r} but the URL is for {res_type}", "resourceType")
    issues = ctx.services.validate(body)
    if any(x.severity in ("error", "fatal") for x in issues):
        raise FhirError(400, "invalid", "", issues=issues)
    return body


def _write_result(ctx: Context, res: WriteResult, created_status: int = 201) -> Result:
    stored = res.stored
    assert stored is not None
    headers = stored_headers(stored)
    status = 200
    if res.outcome == "created":
        status = created_status
        headers["Location"] = location(ctx, stored)
    elif res.outcome == "updated":
        headers["Content-Location"] = location(ctx, stored)
    return Result(status, stored=stored, headers=headers, outcome=_outcome_for(res))


def _outcome_for(res: WriteResult) -> dict[str, Any]:
    s = res.stored
    ref = f"{res.write.res_type}/{res.write.res_id}"
    text = {
        "created": f"Created {ref} (version {s.version_id if s else '?'})",
        "updated": f"Updated {ref} to version {s.version_id if s else '?'}",
        "unchanged": f"{ref} is unchanged; no new version was made",
        "deleted": f"Deleted {ref}",
        "absent": f"{ref} did not exist or was already deleted; nothing to delete",
    }[res.outcome]
    return {"resourceType": "OperationOutcome", "issue": [Issue("information", "informational", text).to_json()]}


def match(ctx: Context, res_type: str, query: str | list[tuple[str, str]]) -> list[Stored]:
    """Resources of a type matching the criteria of a conditional interaction.

    Writers with the same criteria are serialised first, so two concurrent conditional creates
    cannot both see "no match" and both create."""
    params = parse_qsl(query.lstrip("?"), keep_blank_values=True) if isinstance(query, str) else query
    if not params:
        raise invalid("A conditional interaction needs search criteria")
    ctx.repo.lock([f"criteria:{res_type}?" + "&".join(f"{k}={v}" for k, v in sorted(params))])
    return list(ctx.services.search.match(ctx, res_type, params))


def create(ctx: Context) -> Result:
    i = ctx.interaction
    assert i.res_type
    body = validated(ctx, i.body, i.res_type)
    if i.if_none_exist:
        found = match(ctx, i.res_type, i.if_none_exist)
        if len(found) == 1:
            existing = found[0]
            return Result(200, stored=existing, headers=stored_headers(existing))
        if len(found) > 1:
            raise FhirError(
                412,
                "duplicate",
                f"If-None-Exist matched {len(found)} {i.res_type} resources; it must match at most one",
            )
    res = ctx.repo.apply([Write(i.res_type, new_id(), body, "POST", create_only=True)])[0]
    return _write_result(ctx, res)


def update(ctx: Context) -> Result:
    i = ctx.interaction
    assert i.res_type
    body = validated(ctx, i.body, i.res_type)
    if_match = parse_etag(i.if_match)
    if i.res_id is None:  # conditional update: PUT [type]?criteria
        found = match(ctx, i.res_type, i.params)
        if len(found) > 1:
            raise FhirError(412, "multiple-matches", f"The criteria match {len(found)} {i.res_type} resources")
        if found:
            res_id = found[0].res_id
            if body.get("id") not in (None, res_id):
                raise invalid(f"The criteria match {i.res_type}/{res_id} but the body has id {body['id']!r}", "id")
        else:
            res_id = check_id(body["id"]) if body.get("id") else new_id()
    else:
        res_id = check_id(i.res_id)
        if body.get("id") is None:
            raise invalid("The resource in an update must have an id", f"{i.res_type}.id")
        if body["id"] != res_id:
            raise invalid(f"The id in the body ({body['id']!r}) differs from the id in the URL ({res_id!r})", "id")
    if i.if_none_match == "*":  # create-only PUT
        ctx.repo.lock([f"{i.res_type}/{res_id}"])
        cur = ctx.repo.current(i.res_type, res_id)
        if cur is not None and not cur.deleted:
            raise FhirError(412, "duplicate", f"If-None-Match: * but {i.res_type}/{res_id} exists")
    res = ctx.repo.apply([Write(i.res_type, res_id, body, "PUT", if_match=if_match)])[0]
    return _write_result(ctx, res)


def patch(ctx: Context) -> Result:
    i = ctx.interaction
    assert i.res_type
    if i.res_id is None:
        found = match(ctx, i.res_type, i.params)
        if not found:
            raise not_found(f"No {i.res_type} matches the criteria")
        if len(found) > 1:
            raise FhirError(412, "multiple-matches", f"The criteria match {len(found)} {i.res_type} resources")
        res_id = found[0].res_id
    else:
        res_id = check_id(i.res_id)
    ctx.repo.lock([f"{i.res_type}/{res_id}"])  # read-modify-write: no other writer in between
    current = visible_or_404(ctx, ctx.repo.read(i.res_type, res_id))
    if_match = parse_etag(i.if_match)
    if if_match is not None and if_match != current.version_id:
        raise FhirError(
            412,
            "conflict",
            f"If-Match expected version {if_match} but {i.res_type}/{current.res_id} is at {current.version_id}",
        )
    if i.body_kind == "json-patch":
        patched = patching.apply_json_patch(current.resource(), i.body)
    elif i.body_kind == "fhirpath-patch":
        patched = patching.apply_fhirpath_patch(current.resource(), i.body)
    else:
        if not isinstance(i.body, dict) or i.body.get("resourceType") != "Parameters":
            raise invalid(
                "A FHIRPath Patch must be a Parameters resource; JSON Patch needs application/json-patch+json"
            )
        patched = patching.apply_fhirpath_patch(current.resource(), i.body)
    body = validated(ctx, patched, i.res_type)
    # Guard the version we patched (the lock above makes a mismatch impossible; this states the intent).
    res = ctx.repo.apply([Write(i.res_type, current.res_id, body, "PATCH", if_match=current.version_id)])[0]
    return _write_result(ctx, res)


def delete(ctx: Context) -> Result:
    i = ctx.interaction
    assert i.res_type
    if_match = parse_etag(i.if_match)
    if i.res_id is None:
        found = match(ctx, i.res_type, i.params)
        if len(found) > 1:
            raise FhirError(
                412, "multiple-matches", f"The criteria match {len(found)} {i.res_type} resources; delete one at a time"
            )
        if not found:
            return Result(204, outcome=_absent(i.res_type, "No resource matched the criteria"))
        res_id = found[0].res_id
        ctx.facts[DELETED_ID] = res_id  # what the criteria named, for the steps after this one
    else:
        res_id = check_id(i.res_id)
    res = ctx.repo.apply([Write(i.res_type, res_id, None, "DELETE", if_match=if_match)])[0]
    headers = {"ETag": f'W/"{res.stored.version_id}"'} if res.stored is not None and res.outcome == "deleted" else {}
    return Result(204, headers=headers, outcome=_outcome_for(res))


def _absent(res_type: str, text: str) -> dict[str, Any]:
    return {"resourceType": "OperationOutcome", "issue": [Issue("information", "not-found", text).to_json()]}
