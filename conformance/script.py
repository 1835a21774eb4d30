"""Loading TestScripts and their static fixtures (JSON or XML; local files, `Type/id` references, contained)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hearth.capability import fhir_json, fhir_xml


class ScriptError(Exception):
    """A TestScript (or one of its fixtures) that cannot be loaded."""


@dataclass
class Fixture:
    """A static fixture: its parsed form (a resource, or e.g. a JSON Patch array) and where it came from."""

    resource: Any
    source: str


@dataclass
class Script:
    path: Path
    resource: dict
    fixtures: dict[str, Fixture] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)  # fixture id -> why it could not be loaded
    remote: dict[str, str] = field(default_factory=dict)  # fixture id -> URL (absolute, or Type/id on the server)

    @property
    def name(self) -> str:
        return self.resource.get("name") or self.resource.get("id") or self.path.stem


def parse_document(data: bytes, hint: str = "") -> Any:
    """JSON or FHIR XML bytes -> the JSON form (XML is sniffed by its first character when `hint` does not say)."""
    text = data.lstrip()
    if "xml" in hint or text[:1] == b"<":
        return fhir_xml.xml_to_json(data)
    return fhir_json.loads(data)


def read_document(path: Path) -> Any:
    try:
        return parse_document(path.read_bytes(), path.suffix)
    except (OSError, ValueError) as exc:
        raise ScriptError(f"{path}: {exc}") from None


def find_scripts(paths: list[str]) -> list[Path]:
    """TestScript files among `paths` (folders searched recursively; fixtures folders and other resources skipped)."""
    found: list[Path] = []
    for name in paths:
        path = Path(name)
        if path.is_dir():
            candidates = sorted(p for p in path.rglob("*") if p.suffix in (".json", ".xml")
                                and "fixtures" not in p.relative_to(path).parts)
            found.extend(p for p in candidates if _is_test_script(p))
        elif path.exists():
            found.append(path)
        else:
            raise ScriptError(f"{name}: no such file or folder")
    return found


def _is_test_script(path: Path) -> bool:
    with path.open("rb") as handle:
        head = handle.read(4096)
    return b'"TestScript"' in head or b"<TestScript" in head


def load_script(path: Path) -> Script:
    resource = read_document(path)
    if not isinstance(resource, dict) or resource.get("resourceType") != "TestScript":
        raise ScriptError(f"{path}: not a TestScript")
    script = Script(path, resource)
    contained = {item.get("id"): item for item in resource.get("contained", ())}
    for fixture in resource.get("fixture", ()):
        reference = (fixture.get("resource") or {}).get("reference")
        if not reference:
            continue
        try:
            found = _resolve(path.parent, reference, contained)
        except ScriptError as exc:
            script.errors[fixture["id"]] = str(exc)
            continue
        if found is None:
            script.remote[fixture["id"]] = reference
        else:
            script.fixtures[fixture["id"]] = found
    return script


def _resolve(folder: Path, reference: str, contained: dict[str, Any]) -> Fixture | None:
    """A fixture reference: `#contained`, a file relative to the script, or `Type/id` as a local example file.

    None for what must be fetched when the script runs: an absolute URL, or `Type/id` with no local file (a
    resource on the server under test).
    """
    if reference.startswith("#"):
        if reference[1:] not in contained:
            raise ScriptError(f"no contained resource {reference}")
        return Fixture(contained[reference[1:]], reference)
    if reference.startswith(("http://", "https://")):
        return None
    candidates = [folder / reference]
    if "/" in reference and not Path(reference).suffix:
        # the spec's examples name `Patient/example` as fixtures/Patient-example.json (or .xml)
        for name in (reference.replace("/", "-"), reference):
            candidates += [folder / sub / f"{name}{suffix}" for sub in ("fixtures", ".") for suffix in (".json", ".xml")]
    for candidate in candidates:
        if candidate.is_file():
            return Fixture(read_document(candidate), str(candidate))
    if "/" in reference and not Path(reference).suffix:
        return None
    raise ScriptError(f"fixture {reference} not found next to the script")
