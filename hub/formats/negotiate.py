"""Content negotiation for FHIR R4: which format a client sends and which it wants back.

Request bodies: `Content-Type` application/fhir+json | application/json | application/fhir+xml |
application/xml | text/xml, and for PATCH application/json-patch+json. Responses: `_format`, then
`Accept`, defaulting to FHIR JSON. A `fhirVersion` mime parameter other than 4.0 is refused.
"""

from __future__ import annotations

from hub.formats.outcome import FhirError

JSON, XML = "json", "xml"
FHIR_JSON = "application/fhir+json"
FHIR_XML = "application/fhir+xml"
JSON_PATCH = "application/json-patch+json"

_FORMAT_PARAM = {
    "json": JSON,
    "application/json": JSON,
    "application/fhir+json": JSON,
    "xml": XML,
    "text/xml": XML,
    "application/xml": XML,
    "application/fhir+xml": XML,
}
_BODY_TYPES = {
    "application/fhir+json": JSON,
    "application/json": JSON,
    "application/fhir+xml": XML,
    "application/xml": XML,
    "text/xml": XML,
    "application/json-patch+json": "json-patch",
}
_ACCEPT = {
    "application/fhir+json": JSON,
    "application/json": JSON,
    "application/fhir+xml": XML,
    "application/xml": XML,
    "text/xml": XML,
    "application/*": JSON,
    "*/*": JSON,
}
_SUPPORTED_VERSIONS = {"4.0", "4.0.1"}


def _split(media: str) -> tuple[str, dict[str, str]]:
    parts = [p.strip() for p in media.split(";")]
    params: dict[str, str] = {}
    for p in parts[1:]:
        if "=" in p:
            k, v = p.split("=", 1)
            params[k.strip().lower()] = v.strip().strip('"')
    return parts[0].lower(), params


def body_format(content_type: str | None, body: bytes) -> str:
    """The format of a request body: json | xml | json-patch. 415 when not one we read."""
    if not content_type:
        # Be forgiving to hand-made requests (curl without -H): sniff the first character.
        head = body.lstrip()[:1]
        if head == b"{":
            return JSON
        if head == b"<":
            return XML
        raise FhirError(415, "not-supported", "The request has no Content-Type; send application/fhir+json or +xml")
    media, params = _split(content_type)
    fmt = _BODY_TYPES.get(media)
    if fmt is None:
        raise FhirError(
            415,
            "not-supported",
            f"Content-Type {media} is not supported; use application/fhir+json or application/fhir+xml",
        )
    version = params.get("fhirversion")
    if version and version not in _SUPPORTED_VERSIONS:
        raise FhirError(415, "not-supported", f"fhirVersion {version} is not supported; this server speaks 4.0")
    return fmt


def response_format(format_param: str | None, accept: str | None) -> str:
    """json or xml for the response. `_format` wins over Accept (browsers send odd Accept headers)."""
    if format_param:
        fmt = _FORMAT_PARAM.get(format_param.strip().lower().split(";")[0].strip())
        if fmt is None:
            raise FhirError(400, "not-supported", f"_format={format_param} is not supported; use json or xml")
        return fmt
    if not accept:
        return JSON
    best_key: tuple[float, int] | None = None
    best = JSON
    for item in accept.split(","):
        media, params = _split(item)
        fmt = _ACCEPT.get(media)
        if fmt is None:
            continue
        version = params.get("fhirversion")
        if version and version not in _SUPPORTED_VERSIONS:
            continue
        try:
            q = float(params.get("q", "1"))
        except ValueError:
            q = 1.0
        if q <= 0:
            continue
        # Higher q wins, then a specific type over a wildcard; the first listed wins a tie.
        key = (q, 0 if "*" in media else 1)
        if best_key is None or key > best_key:
            best_key, best = key, fmt
    return best


def media_type(fmt: str) -> str:
    return FHIR_XML if fmt == XML else FHIR_JSON
