"""The FHIR operations Hearth serves itself (services add their own: Subscriptions' $status, the connectors'
$connectors…). Each module registers its handlers on the context in `install(ctx)`, and lists what it serves in
`ctx.capability_extras["operations"]` ({"name", "definition", "type": None at system level}) for the
CapabilityStatement with `served`; `install_all` is called once per context by server/wiring.py."""

from __future__ import annotations

from hearth.interactions.context import Context


def served(ctx: Context, name: str, definition: str, *types: str | None) -> None:
    """Note an operation in the CapabilityStatement, at system level (no types) or on each type given."""
    listed = ctx.capability_extras.setdefault("operations", [])
    for resource_type in types or (None,):
        listed.append({"name": name, "definition": definition, "type": resource_type})


# After `served`: the modules import it from here.
from hearth.interactions.operations import admin, everything, lastn, meta, terminology, validate  # noqa: E402

MODULES = (everything, lastn, validate, meta, terminology, admin)


def install_all(ctx: Context) -> None:
    for module in MODULES:
        module.install(ctx)
