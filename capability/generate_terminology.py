"""Developer step of capability/generate.py: the R4 package's CodeSystems and ValueSets, compacted into
data/terminology.json.gz for capability/terminology.py."""

from __future__ import annotations

import gzip
import json
import tarfile
from collections.abc import Iterator
from pathlib import Path

from hearth.capability.terminology import compact_codesystem, compact_valueset

PACKAGE = "hl7.fhir.r4.core-4.0.1.tgz"


def package_resources(tgz: Path, prefix: str) -> Iterator[dict]:
    """The resources in a FHIR package whose file name starts with `prefix` (e.g. "ValueSet-")."""
    with tarfile.open(tgz, "r:gz") as archive:
        for member in archive:
            name = member.name.rpartition("/")[2]
            if member.isfile() and name.startswith(prefix) and name.endswith(".json"):
                yield json.load(archive.extractfile(member))


def write_terminology(spec: Path, data: Path) -> None:
    """Write data/terminology.json.gz, sorted by url and gzipped without a timestamp, so it is reproducible."""
    tgz = spec / PACKAGE
    content = {
        "codesystems": sorted((compact_codesystem(r) for r in package_resources(tgz, "CodeSystem-")),
                              key=lambda c: (c["url"], c["version"] or "")),
        "valuesets": sorted((compact_valueset(r) for r in package_resources(tgz, "ValueSet-")),
                            key=lambda v: (v["url"], v["version"] or "")),
    }
    raw = json.dumps(content, separators=(",", ":"), ensure_ascii=False).encode()
    data.mkdir(exist_ok=True)
    with open(data / "terminology.json.gz", "wb") as handle, \
            gzip.GzipFile(filename="", mode="wb", fileobj=handle, compresslevel=9, mtime=0) as out:
        out.write(raw)
