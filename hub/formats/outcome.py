"""OperationOutcome: how every failure leaves the hub.

Code anywhere in the hub raises `FhirError`; the API layer turns it into an OperationOutcome with
the right HTTP status. Issue codes are from http://hl7.org/fhir/R4/valueset-issue-type.html.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class Issue:
    severity: str  # fatal | error | warning | information
    code: str  # issue-type code: invalid, structure, required, value, not-found, conflict, ...
    diagnostics: str
    expression: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"severity": self.severity, "code": self.code, "diagnostics": self.diagnostics}
        if self.expression:
            out["expression"] = list(self.expression)
        return out


class FhirError(Exception):
    """A failure that answers the client with an OperationOutcome and an HTTP status."""

    def __init__(
        self,
        status: int,
        code: str,
        diagnostics: str,
        expression: list[str] | str | None = None,
        *,
        severity: str = "error",
        issues: list[Issue] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(diagnostics)
        self.status = status
        if isinstance(expression, str):
            expression = [expression]
        self.issues = issues or [Issue(severity, code, diagnostics, list(expression or []))]
        self.headers = headers or {}

    @property
    def diagnostics(self) -> str:
        return self.issues[0].diagnostics

    def outcome(self) -> dict[str, Any]:
        return operation_outcome(self.issues)


def operation_outcome(issues: list[Issue]) -> dict[str, Any]:
    return {"resourceType": "OperationOutcome", "issue": [i.to_json() for i in issues]}


def information(diagnostics: str, code: str = "informational") -> dict[str, Any]:
    return operation_outcome([Issue("information", code, diagnostics)])


# Shorthands for the common statuses, so call sites read as what went wrong.
def not_found(diagnostics: str) -> FhirError:
    return FhirError(404, "not-found", diagnostics)


def gone(diagnostics: str) -> FhirError:
    return FhirError(410, "deleted", diagnostics)


def invalid(diagnostics: str, expression: list[str] | str | None = None, status: int = 400) -> FhirError:
    return FhirError(status, "invalid", diagnostics, expression)


def conflict(diagnostics: str) -> FhirError:
    return FhirError(409, "conflict", diagnostics)


def precondition_failed(diagnostics: str) -> FhirError:
    return FhirError(412, "conflict", diagnostics)


def not_supported(diagnostics: str, status: int = 400) -> FhirError:
    return FhirError(status, "not-supported", diagnostics)
