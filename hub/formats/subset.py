"""`_summary` and `_elements`: return part of a resource, tagged SUBSETTED (R4 search.html#summary)."""

from __future__ import annotations

from typing import Any

from hub.fhirmodel.structure import TypeInfo, structure
from hub.formats.outcome import FhirError

SUBSETTED = {
    "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
    "code": "SUBSETTED",
    "display": "Resource encoded in summary mode",
}
SUMMARY_MODES = ("true", "false", "text", "data", "count")


def parse_summary(value: str | None) -> str | None:
    if value is None:
        return None
    if value not in SUMMARY_MODES:
        raise FhirError(400, "invalid", f"_summary={value} is not one of {', '.join(SUMMARY_MODES)}", "_summary")
    return value


def parse_elements(value: str | None) -> list[str] | None:
    if value is None:
        return None
    names = [n.strip() for n in value.split(",") if n.strip()]
    return names or None


def _tagged(out: dict[str, Any]) -> dict[str, Any]:
    meta = dict(out.get("meta") or {})
    tags = [t for t in meta.get("tag", []) if t.get("code") != "SUBSETTED"]
    meta["tag"] = [*tags, SUBSETTED]
    out["meta"] = meta
    return out


def _summary_value(info: TypeInfo, value: Any) -> Any:
    """Within backbone elements keep only summary children; data types are kept whole."""
    if info.kind != "backbone":
        return value
    if isinstance(value, list):
        return [_summary_value(info, v) for v in value]
    if not isinstance(value, dict):
        return value
    return _keep(info, value, lambda el: el.summary or el.min > 0)


def _keep(info: TypeInfo, res: dict[str, Any], wanted: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in res.items():
        name = key[1:] if key.startswith("_") else key
        el = info.elements.get(name)
        if key in ("resourceType", "id") or (el is not None and wanted(el)):
            if el is not None and not key.startswith("_"):
                child = structure().get(el.type)
                out[key] = _summary_value(child, value) if child is not None else value
            else:
                out[key] = value
    return out


def summarize(res: dict[str, Any], mode: str | None) -> dict[str, Any]:
    """Apply `_summary` (true | text | data | false) to one resource."""
    if mode in (None, "false", "count"):
        return res
    info = structure().get(res.get("resourceType", ""))
    if info is None:
        return res
    if mode == "data":
        return _tagged({k: v for k, v in res.items() if k != "text"})
    if mode == "text":
        out = _keep(info, res, lambda el: el.name in ("text", "meta") or el.min > 0)
        return _tagged(out)
    out = _keep(info, res, lambda el: el.summary or el.min > 0)
    return _tagged(out)


def select_elements(res: dict[str, Any], names: list[str] | None) -> dict[str, Any]:
    """Apply `_elements`: the listed top-level elements plus id, meta and mandatory elements."""
    if not names:
        return res
    info = structure().get(res.get("resourceType", ""))
    if info is None:
        return res
    wanted = set(names)
    out = _keep(info, res, lambda el: el.base_name in wanted or el.name in wanted or el.min > 0 or el.name == "meta")
    return _tagged(out)
