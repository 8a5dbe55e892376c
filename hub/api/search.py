"""Search interactions (type, system, compartment): the engine builds the searchset Bundle."""

from __future__ import annotations

from hub.pipeline import Context, Result


def search(ctx: Context) -> Result:
    return Result(200, resource=ctx.services.search.search(ctx))
