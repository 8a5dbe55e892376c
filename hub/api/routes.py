"""The FHIR REST surface at /fhir: turns HTTP requests into Interactions and Results into responses.

FHIR's URL grammar ([type], [type]/[id], _history, _search, $operation, compartments) does not fit
framework path templates well, so one route takes /fhir/... and `classify` reads the path itself.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import parse_qsl

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from hub.api.headers import correlation_headers, parse_prefer
from hub.api.render import Shape, error_response, respond
from hub.auth.tokens import unauthorised
from hub.fhirmodel.structure import structure
from hub.formats import jsonfmt, xml
from hub.formats.negotiate import JSON, body_format, response_format
from hub.formats.outcome import FhirError, not_found
from hub.formats.subset import parse_elements, parse_summary
from hub.pipeline import (
    BATCH,
    CAPABILITIES,
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
    TRANSACTION,
    UPDATE,
    VREAD,
    Interaction,
    Principal,
)

log = logging.getLogger("hub.api")

METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"]
_BODY_METHODS = {"POST", "PUT", "PATCH"}


def _resource_type(name: str) -> str:
    if not structure().is_resource_type(name):
        raise not_found(f"Unknown resource type {name!r}")
    return name


def _method_not_allowed(method: str, path: str) -> FhirError:
    return FhirError(405, "not-supported", f"{method} is not supported on {path or '/'}")


def classify(method: str, segments: list[str]) -> Interaction:
    """The interaction a method and path (below /fhir) denote. Bodies and headers come later."""
    path = "/".join(segments)
    n = len(segments)
    get = method in ("GET", "HEAD")
    if n == 0:
        if method == "POST":
            return Interaction(BATCH)  # batch or transaction: decided by Bundle.type
        if get:
            return Interaction(SEARCH_SYSTEM)
        raise _method_not_allowed(method, path)
    first = segments[0]
    if n == 1:
        if first == "metadata" and get:
            return Interaction(CAPABILITIES)
        if first == "_history" and get:
            return Interaction(HISTORY_SYSTEM)
        if first == "_search" and method == "POST":
            return Interaction(SEARCH_SYSTEM)
        if first.startswith("$"):
            return Interaction(OPERATION, operation=first)
        rt = _resource_type(first)
        kind = {"GET": SEARCH_TYPE, "HEAD": SEARCH_TYPE, "POST": CREATE, "PUT": UPDATE, "PATCH": PATCH}.get(method)
        if method == "DELETE":
            kind = DELETE
        if kind is None:
            raise _method_not_allowed(method, path)
        return Interaction(kind, res_type=rt)
    rt = _resource_type(first)
    second = segments[1]
    if n == 2:
        if second == "_search" and method == "POST":
            return Interaction(SEARCH_TYPE, res_type=rt)
        if second == "_history" and get:
            return Interaction(HISTORY_TYPE, res_type=rt)
        if second.startswith("$"):
            return Interaction(OPERATION, res_type=rt, operation=second)
        kind = {"GET": READ, "HEAD": READ, "PUT": UPDATE, "PATCH": PATCH, "DELETE": DELETE}.get(method)
        if kind is None:
            raise _method_not_allowed(method, path)
        return Interaction(kind, res_type=rt, res_id=second)
    third = segments[2]
    if n == 3:
        if third == "_history" and get:
            return Interaction(HISTORY_INSTANCE, res_type=rt, res_id=second)
        if third.startswith("$"):
            return Interaction(OPERATION, res_type=rt, res_id=second, operation=third)
        if get:
            return Interaction(SEARCH_COMPARTMENT, res_type=rt, res_id=second, compartment_type=_resource_type(third))
        raise _method_not_allowed(method, path)
    if n == 4 and third == "_history" and get:
        return Interaction(VREAD, res_type=rt, res_id=second, version_id=segments[3])
    raise not_found(f"No FHIR endpoint at /{path}")


def parse_body(fmt: str, raw: bytes) -> Any:
    if fmt == "json-patch":
        return jsonfmt.loads(raw)
    if fmt == "xml":
        return xml.parse_xml(raw)
    return jsonfmt.parse_resource(raw)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing (413) anything over the limit before reading it all."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise FhirError(413, "too-costly", f"The body ({declared} bytes) is over the limit of {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise FhirError(413, "too-costly", f"The body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def base_url(request: Request, configured: str | None) -> str:
    if configured:
        return configured.rstrip("/")
    return str(request.base_url).rstrip("/") + "/fhir"


async def build_interaction(request: Request, services: Any) -> Interaction:
    segments = [s for s in request.url.path.split("/")[2:] if s]  # below /fhir
    method = request.method
    interaction = classify(method, segments)
    if interaction.kind != CAPABILITIES:  # no token, no body parsing: refuse early
        interaction.principal = authenticate(request, services, base_url(request, services.settings.base_url))
    params = list(request.query_params.multi_items())
    headers = request.headers
    if method in _BODY_METHODS:
        raw = await read_body(request, services.settings.max_body_bytes)
        ctype = headers.get("content-type", "")
        if method == "POST" and ctype.startswith("application/x-www-form-urlencoded"):
            # POST [base]/[type]/_search: parameters in the body as well as the URL.
            params += parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True)
        elif raw.strip():
            fmt = body_format(ctype, raw)
            interaction.body = parse_body(fmt, raw)
            interaction.body_kind = "json-patch" if fmt == "json-patch" else "resource"
        elif interaction.kind in (CREATE, UPDATE, PATCH, BATCH):
            raise FhirError(400, "required", f"{method} needs a request body")
    if interaction.kind == BATCH and isinstance(interaction.body, dict):
        if interaction.body.get("resourceType") != "Bundle":
            raise FhirError(400, "invalid", "POST to the base URL takes a Bundle of type batch or transaction")
        if interaction.body.get("type") == "transaction":
            interaction.kind = TRANSACTION
    interaction.params = params
    interaction.if_match = headers.get("if-match")
    interaction.if_none_match = headers.get("if-none-match")
    interaction.if_none_exist = headers.get("if-none-exist")
    interaction.if_modified_since = headers.get("if-modified-since")
    interaction.prefer_return, interaction.prefer_handling = parse_prefer(headers.get("prefer"))
    interaction.base_url = base_url(request, services.settings.base_url)
    interaction.request_headers = {k.lower(): v for k, v in headers.items()}
    interaction.client_address = request.client.host if request.client else None
    return interaction


def authenticate(request: Request, services: Any, audience: str) -> Principal:
    """The caller behind the bearer token (401 without a valid one)."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise unauthorised("an access token is required (Authorization: Bearer ...)", "invalid_request")
    return services.tokens.verify(token.strip(), audience)


