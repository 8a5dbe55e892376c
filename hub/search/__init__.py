"""FHIR search: the parameter registry, the FHIRPath compiler, index extraction and compartments.

- `registry`: the R4 SearchParameters (generated data) plus custom ones; `default_registry()`.
- `fhirpath`: compiles search-parameter expressions into fast typed evaluators over FHIR JSON.
- `extract`: index rows for the idx_* tables; `compartment`: the Patient compartment of a resource.
"""
