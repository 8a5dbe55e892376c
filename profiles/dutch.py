"""Dutch identifier checks: BSN (11-proof), AGB-Z and URA (8 digits)."""

from __future__ import annotations

BSN = "http://fhir.nl/fhir/NamingSystem/bsn"
AGB = "http://fhir.nl/fhir/NamingSystem/agb-z"
URA = "http://fhir.nl/fhir/NamingSystem/ura"
SYSTEMS = frozenset({BSN, AGB, URA})


def bsn_valid(value: str) -> bool:
    """Nine digits whose weighted sum (9..2, and -1 for the last digit) is a multiple of 11."""
    if len(value) != 9 or not value.isascii() or not value.isdigit() or value == "000000000":
        return False
    total = sum(int(d) * w for d, w in zip(value[:8], range(9, 1, -1), strict=True)) - int(value[8])
    return total % 11 == 0


def identifier_problem(system: str, value: object) -> str | None:
    """Why an identifier value of a Dutch naming system is wrong, or None when it is fine."""
    if not isinstance(value, str):
        return None  # a missing value is the profile's business (cardinality), not the form's
    if system == BSN and not bsn_valid(value):
        return f"{value!r} is not a valid BSN (9 digits passing the 11-proof)"
    if system in (AGB, URA) and not (len(value) == 8 and value.isascii() and value.isdigit()):
        kind = "AGB code" if system == AGB else "URA number"
        return f"{value!r} is not a valid {kind} (8 digits)"
    return None
