"""Developer script part: reading the official R4 definitions and writing capability/data/*.json, for
capability/generate.py and its steps."""

from __future__ import annotations

import json
from pathlib import Path

DATA = Path(__file__).parent / "data"


def load_bundle(spec: Path, name: str) -> list[dict]:
    with open(spec / name, encoding="utf-8") as handle:
        return [entry["resource"] for entry in json.load(handle)["entry"]]


def write_data(name: str, value: object) -> None:
    DATA.mkdir(exist_ok=True)
    with open(DATA / name, "w", encoding="utf-8") as handle:
        json.dump(value, handle, indent=1, sort_keys=False)
        handle.write("\n")
