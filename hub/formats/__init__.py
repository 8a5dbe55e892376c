"""Wire formats: FHIR JSON and XML, content negotiation, OperationOutcome errors."""
