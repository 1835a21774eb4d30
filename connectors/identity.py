"""Where an upstream resource lives in Hearth: a stable local id per (connector, upstream type/id), references
rewritten to it, and `meta.source` naming the upstream version it came from.

The local id is a function of the connector's name and the upstream id (`ehr.123`; a hash where that would not
be a valid FHIR id). Names have no `.`, so the name ends at the first one and no two connectors' ids can meet. It
needs no lookup table, a reference can be rewritten before its target arrives, a
re-sync after a crash lands on the same resource, and two connectors bringing the same patient from two EHRs
never collide.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import re
from typing import Any

from hearth.security.masks import SUBSETTED, strip_path

_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
_REFERENCES_KEPT = 65_536  # rewritten references remembered per connector (a page refers to the same few again)
_RELATIVE = re.compile(r"^([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(/_history/[A-Za-z0-9\-.]{1,64})?$")


def local_id(connector: str, upstream_id: str) -> str:
    """The local id of an upstream resource (of any type: ids are per type in FHIR, and so are these)."""
    readable = f"{connector}.{upstream_id}"
    if _ID.match(readable):
        return readable
    digest = base64.b32encode(hashlib.sha256(upstream_id.encode()).digest()).decode().rstrip("=").lower()
    return f"{connector}.h{digest[:40]}"  # to meet a readable id, an upstream id would have to be this digest


class Localizer:
    """Turns upstream resources into the ones Hearth stores for one connector."""

    def __init__(self, connector: str, base: str, types: tuple[str, ...], mask: tuple[str, ...]) -> None:
        self.connector = connector
        self.base = base.rstrip("/")
        self.types = frozenset(types)
        self.mask = [(path.split(".", 1)[0], path.split(".")[1:]) for path in mask]
        self._references: dict[str, str] = {}

    def source(self, resource: dict[str, Any]) -> str:
        """The upstream resource's URL, versioned where the upstream gives a version."""
        url = f"{self.base}/{resource['resourceType']}/{resource.get('id', '')}"
        meta = resource.get("meta")
        version = meta.get("versionId") if isinstance(meta, dict) else None
        return f"{url}/_history/{version}" if version else url

    def localized(self, resource: dict[str, Any], masked: bool = False) -> dict[str, Any]:
        """A copy with the local id, `meta.source`, references to synced types rewritten to their local ids (to
        other types: absolute upstream URLs), masked elements removed; the upstream's versionId and lastUpdated
        go (Hearth versions it), its other meta stays. `masked`: its masked elements were removed already (a dead
        letter's), so it is marked as subsetted whatever is left to remove."""
        upstream_meta = dict(resource.get("meta") or {})
        meta = {key: value for key, value in upstream_meta.items() if key not in ("versionId", "lastUpdated", "source")}
        meta["source"] = self.source(resource)
        local = {"resourceType": resource["resourceType"], "id": local_id(self.connector, str(resource.get("id"))),
                 "meta": meta}
        for key, value in resource.items():
            if key not in local:
                local[key] = self._rewritten(value) if type(value) in (dict, list) else value
        if self._strip(local) or masked:
            meta["tag"] = [*meta.get("tag", []), SUBSETTED]
            local.pop("text", None)  # the narrative may say what was masked
        return local

    def masked(self, resource: dict[str, Any]) -> dict[str, Any]:
        """A copy without the masked elements (what a dead letter may keep of an upstream resource)."""
        stripped = copy.deepcopy(resource)
        self._strip(stripped)
        return stripped

    def _strip(self, resource: dict[str, Any]) -> bool:
        removed = False
        for resource_type, path in self.mask:
            if resource_type == resource.get("resourceType"):
                removed |= strip_path(resource, path)
        return removed

    def _rewritten(self, node: Any) -> Any:
        """A copy of a dict or list with its references rewritten (only containers are visited: most values are
        leaves, and a call per leaf was most of a sync's localizing)."""
        if type(node) is list:
            return [self._rewritten(item) if type(item) in (dict, list) else item for item in node]
        copy = {}
        for key, value in node.items():
            kind = type(value)
            if kind is dict or kind is list:
                value = self._rewritten(value)
            elif key == "reference" and kind is str:
                value = self.reference(value)
            copy[key] = value
        return copy

    def reference(self, reference: str) -> str:
        """A reference as Hearth stores it: `Patient/ehr.123` for a synced type, the upstream URL otherwise;
        contained (`#x`), `urn:` and other servers' references unchanged."""
        rewritten = self._references.get(reference)
        if rewritten is None:
            if len(self._references) >= _REFERENCES_KEPT:
                self._references.clear()
            rewritten = self._references[reference] = self._rewrite(reference)
        return rewritten

    def _rewrite(self, reference: str) -> str:
        relative = reference[len(self.base) + 1:] if reference.startswith(self.base + "/") else reference
        match = _RELATIVE.match(relative)
        if match is None:
            return reference
        resource_type, upstream_id = match.group(1), match.group(2)
        if resource_type in self.types:
            return f"{resource_type}/{local_id(self.connector, upstream_id)}"
        return f"{self.base}/{relative}"
