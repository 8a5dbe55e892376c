"""The executor of the pipeline: which function carries out each kind of interaction."""

from __future__ import annotations

from collections.abc import Callable

from hub.api import bundles, history, interactions, operations, search
from hub.api import everything as _everything  # noqa: F401  (registers $everything with the operations)
from hub.api import expand as _expand  # noqa: F401  (registers ValueSet/$expand)
from hub.formats.outcome import FhirError
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
    Context,
    Result,
)


def _capabilities(ctx: Context) -> Result:
    return Result(200, resource=ctx.services.capability_statement())


HANDLERS: dict[str, Callable[[Context], Result]] = {
    READ: interactions.read,
    VREAD: interactions.vread,
    CREATE: interactions.create,
    UPDATE: interactions.update,
    PATCH: interactions.patch,
    DELETE: interactions.delete,
    HISTORY_INSTANCE: history.history,
    HISTORY_TYPE: history.history,
    HISTORY_SYSTEM: history.history,
    SEARCH_TYPE: search.search,
    SEARCH_SYSTEM: search.search,
    SEARCH_COMPARTMENT: search.search,
    CAPABILITIES: _capabilities,
    BATCH: bundles.batch,
    TRANSACTION: bundles.transaction,
    OPERATION: operations.invoke,
}


# Resource types served by their own module instead of the resource store (AuditEvent: hub/audit).
TYPE_EXECUTORS: dict[str, Callable[[Context], Result]] = {}


def execute(ctx: Context) -> Result:
    i = ctx.interaction
    special = TYPE_EXECUTORS.get(i.compartment_type or i.res_type or "") if i.kind != OPERATION else None
    if special is not None:
        return special(ctx)
    handler = HANDLERS.get(ctx.interaction.kind)
    if handler is None:
        raise FhirError(400, "not-supported", f"Interaction {ctx.interaction.kind} is not supported")
    return handler(ctx)
