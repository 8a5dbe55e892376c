"""SQLite index hints: an alias of an index table that SQLite must read through the table's index by
resource (`INDEXED BY`). Other databases render a plain alias.

SQLite keeps no statistics unless told to, and then prefers the index that tests the most columns by
equality. A correlated look-up of one resource's rows of a parameter (`resource_pk = resource.pk AND
res_type = ? AND param = ? AND <value test>`) then walks the parameter's search index, every row of
the parameter for every candidate, instead of the few rows of the one resource.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Table
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import Alias

from hub.store.tables import RESOURCE_INDEXES


class ByResource(Alias):
    """`<table> AS <name> INDEXED BY <the table's index by resource>` on SQLite."""

    inherit_cache = True


def by_resource(table: Table) -> ByResource:
    return ByResource._construct(table, name=f"{table.name}_row")


@compiles(ByResource, "sqlite")
def _indexed_by(element: ByResource, compiler: Any, **kw: Any) -> str:
    text: str = compiler.visit_alias(element, **kw)
    if kw.get("asfrom"):
        table: Table = element.element  # type: ignore[assignment]
        text += f" INDEXED BY {RESOURCE_INDEXES[table.name]}"
    return text
