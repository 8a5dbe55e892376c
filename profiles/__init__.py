"""Profiles: validation against the R4 base definitions and the Dutch profiles.

registry.py    the conformance resources known (R4 base data module, profiles/definitions, installed)
snapshot.py    snapshots from differentials, down the baseDefinition chain
model.py       a snapshot compiled into a tree of elements, cached per profile
validator.py   the walk: cardinality, fixed/pattern, types, slices, extensions, nested resources
slicing.py     discriminators (value, pattern, type, profile, exists)
checks.py      bindings and reference targets
terminology.py ValueSets expanded locally from CodeSystems
invariants.py  constraint expressions (guards, the compiled FHIRPath subset, fhirpathpy)
dutch.py       BSN 11-proof, AGB, URA
packages.py    reading FHIR packages and folders; `hub profiles install`
service.py     the hub side: registry per process, validation on write, $validate
"""
