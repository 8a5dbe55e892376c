"""SMART on FHIR scopes (v1 and v2) and what each interaction needs.

    v2: patient/Observation.rs   user/*.cruds   system/Patient.r      (c r u d s)
    v1: patient/Observation.read  system/*.write  user/*.*            (read = r s, write = c u d)

A scope grants permissions on resource types within a context: `patient` (only the bound
patient's compartment), `user` (what the acting professional may see) or `system` (the client's
organisation). v2 query constraints (`patient/Observation.rs?category=...`) are refused when a
client registers: the hub does not enforce them, so it must not pretend to.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from hub.fhirmodel.structure import structure
from hub.pipeline import (
    CREATE,
    DELETE,
    HISTORY_INSTANCE,
    HISTORY_SYSTEM,
    HISTORY_TYPE,
    PATCH,
    READ,
    SEARCH_COMPARTMENT,
    SEARCH_SYSTEM,
    SEARCH_TYPE,
    UPDATE,
    VREAD,
)

_SCOPE = re.compile(r"^(patient|user|system)/(\*|[A-Z][A-Za-z]+)\.(read|write|\*|[cruds]+)$")
_V1 = {"read": "rs", "write": "cud", "*": "cruds"}
OTHER_SCOPES = frozenset({"openid", "fhirUser", "launch/patient", "offline_access", "online_access", "profile"})

# The permission letter each interaction needs on its resource type.
NEEDS = {
    READ: "r",
    VREAD: "r",
    HISTORY_INSTANCE: "r",
    SEARCH_TYPE: "s",
    SEARCH_SYSTEM: "s",
    SEARCH_COMPARTMENT: "s",
    HISTORY_TYPE: "s",
    HISTORY_SYSTEM: "s",
    CREATE: "c",
    UPDATE: "u",
    PATCH: "u",
    DELETE: "d",
}


class ScopeError(ValueError):
    pass


@dataclass(frozen=True)
class Scope:
    context: str  # patient | user | system
    resource_type: str  # a type or "*"
    permissions: frozenset[str]  # subset of c r u d s

    def covers(self, resource_type: str, permission: str) -> bool:
        return permission in self.permissions and self.resource_type in ("*", resource_type)

    def __str__(self) -> str:
        order = "cruds"
        return f"{self.context}/{self.resource_type}.{''.join(p for p in order if p in self.permissions)}"


def parse_scope(text: str) -> Scope | None:
    """A resource scope, or None for the non-resource scopes (openid, offline_access, ...)."""
    if text in OTHER_SCOPES:
        return None
    if "?" in text:
        raise ScopeError(f"scope {text!r}: query constraints (SMART v2 granular scopes) are not supported")
    m = _SCOPE.match(text)
    if not m:
        raise ScopeError(f"scope {text!r} is not a SMART scope such as patient/Observation.rs or system/*.read")
    context, rtype, perms = m.groups()
    if rtype != "*" and not structure().is_resource_type(rtype):
        raise ScopeError(f"scope {text!r}: unknown resource type {rtype}")
    letters = _V1.get(perms, perms)
    if len(set(letters)) != len(letters) or "".join(p for p in "cruds" if p in letters) != letters:
        raise ScopeError(f"scope {text!r}: permissions must be in the order c r u d s without repeats")
    return Scope(context, rtype, frozenset(letters))


def parse_scopes(text: str) -> tuple[list[Scope], list[str]]:
    """(resource scopes, other scopes) from a space-separated scope string."""
    resource_scopes: list[Scope] = []
    other: list[str] = []
    for item in text.split():
        scope = parse_scope(item)
        if scope is None:
            other.append(item)
        else:
            resource_scopes.append(scope)
    return resource_scopes, other


def narrow(requested: str | None, allowed: str) -> str:
    """The scopes a token gets: what was asked for (all allowed ones if nothing), each of which
    must be covered by a scope the client is allowed; raises ScopeError otherwise."""
    allowed_scopes, allowed_other = parse_scopes(allowed)
    if not requested:
        return allowed
    granted = []
    for item in requested.split():
        scope = parse_scope(item)
        if scope is None:
            if item not in allowed_other and item not in ("openid", "fhirUser", "launch/patient"):
                raise ScopeError(f"scope {item!r} is not allowed for this client")
            granted.append(item)
            continue
        ok = any(
            a.context == scope.context
            and (a.resource_type == "*" or a.resource_type == scope.resource_type)
            and scope.permissions <= a.permissions
            for a in allowed_scopes
        )
        if not ok:
            raise ScopeError(f"scope {item!r} is not allowed for this client")
        granted.append(str(scope))
    return " ".join(granted)


_NO_ID_TOKEN = {"openid", "fhirUser", "profile"}  # the hub issues no ID tokens: not granted


def patient_scopes(requested: str | None, registered: str) -> str:
    """The scopes a patient's app (PGO) is granted: `narrow`ed to its registration, ID-token scopes
    dropped, patient/ resource scopes only, and at least one of them."""
    kept = [s for s in narrow(requested, registered).split() if s not in _NO_ID_TOKEN]
    resource_scopes, _ = parse_scopes(" ".join(kept))
    if not resource_scopes:
        raise ScopeError("ask for at least one patient/ scope, such as patient/*.rs")
    if any(s.context != "patient" for s in resource_scopes):
        raise ScopeError("a patient's app gets patient/ scopes only")
    return " ".join(kept)


def permits(scopes: list[Scope], resource_type: str, permission: str) -> bool:
    return any(s.covers(resource_type, permission) for s in scopes)
