"""Terminology over the ValueSets and CodeSystems stored in the hub (no external terminology server).

- `codesystem`: a CodeSystem's concepts and hierarchy (nesting, parent/child properties), filters.
- `expansion`: expanding a ValueSet (compose include/exclude, imported value sets, a stored
  expansion.contains) into codes per system, plus systems that are included whole but cannot be
  enumerated here (SNOMED CT, LOINC ... without a stored CodeSystem).
- `service`: finding them in the store by canonical url (|version) or literal reference, with a
  per-process cache keyed by (url, version) that any ValueSet or CodeSystem write invalidates.

Search uses it for token `:in` / `:not-in` / `:above` / `:below`; `ValueSet/$expand` (hub/api/expand.py)
serves it.
"""
