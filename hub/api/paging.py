"""Bundles the server builds (search, history) and their paging links.

Entries may carry a `Stored` row as their resource: the renderer embeds the stored JSON bytes as
they are (no parse, no re-serialisation) unless the client asked for XML or a subset.
"""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from hub.formats.outcome import invalid
from hub.store.repository import Stored, format_instant, new_id, utcnow


def encode_cursor(*parts: object) -> str:
    raw = "|".join(p.isoformat() if isinstance(p, datetime) else str(p) for p in parts)
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(token: str, n: int) -> list[str]:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise invalid(f"The paging token {token!r} is not one this server issued", "_page") from None
    parts = raw.split("|")
    if len(parts) != n:
        raise invalid(f"The paging token {token!r} is not one this server issued", "_page")
    return parts


def link(base: str, path: str, params: list[tuple[str, str]]) -> str:
    query = urlencode(params)
    return f"{base}/{path}" if not query else f"{base}/{path}?{query}".replace("//?", "/?")


def bundle(kind: str, entries: list[dict[str, Any]], links: dict[str, str], total: int | None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "resourceType": "Bundle",
        "id": new_id(),
        "meta": {"lastUpdated": format_instant(utcnow())},
        "type": kind,
    }
    if total is not None:
        out["total"] = total
    if links:
        out["link"] = [{"relation": rel, "url": url} for rel, url in links.items()]
    out["entry"] = entries
    if not entries:
        del out["entry"]
    return out


def full_url(base: str, stored: Stored) -> str:
    return f"{base}/{stored.res_type}/{stored.res_id}"


_STATUS = {"POST": "201 Created", "PUT": "200 OK", "PATCH": "200 OK", "DELETE": "204 No Content"}


def history_entry(base: str, stored: Stored) -> dict[str, Any]:
    entry: dict[str, Any] = {"fullUrl": full_url(base, stored)}
    if not stored.deleted:
        entry["resource"] = stored
    method = stored.method
    status = "201 Created" if stored.version_id == 1 or method == "POST" else _STATUS.get(method, "200 OK")
    entry["request"] = {
        "method": method,
        "url": stored.res_type if method == "POST" else f"{stored.res_type}/{stored.res_id}",
    }
    entry["response"] = {
        "status": status if not stored.deleted else _STATUS["DELETE"],
        "etag": stored.etag,
        "lastModified": format_instant(stored.last_updated),
    }
    return entry
