"""The regional FHIR exchange hub (Zoetermeer / Haaglanden)."""

__version__ = "0.1.0"
