"""Extended operations ($name): a registry, so the CapabilityStatement lists exactly what exists."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hub.formats.outcome import FhirError, Issue, invalid, operation_outcome
from hub.pipeline import WRITING_OPERATIONS, Context, Result


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
    if op.affects_state:  # runs in a write transaction (SQLite: BEGIN IMMEDIATE, no lock upgrade race)
        WRITING_OPERATIONS.add(op.name)
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


_VALIDATE_MODES = ("create", "update", "delete")


def _param_value(p: dict[str, Any]) -> Any:
    return next((v for k, v in p.items() if k.startswith("value")), None)


def _validate(ctx: Context) -> Result:
    """$validate (http://hl7.org/fhir/R4/resource-operation-validate.html): a resource in the body
    (a Parameters with `resource`, or the resource itself) or the stored instance, against the
    `profile` parameter, or else its declared meta.profile, or else the base definition. `mode`
    create / update / delete checks what that interaction would need. Answers 200 with the
    OperationOutcome whatever the verdict; an unknown profile or mode is a 400."""
    i = ctx.interaction
    resource: Any = None
    profile, mode = i.param("profile"), i.param("mode")
    for p in parameters_in(ctx):
        if p.get("name") == "resource":
            resource = p.get("resource")
        elif p.get("name") == "profile":
            profile = _param_value(p)
        elif p.get("name") == "mode":
            mode = _param_value(p)
    if mode is not None and mode not in _VALIDATE_MODES:
        raise invalid(f"mode must be one of {', '.join(_VALIDATE_MODES)}, not {mode!r}", "mode")
    profiles = ctx.services.profiles
    if profile is not None and profiles.registry().structure_definition(str(profile)) is None:
        raise invalid(f"Profile {profile} is not known to the hub", "profile")
    if resource is None and isinstance(i.body, dict) and i.body.get("resourceType") != "Parameters":
        resource = i.body
    if mode == "delete":
        if not i.res_id:
            raise invalid("$validate with mode=delete needs an instance: [type]/[id]/$validate")
        ctx.repo.read(i.res_type or "", i.res_id)  # 404 / 410 when there is nothing to delete
        text = f"{i.res_type}/{i.res_id} may be deleted: no rule of the hub refuses it"
        return Result(200, resource=operation_outcome([Issue("information", "informational", text)]))
    if resource is None and i.res_id and i.res_type:
        resource = ctx.repo.read(i.res_type, i.res_id).resource()
    if not isinstance(resource, dict):
        raise invalid("$validate needs a resource: in the body, in Parameters.resource, or by instance")
    if i.res_type and resource.get("resourceType") != i.res_type:
        issues = [Issue("error", "invalid", f"The resource is a {resource.get('resourceType')}, not a {i.res_type}")]
    else:
        issues = profiles.validate(resource, [str(profile)] if profile else None, _resolver(ctx))
        if mode == "update" and not resource.get("id"):
            issues.append(Issue("error", "required", "An update needs the resource's id", ["id"]))
        elif mode == "update" and i.res_id and resource.get("id") != i.res_id:
            issues.append(Issue("error", "invalid", f"The resource's id is not {i.res_id}", ["id"]))
    if not any(x.severity in ("error", "fatal") for x in issues):  # the verdict first, then any warnings
        issues.insert(0, Issue("information", "informational", "Validation successful: no errors"))
    return Result(200, resource=operation_outcome(issues))


def _resolver(ctx: Context) -> Callable[[str], dict[str, Any] | None]:
    """References `Type/id` to resources in the hub, for target-profile checks (reads only the
    conformance verdict into the outcome, never the target's content)."""

    def resolve(ref: str) -> dict[str, Any] | None:
        parts = ref.split("/")
        if len(parts) != 2:
            return None
        stored = ctx.repo.current(parts[0], parts[1])
        return stored.resource() if stored is not None and not stored.deleted else None

    return resolve


register(
    Operation(
        "validate",
        _validate,
        type_level=True,
        instance=True,
        definition="http://hl7.org/fhir/OperationDefinition/Resource-validate",
    )
)
