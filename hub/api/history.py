"""History at instance, type and system level (R4 http.html#history), paged by keyset cursor."""

from __future__ import annotations

from datetime import datetime

from hub.api.interactions import check_id
from hub.api.paging import bundle, decode_cursor, encode_cursor, history_entry, link
from hub.formats.dates import parse_instant, parse_range
from hub.formats.outcome import invalid, not_found
from hub.pipeline import Context, Result

KNOWN = {"_since", "_at", "_count", "_page", "_format", "_pretty", "_summary", "_elements"}


def history(ctx: Context) -> Result:
    i = ctx.interaction
    settings = ctx.services.settings
    for name, _ in i.params:
        if name not in KNOWN:
            raise invalid(f"History does not take the parameter {name!r}", name)
    since = parse_instant(i.param("_since") or "", "_since") if i.param("_since") else None
    at = parse_range(i.param("_at") or "", "_at") if i.param("_at") else None
    count = _count(i.param("_count"), settings.default_page_size, settings.max_page_size)
    before = None
    if i.param("_page"):
        ts, pk = decode_cursor(i.param("_page") or "", 2)
        try:
            before = (datetime.fromisoformat(ts), int(pk))
        except ValueError:
            raise invalid("The paging token is damaged", "_page") from None
    res_id = check_id(i.res_id) if i.res_id else None
    if res_id and i.res_type and ctx.repo.current(i.res_type, res_id) is None:
        raise not_found(f"{i.res_type}/{res_id} is not known")

    fetched = ctx.repo.history(i.res_type, res_id, since=since, at=at, before=before, limit=count + 1)
    more = len(fetched) > count
    fetched = fetched[:count]
    # Versions the caller may not see (scopes, patient compartment, consent) are left out of the page;
    # paging follows the versions fetched, so a page may hold fewer entries, and no total is given
    # then, as counting would reveal what was left out.
    ctx.prepare_shows(fetched)
    rows = [r for r in fetched if (r.deleted and not ctx.visible) or ctx.shows(r)]
    total = None
    if at is None and not _may_hide(ctx, i.res_type):
        total = ctx.repo.history_count(i.res_type, res_id, since=since)
    elif at is None and res_id and i.res_type:  # one resource: count its versions the caller sees
        versions = ctx.repo.history(i.res_type, res_id, since=since, at=None, before=None, limit=10_000)
        ctx.prepare_shows(versions)
        total = sum(1 for r in versions if (r.deleted and not ctx.visible) or ctx.shows(r))

    path = "/".join(p for p in (i.res_type, res_id, "_history") if p)
    keep = [(k, v) for k, v in i.params if k in ("_since", "_at", "_count", "_format")]
    if not any(k == "_count" for k, _ in keep):
        keep.append(("_count", str(count)))
    links = {"self": link(i.base_url, path, i.params)}
    if i.param("_page"):
        links["first"] = link(i.base_url, path, keep)
    if more and fetched:
        last = fetched[-1]
        links["next"] = link(i.base_url, path, [*keep, ("_page", encode_cursor(last.last_updated, last.pk))])
    entries = [history_entry(i.base_url, r) for r in rows]
    return Result(200, resource=bundle("history", entries, links, total))


def _may_hide(ctx: Context, res_type: str | None) -> bool:
    """Whether a visibility rule could hide versions of this type (of any type: system history).
    A rule without a `hides(type)` hint may hide anything."""
    for check in ctx.visible:
        hides = getattr(check, "hides", None)
        if hides is None or res_type is None or hides(res_type):
            return True
    return False


def _count(value: str | None, default: int, maximum: int) -> int:
    if value is None:
        return default
    if not value.isdigit():
        raise invalid(f"_count must be a non-negative integer, not {value!r}", "_count")
    return min(int(value), maximum)
