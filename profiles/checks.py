"""Checks of one element that need more than its own definition: bindings (against value sets
expanded locally, profiles/terminology.py) and reference targets (target types from targetProfile;
the target's conformance when the reference resolves in the bundle, the contained resources or the
hub). A code of a code system the hub has no CodeSystem for (SNOMED CT, LOINC, ...) that misses an
enumerated value set is a warning, never an error: the hub cannot tell."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from profiles.terminology import IN, OUT, expansion, member, system_codes

if TYPE_CHECKING:
    from profiles.validator import Item, Run

MAX_DEPTH = 3  # nested resources / resolved references followed


def check_binding(run: Run, binding: tuple[str, str], item: Item) -> None:
    """A code / Coding / CodeableConcept against a required or extensible binding."""
    strength, vs_url = binding
    exp = expansion(run.registry, vs_url)
    if exp is None:
        return  # a value set not loaded here: not checked
    v, tcode = item.value, item.tcode
    pairs: list[tuple[Any, Any]]
    if isinstance(v, str):
        pairs = [(None, v)]
    elif isinstance(v, dict) and tcode == "CodeableConcept":
        pairs = [(c.get("system"), c.get("code")) for c in v.get("coding", ()) if isinstance(c, dict) and c.get("code")]
        if not pairs:
            if strength == "required" and not v.get("coding"):
                run.add("error", "code-invalid", f"No code provided, and a code from {vs_url} is required", item.path)
            return
    elif isinstance(v, dict) and tcode == "Coding" and v.get("code"):
        pairs = [(v.get("system"), v["code"])]
    else:
        return
    verdicts = [member(exp, s, c) for s, c in pairs]
    if IN in verdicts or OUT not in verdicts:
        return
    external = all(s is not None and system_codes(run.registry, s) is None for s, _ in pairs)
    severity = "error" if strength == "required" and not external else "warning"
    codes = ", ".join(f"{s}#{c}" if s else str(c) for s, c in pairs)
    run.add(
        severity,
        "code-invalid",
        f"The code {codes} is not in the value set {vs_url} ({strength} binding)",
        item.path,
    )


def check_reference(run: Run, targets: tuple[str, ...], item: Item) -> None:
    """A Reference's target type against targetProfile; the target's profile when it can be resolved."""
    types = {run.profile_type(t) for t in targets} - {None}  # profiles not loaded here say nothing
    if not types or "Resource" in types:
        return
    ref_type = run.reference_type(item.value)
    if ref_type is not None and ref_type not in types:
        allowed = ", ".join(sorted(t for t in types if t))
        run.add(
            "error", "structure", f"A reference to a {ref_type} is not allowed here (allowed: {allowed})", item.path
        )
        return
    special = [t for t in targets if not run.registry.is_base(t) and run.profile_type(t) == ref_type]
    if not special or run.depth >= MAX_DEPTH:
        return
    target = run.resolve(item.value)
    if target is None:
        return
    plain = [t for t in targets if run.registry.is_base(t) and run.profile_type(t) == ref_type]
    if plain:
        return  # the base type is allowed as well: any resource of that type will do
    sub = type(run)(run.registry, target, run.resolver, run.depth + 1)
    sub.bundle = run.bundle
    if not any(sub.conforms(target, t) for t in special):
        run.add(
            "error",
            "structure",
            f"The referenced {ref_type} does not conform to any of the profiles {', '.join(special)}",
            item.path,
        )
