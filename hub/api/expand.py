"""ValueSet/$expand (R4 valueset-operation-expand) over the ValueSets and CodeSystems stored in the hub.

Instance level (`ValueSet/x/$expand`) or type level with `url` (and `valueSetVersion`), or a ValueSet
given whole in a POSTed Parameters (`valueSet`). Supported parameters: `filter` (a case-insensitive
text match on code and display), `offset`, `count`. A value set that includes a whole code system
the hub cannot enumerate (SNOMED CT, LOINC ...) is a 422: membership of such sets works in search
(`:in`), listing them does not.
"""

from __future__ import annotations

import uuid
from typing import Any

from hub.api.operations import Operation, parameters_in, register
from hub.formats.outcome import FhirError, invalid, not_found
from hub.pipeline import Context, Result
from hub.store.repository import format_instant, utcnow
from hub.terminology.expansion import ExpansionError, expand

_OWN = ("url", "valueSetVersion", "filter", "offset", "count", "_format", "_pretty")


def _params(ctx: Context) -> dict[str, Any]:
    """GET query parameters and POSTed Parameters, as one dict (`valueSet` only from the body)."""
    out: dict[str, Any] = {k: v for k, v in ctx.interaction.params if k in _OWN}
    for p in parameters_in(ctx):
        name = p.get("name")
        if name == "valueSet" and isinstance(p.get("resource"), dict):
            out["valueSet"] = p["resource"]
        elif name in _OWN:
            value = next((v for k, v in p.items() if k.startswith("value")), None)
            if value is not None:
                out[name] = str(value)
    return out


def _number(params: dict[str, Any], name: str, default: int | None) -> int | None:
    raw = params.get(name)
    if raw is None:
        return default
    if not str(raw).isdigit():
        raise invalid(f"$expand: {name} must be a non-negative integer, not {raw!r}", name)
    return int(raw)


def expand_operation(ctx: Context) -> Result:
    i = ctx.interaction
    params = _params(ctx)
    session = ctx.services.search.terminology.session(ctx.conn, i.base_url)
    if i.res_id:
        stored = ctx.repo.read("ValueSet", i.res_id)  # 404 / 410 as for a read
        vs = stored.resource()
    elif isinstance(params.get("valueSet"), dict):
        vs = params["valueSet"]
    elif params.get("url"):
        ref = params["url"] + (f"|{params['valueSetVersion']}" if params.get("valueSetVersion") else "")
        found = session.value_set(ref)
        if found is None:
            raise not_found(f"$expand: unknown ValueSet {ref}")
        vs = found
    else:
        raise invalid("$expand at type level needs url (or a valueSet in a Parameters body)", "url")
    if vs.get("url"):  # the cached expansion (its imports resolve through the store)
        ref = vs["url"] + (f"|{vs['version']}" if vs.get("version") else "")
        exp = session.expansion(ref, "url") if session.value_set(ref) == vs else None
    else:
        exp = None
    if exp is None:
        try:
            exp = expand(vs, session.code_system, lambda u: session.expansion(u, "valueSet"))
        except ExpansionError as exc:
            raise FhirError(400, "not-supported", f"$expand: {exc}") from None
    if not exp.enumerable:
        systems = ", ".join(sorted(exp.open))
        raise FhirError(
            422, "too-costly", f"$expand: the value set includes all of {systems}, which the hub cannot list"
        )
    contains = exp.contains_list()
    text = (params.get("filter") or "").casefold()
    if text:
        contains = [c for c in contains if text in c["code"].casefold() or text in (c.get("display") or "").casefold()]
    offset = _number(params, "offset", 0) or 0
    count = _number(params, "count", None)
    page = contains[offset : offset + count if count is not None else None]
    expansion: dict[str, Any] = {
        "identifier": f"urn:uuid:{uuid.uuid4()}",
        "timestamp": format_instant(utcnow()),
        "total": len(contains),
        "offset": offset,
        "parameter": [{"name": k, "valueString": str(v)} for k, v in params.items() if k in ("filter", "count")],
        "contains": page,
    }
    if not expansion["parameter"]:
        del expansion["parameter"]
    if not page:
        del expansion["contains"]
    out = {k: v for k, v in vs.items() if k not in ("compose", "expansion", "meta", "text")}
    out["expansion"] = expansion
    return Result(200, resource=out)


register(
    Operation(
        "expand",
        expand_operation,
        type_level=True,
        instance=True,
        resource_types=("ValueSet",),
        definition="http://hl7.org/fhir/OperationDefinition/ValueSet-expand",
    )
)
