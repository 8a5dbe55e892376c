"""Parsing of the FHIR-relevant request headers: If-Match, Prefer, If-Modified-Since."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from hub.formats.outcome import FhirError

_ETAG = re.compile(r'^\s*(?:W/)?"?([0-9]+)"?\s*$')


def parse_etag(value: str | None, header: str = "If-Match") -> int | None:
    """`W/"3"` (or a bare `3`) -> 3. A malformed tag is the client's error (400), not a mismatch."""
    if value is None or value.strip() == "":
        return None
    m = _ETAG.match(value)
    if not m:
        raise FhirError(400, "invalid", f'{header} must be a version ETag such as W/"3", not {value!r}', header)
    return int(m.group(1))


def parse_prefer(value: str | None) -> tuple[str | None, str | None]:
    """Prefer: return=minimal|representation|OperationOutcome, handling=strict|lenient."""
    ret = handling = None
    for part in (value or "").split(","):
        for token in part.split(";"):
            if "=" not in token:
                continue
            k, v = (x.strip() for x in token.split("=", 1))
            v = v.strip('"')
            if k.lower() == "return" and v in ("minimal", "representation", "OperationOutcome"):
                ret = v
            elif k.lower() == "handling" and v in ("strict", "lenient"):
                handling = v
    return ret, handling


def parse_http_date(value: str | None) -> datetime | None:
    """If-Modified-Since as naive UTC; an unparsable date is ignored, as HTTP caches do."""
    if not value:
        return None
    try:
        dt = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if dt.tzinfo is not None:
        dt = dt.astimezone(UTC).replace(tzinfo=None)
    return dt


# MedMij (and common practice) lets a client tag a request so both sides can find it in their logs.
CORRELATION_HEADERS = ("MedMij-Request-ID", "X-Correlation-ID")
_CORRELATION_VALUE = re.compile(r"^[\x21-\x7e]{1,128}$")  # visible ASCII, no spaces: safe to echo and log


def correlation_headers(request_headers: Mapping[str, str]) -> dict[str, str]:
    """The request's correlation ids, to echo in the response. Only what the client sent (the hub
    generates none); a malformed or oversized value is not echoed."""
    out = {}
    for name in CORRELATION_HEADERS:
        value = request_headers.get(name.lower())
        if value and _CORRELATION_VALUE.match(value):
            out[name] = value
    return out
