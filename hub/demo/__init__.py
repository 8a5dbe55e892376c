"""Demo content: what a new user sees when starting the hub for the first time.

`demo_bundle()` returns one FHIR R4 transaction Bundle with a small, entirely fictitious
Zoetermeer / Haaglanden care region (organisations, systems, professionals, patients and their
clinical data), shaped after the Dutch nl-core (zib2020) profiles.
"""

from hub.demo.region import DEMO_TAG, bsn_is_valid, demo_bundle

__all__ = ["DEMO_TAG", "bsn_is_valid", "demo_bundle"]
