"""What the hub knows about the FHIR R4 (4.0.1) type system, generated from the official definitions."""
