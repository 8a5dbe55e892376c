"""Extended operations ($name): a registry, so the CapabilityStatement lists exactly what exists."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hub.formats.outcome import FhirError, Issue, invalid, operation_outcome
from hub.pipeline import Context, Result


@dataclass(frozen=True)
class Operation:
    name: str  # without the $
    handler: Callable[[Context], Result]
    system: bool = False
    type_level: bool = False
    instance: bool = False
    resource_types: tuple[str, ...] = ()  # empty: every type
    definition: str | None = None  # canonical of the OperationDefinition
    affects_state: bool = False


REGISTRY: dict[str, Operation] = {}


def register(op: Operation) -> Operation:
    REGISTRY[op.name] = op
    return op


def invoke(ctx: Context) -> Result:
    i = ctx.interaction
    name = (i.operation or "").lstrip("$")
    op = REGISTRY.get(name)
    level = "instance" if i.res_id else "type" if i.res_type else "system"
    if op is None:
        raise FhirError(404, "not-supported", f"Unknown operation ${name}")
    allowed = {"system": op.system, "type": op.type_level, "instance": op.instance}[level]
    if not allowed or (op.resource_types and i.res_type not in op.resource_types):
        where = i.res_type or "the system level"
        raise FhirError(400, "not-supported", f"${name} is not available at {level} level on {where}")
    return op.handler(ctx)


def parameters_in(ctx: Context) -> list[dict[str, Any]]:
    """The `parameter` list of a Parameters body, or [] when the body is not Parameters."""
    body = ctx.interaction.body
    if isinstance(body, dict) and body.get("resourceType") == "Parameters":
        params = body.get("parameter", [])
        if not isinstance(params, list):
            raise invalid("Parameters.parameter must be a list", "Parameters.parameter")
        return params
    return []


# -- $validate --------------------------------------------------------------------------------------


def _validate(ctx: Context) -> Result:
    """Validate a resource given in the body (a Parameters with `resource`, or the resource itself),
    or the stored instance. Answers 200 with the OperationOutcome whatever the verdict."""
    i = ctx.interaction
    resource: Any = None
    for p in parameters_in(ctx):
        if p.get("name") == "resource":
            resource = p.get("resource")
    if resource is None and isinstance(i.body, dict) and i.body.get("resourceType") != "Parameters":
        resource = i.body
    if resource is None and i.res_id and i.res_type:
        resource = ctx.repo.read(i.res_type, i.res_id).resource()
    if not isinstance(resource, dict):
        raise invalid("$validate needs a resource: in the body, in Parameters.resource, or by instance")
    if i.res_type and resource.get("resourceType") != i.res_type:
        issues = [Issue("error", "invalid", f"The resource is a {resource.get('resourceType')}, not a {i.res_type}")]
    else:
        issues = list(ctx.services.validate(resource))
    if not any(x.severity in ("error", "fatal") for x in issues):
        issues.append(Issue("information", "informational", "Validation successful: no errors"))
    return Result(200, resource=operation_outcome(issues))


register(
    Operation(
        "validate",
        _validate,
        type_level=True,
        instance=True,
        definition="http://hl7.org/fhir/OperationDefinition/Resource-validate",
    )
)
