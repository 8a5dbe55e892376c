"""Turning a Result into an HTTP response: format (JSON/XML), _pretty, _summary, _elements, Prefer.

Stored resources are served as the JSON bytes kept in the database whenever nothing asks for
another shape; everything else is parsed and re-serialised.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

from hub.formats import jsonfmt, xml
from hub.formats.negotiate import JSON, media_type
from hub.formats.outcome import FhirError
from hub.formats.subset import select_elements, summarize
from hub.pipeline import Result
from hub.store.repository import Stored


class Shape:
    """How the client wants resources: format and subsetting, from the query string."""

    __slots__ = ("elements", "fmt", "pretty", "summary")

    def __init__(self, fmt: str, pretty: bool, summary: str | None, elements: list[str] | None) -> None:
        self.fmt = fmt
        self.pretty = pretty
        self.summary = summary
        self.elements = elements

    @property
    def raw_ok(self) -> bool:
        """Stored JSON can be sent byte for byte."""
        return self.fmt == JSON and not self.pretty and self.summary in (None, "false") and not self.elements

    def subset(self, res: dict[str, Any]) -> dict[str, Any]:
        if self.summary not in (None, "false"):
            res = summarize(res, self.summary)
        if self.elements:
            res = select_elements(res, self.elements)
        return res


def _embed(value: Any, shape: Shape, subset: bool) -> Any:
    """Replace Stored rows inside a built resource (bundle entries) with their content."""
    if isinstance(value, Stored):
        if shape.raw_ok or (shape.fmt == JSON and not subset and not shape.pretty):
            return orjson.Fragment(value.content or b"{}")
        res = value.resource()
        return shape.subset(res) if subset else res
    if isinstance(value, dict):
        return {k: _embed(v, shape, subset and k != "outcome") for k, v in value.items()}
    if isinstance(value, list):
        return [_embed(v, shape, subset) for v in value]
    return value


def serialise(res: dict[str, Any], shape: Shape) -> bytes:
    if shape.fmt == JSON:
        return jsonfmt.dumps(res, pretty=shape.pretty)
    return xml.to_xml(res, pretty=shape.pretty)


def _materialise(value: Any) -> Any:
    """XML needs plain dicts: turn embedded Fragments back into parsed JSON."""
    if isinstance(value, orjson.Fragment):
        return orjson.loads(value.contents)
    if isinstance(value, dict):
        return {k: _materialise(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_materialise(v) for v in value]
    return value


def body_of(result: Result, shape: Shape, *, subset_entries: bool = True) -> bytes | None:
    if result.stored is not None:
        stored = result.stored
        if stored.content is None:
            return None
        if shape.raw_ok:
            return stored.content
        return serialise(shape.subset(stored.resource()), shape)
    if result.resource is not None:
        res = _embed(result.resource, shape, subset_entries)
        if shape.fmt != JSON:
            res = _materialise(res)
        return serialise(res, shape)
    return None


def respond(result: Result, shape: Shape, prefer_return: str | None) -> Response:
    headers = dict(result.headers)
    if result.status == 304:
        return Response(status_code=304, headers=headers)
    if prefer_return == "minimal" and result.stored is not None:
        return Response(status_code=result.status, headers=headers)
    if prefer_return == "OperationOutcome" and result.outcome is not None:
        status = 200 if result.status == 204 else result.status
        return Response(serialise(result.outcome, shape), status_code=status, headers=headers, media_type=_media(shape))
    if result.status == 204:
        return Response(status_code=204, headers=headers)
    body = body_of(result, shape)
    if body is None:
        return Response(status_code=result.status, headers=headers)
    return Response(body, status_code=result.status, headers=headers, media_type=_media(shape))


def error_response(err: FhirError, shape: Shape) -> Response:
    return Response(
        serialise(err.outcome(), shape), status_code=err.status, headers=err.headers, media_type=_media(shape)
    )


def _media(shape: Shape) -> str:
    return media_type(shape.fmt) + "; charset=utf-8"