def shape_of(request: Request) -> Shape:
    q = request.query_params
    fmt = response_format(q.get("_format"), request.headers.get("accept"))
    return Shape(
        fmt,
        q.get("_pretty") == "true",
        parse_summary(q.get("_summary")),
        parse_elements(q.get("_elements")),
    )


def fhir_routes(services: Any) -> list[Route]:
    async def endpoint(request: Request) -> Response:
        response = await handle(request)
        response.headers.update(correlation_headers(request.headers))  # kept on the Interaction too
        return response

    async def handle(request: Request) -> Response:
        try:
            shape = shape_of(request)
        except FhirError as err:
            return error_response(err, Shape(JSON, False, None, None))
        try:
            interaction = await build_interaction(request, services)
            result = await run_in_threadpool(services.pipeline.run, interaction)
            response = respond(result, shape, interaction.prefer_return)
            if request.method == "HEAD":
                response.body = b""
            return response
        except FhirError as err:
            return error_response(err, shape)
        except Exception:  # never a stack trace to the client
            log.exception("unhandled error on %s %s", request.method, request.url.path)
            return error_response(FhirError(500, "exception", "Internal server error; it has been logged"), shape)

    return [Route("/fhir", endpoint, methods=METHODS), Route("/fhir/{path:path}", endpoint, methods=METHODS)]
