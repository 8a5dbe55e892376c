"""Rewriting the references inside bundle entries (R4 http.html#trules).

- a fullUrl of another entry (`urn:uuid:...`, `urn:oid:...` or an absolute URL) becomes the
  `Type/id` that entry gets, wherever it appears as a string (references, uri/canonical elements)
  and inside narrative links;
- a conditional reference (`Patient?identifier=...`) becomes the one resource it matches;
- an absolute reference on this server's own base becomes relative.

This runs over every resource of every transaction (hundreds per Synthea bundle), so it works on the
serialised JSON with a few regular expressions instead of walking every node in Python.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl

import orjson

from hub.fhirmodel.structure import structure
from hub.formats import jsonfmt
from hub.formats.outcome import FhirError, invalid
from hub.pipeline import Context

# "reference":"urn:uuid:..." or "reference":"https://..."
_REFERENCE_URL = re.compile(rb'"reference":"((?:urn:(?:uuid|oid):|https?://)[^"\\]*)"')
# Any other whole JSON string value that is a URN or an absolute URL (uri / canonical elements).
_URL_VALUE = re.compile(rb'"((?:urn:(?:uuid|oid):|https?://)[^"\\]*)"')
# The same inside an escaped string (narrative: href=\"urn:uuid:...\").
_ESCAPED_URL = re.compile(rb'\\"((?:urn:(?:uuid|oid):|https?://)[^"\\]*)\\"')
# "reference":"Type?criteria" (the value may contain JSON escapes).
_CONDITIONAL = re.compile(rb'"reference":"([A-Z][A-Za-z]*\?(?:[^"\\]|\\.)*)"')


class References:
    """Rewrites references for one bundle; conditional references are resolved once each."""

    def __init__(self, ctx: Context, aliases: dict[str, str]) -> None:
        self.ctx = ctx
        self.aliases = {k.encode(): v.encode() for k, v in aliases.items()}
        self.base = ctx.interaction.base_url.rstrip("/").encode() + b"/"
        self.conditional: dict[bytes, bytes] = {}

    def rewrite(self, resource: dict[str, Any]) -> dict[str, Any]:
        """A copy of the resource with its references rewritten (the input is not changed)."""
        data, exact = jsonfmt.dumps_marked(resource)
        if b"urn:" not in data and b"?" not in data and b"://" not in data:
            return jsonfmt.loads_exact(data) if exact else orjson.loads(data)
        data = _REFERENCE_URL.sub(self._reference, data)
        if self.aliases:
            data = _URL_VALUE.sub(self._value, data)
        if b'\\"' in data:
            data = _ESCAPED_URL.sub(self._escaped, data)
        if b"?" in data:
            data = _CONDITIONAL.sub(self._conditional, data)
        return jsonfmt.loads_exact(data) if exact else orjson.loads(data)

    def _reference(self, m: re.Match[bytes]) -> bytes:
        url = m.group(1)
        target = self.aliases.get(url)
        if target is None and url.startswith(b"urn:"):
            raise invalid(f"The reference {url.decode()!r} matches no fullUrl in this bundle")
        if target is None and url.startswith(self.base):
            rest = url[len(self.base) :]
            if b"?" not in rest and rest.count(b"/") in (1, 3):
                target = rest  # Type/id or Type/id/_history/n on this server: make it relative
        return m.group(0) if target is None else b'"reference":"' + target + b'"'

    def _value(self, m: re.Match[bytes]) -> bytes:
        target = self.aliases.get(m.group(1))
        return m.group(0) if target is None else b'"' + target + b'"'

    def _escaped(self, m: re.Match[bytes]) -> bytes:
        url = m.group(1)
        target = self.aliases.get(url)  # narrative links: only to other entries, never an error
        return m.group(0) if target is None else b'\\"' + target + b'\\"'

    def _conditional(self, m: re.Match[bytes]) -> bytes:
        raw = m.group(1)
        if raw not in self.conditional:
            self.conditional[raw] = self._resolve(orjson.loads(b'"' + raw + b'"')).encode()
        return b'"reference":"' + self.conditional[raw] + b'"'

    def _resolve(self, ref: str) -> str:
        rt, _, query = ref.partition("?")
        if not structure().is_resource_type(rt):
            raise invalid(f"The conditional reference {ref!r} names no known resource type")
        found = self.ctx.services.search.match(self.ctx, rt, parse_qsl(query, keep_blank_values=True))
        if len(found) != 1:
            what = "no resource" if not found else f"{len(found)} resources"
            raise FhirError(
                412,
                "not-found" if not found else "multiple-matches",
                f"The conditional reference {ref!r} matches {what}; it must match exactly one",
            )
        return f"{rt}/{found[0].res_id}"
