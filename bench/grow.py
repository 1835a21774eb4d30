"""Grow the Synthea set to a target number of resources, written straight into a SQLite file.

    python -m bench.grow DB --target 1000000 [--seed 1] [--workers 2] [--batch 20000]

The shared Organizations, Locations, Practitioners and PractitionerRoles of the batch files are stored once,
at their ids. Then the 120 patient records are stored in rounds: round 0 is the records as they are, round k
a copy of each with fresh ids (every resource of the record; its references follow, so each copy is a
consistent record) and fresh identifier values; references to the shared resources stay as they are.
Records go in a seeded order until the database holds at least `target` resources.

Every resource goes through the interactions' preparation path (parse and validate, stamp, serialise, extract
index entries: `crud.version_write`), prepared by worker processes; the main process commits whole records,
many at a time, with `store.commit`. A record is all in or all out, so a rerun (after a crash, or with a
larger target) skips the records already stored: the same seed and target give the same database.
"""

from __future__ import annotations

import argparse
import asyncio
import bz2
import multiprocessing
import os
import random
import re
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from hearth.capability import fhir_json
from hearth.search import entries as shapes
from hearth.search.entries import CompositeEntry, Entry
from hearth.interactions import crud
from hearth.interactions.request import SYSTEM
from hearth.interactions.context import Context
from hearth.interactions.resources import parse_resource
from hearth.storage.base import Write
from hearth.storage.sqlite.store import SqliteStore

ROOT = Path(__file__).resolve().parents[1]
SYNTHEA = ROOT.parent / "shared" / "testdata" / "synthea-120"
_UUID = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@dataclass(frozen=True, slots=True)
class Record:
    """One patient's bundle, references made local (`Type/id`), as JSON texts ready to copy."""

    patient_id: str
    resources: tuple[tuple[str, bytes], ...]  # (resource type, JSON text)
    ids: frozenset[bytes]  # the record's own resource ids: what a copy replaces


@dataclass(frozen=True, slots=True)
class Unit:
    """Copy `copy` (0: the original) of record `record`."""

    record: int
    copy: int
    size: int


def load_synthea(folder: Path) -> tuple[list[dict], list[Record]]:
    """The batch files' shared resources, and the patient records (in file-name order)."""
    files = sorted(folder.glob("*.json.bz2"))
    batches = [fhir_json.loads(bz2.decompress(f.read_bytes())) for f in files if f.name.startswith("0-")]
    bundles = [fhir_json.loads(bz2.decompress(f.read_bytes())) for f in files if not f.name.startswith("0-")]
    if not batches or not bundles:
        raise SystemExit(f"no Synthea batch and patient bundles in {folder} (--data)")
    shared = [entry["resource"] for bundle in batches for entry in bundle["entry"]]
    by_identifier = {(r["resourceType"], f"{i.get('system')}|{i.get('value')}"): f"{r['resourceType']}/{r['id']}"
                     for r in shared for i in r.get("identifier", [])}
    return shared, [_record(bundle, by_identifier) for bundle in bundles]


def local_references(value: Any, by_url: dict[str, str], by_identifier: dict[tuple[str, str], str],
                     seen: set[str] | None = None) -> Any:
    """`value` with Synthea's references made local `Type/id`: `urn:uuid:` fullUrls through `by_url`, conditional
    references to the shared resources (`Organization?identifier=system|value`) through `by_identifier`. Every
    reference met is added to `seen`, when given."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if key == "reference" and isinstance(item, str):
                if item in by_url:
                    item = by_url[item]
                elif "?identifier=" in item:
                    resource_type, _, criteria = item.partition("?identifier=")
                    item = by_identifier.get((resource_type, criteria), item)
                if seen is not None:
                    seen.add(item)
            out[key] = local_references(item, by_url, by_identifier, seen)
        return out
    if isinstance(value, list):
        return [local_references(item, by_url, by_identifier, seen) for item in value]
    return value


def _record(bundle: dict, by_identifier: dict[tuple[str, str], str]) -> Record:
    by_url = {entry["fullUrl"]: f"{entry['resource']['resourceType']}/{entry['resource']['id']}"
              for entry in bundle["entry"]}
    resources = [entry["resource"] for entry in bundle["entry"]]
    patient = next(r for r in resources if r["resourceType"] == "Patient")
    return Record(patient["id"], tuple((r["resourceType"], fhir_json.dumps(local_references(r, by_url, by_identifier)))
                                       for r in resources),
                  frozenset(r["id"].encode() for r in resources))


def copy_id(seed: int, copy: int, original: str) -> str:
    """The id of `original` in copy `copy` (copy 0 keeps it)."""
    if copy == 0:
        return original
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"hearth-bench:{seed}:{copy}:{original}"))


def plan(records: list[Record], seed: int, shared: int, target: int) -> list[Unit]:
    """Copies of the records, round after round in one seeded order, until `target` resources (with the
    `shared` ones) are reached."""
    order = list(range(len(records)))
    random.Random(seed).shuffle(order)
    units: list[Unit] = []
    total = shared
    copy = 0
    while total < target:
        for index in order:
            if total >= target:
                break
            size = len(records[index].resources)
            units.append(Unit(index, copy, size))
            total += size
        copy += 1
    return units


# --- worker processes (forked after load_synthea, so they share the records) ------------------------------

_records: list[Record] = []
_seed = 0
_ctx: Context | None = None


def _init_worker(base_url: str) -> None:
    global _ctx
    _ctx = Context(store=None, base_url=base_url)  # type: ignore[arg-type]  # only the registry is used
    _ctx.registry  # compile the extractors once per process


def copy_resources(record: Record, copy: int, seed: int) -> Iterator[dict]:
    """The resources of copy `copy` of `record`: ids (and the references and identifiers holding them)
    replaced, other identifier values given a copy suffix."""
    mapping = {old: copy_id(seed, copy, old.decode()).encode() for old in record.ids}
    fresh = set(mapping.values())
    for _, text in record.resources:
        if copy:
            text = _UUID.sub(lambda match: mapping.get(match.group(0), match.group(0)), text)
        resource = fhir_json.loads(text)
        if copy:
            for identifier in resource.get("identifier", ()):
                value = identifier.get("value")
                held = _UUID.search(value.encode()) if isinstance(value, str) else None
                if isinstance(value, str) and (held is None or held.group(0) not in fresh):
                    identifier["value"] = f"{value}-{copy}"  # not one of the record's ids: made unique
        yield resource


def prepare(unit: Unit) -> list[tuple]:
    """The Writes creating copy `unit.copy` of a record (validated, stamped, serialised, indexed), flattened."""
    writes = []
    for resource in copy_resources(_records[unit.record], unit.copy, _seed):
        resource_type = resource["resourceType"]
        parse_resource(resource, resource_type)  # validation, as a create would
        writes.append(flatten(crud.version_write(_ctx, SYSTEM, resource_type, resource["id"], resource, previous=0)))
    return writes


# Writes cross the process boundary as plain tuples: unpickling the slotted, frozen entry dataclasses costs
# ~15 us each (a Python __setstate__), ~400 us per resource, more than committing it.

def _flat_entry(entry: Entry) -> tuple:
    if isinstance(entry, CompositeEntry):
        return ("CompositeEntry", entry.param, tuple(_flat_entry(c) for c in entry.components))
    return (type(entry).__name__, *(getattr(entry, name) for name in entry.__slots__))


def _entry(flat: tuple) -> Entry:
    name, *fields = flat
    if name == "CompositeEntry":
        return CompositeEntry(fields[0], tuple(_entry(c) for c in fields[1]))
    return getattr(shapes, name)(*fields)


def flatten(write: Write) -> tuple:
    return (write.type, write.id, write.version_id, write.last_updated, write.body,
            tuple(_flat_entry(e) for e in write.entries), write.previous, write.interaction)


def unflatten(flat: tuple) -> Write:
    type_, id_, version_id, last_updated, body, entries, previous, interaction = flat
    return Write(type_, id_, version_id, last_updated, body, [_entry(e) for e in entries], previous, interaction)


# --- the main process -----------------------------------------------------------------------------------

async def existing_ids(store: SqliteStore, resource_type: str) -> set[str]:
    return await store.run_read(lambda conn: {row[0] for row in conn.execute(
        "SELECT id FROM resources WHERE type = ? AND deleted = 0", (resource_type,))})


async def count_resources(store: SqliteStore) -> int:
    return await store.run_read(lambda conn: conn.execute(
        "SELECT count(*) FROM resources WHERE deleted = 0").fetchone()[0])


async def grow(args: argparse.Namespace) -> dict[str, Any]:
    global _records, _seed
    shared, _records = load_synthea(args.data)
    _seed = args.seed
    units = plan(_records, args.seed, len(shared), args.target)
    pool = multiprocessing.get_context("fork").Pool(args.workers, _init_worker, (args.base_url,))
    store = SqliteStore(str(args.database))  # opened after the fork: no writer thread in the workers
    try:
        _init_worker(args.base_url)
        done_patients = await existing_ids(store, "Patient")
        todo = [u for u in units if copy_id(args.seed, u.copy, _records[u.record].patient_id) not in done_patients]
        stored = {t: await existing_ids(store, t) for t in {r["resourceType"] for r in shared}}
        new_shared = [r for r in shared if r["id"] not in stored[r["resourceType"]]]
        planned = sum(u.size for u in units) + len(shared)
        print(f"{args.database}: plan {planned:,} resources ({len(units):,} records, {len(shared)} shared); "
              f"to write {sum(u.size for u in todo) + len(new_shared):,}", file=sys.stderr)
        start = time.perf_counter()
        if new_shared:
            await store.commit([crud.version_write(_ctx, SYSTEM, r["resourceType"], r["id"], parse_resource(r, None), 0)
                                for r in new_shared])
        written = len(new_shared)
        batch: list[Write] = []
        pending: asyncio.Task | None = None
        for writes in pool.imap(prepare, todo, chunksize=1):
            batch += map(unflatten, writes)
            if len(batch) >= args.batch:
                if pending is not None:
                    await pending
                pending = asyncio.create_task(store.commit(batch))
                await asyncio.sleep(0)  # hand it to the writer thread, then prepare the next batch meanwhile
                written += len(batch)
                batch = []
                elapsed = time.perf_counter() - start
                print(f"  {written:,} written, {written / elapsed:,.0f}/s", file=sys.stderr)
        if pending is not None:
            await pending
        if batch:
            await store.commit(batch)
            written += len(batch)
        elapsed = time.perf_counter() - start
        total = await count_resources(store)
    finally:
        pool.close()
        pool.join()
        await store.close()
    size = sum(p.stat().st_size for p in args.database.parent.glob(args.database.name + "*"))
    return {"database": str(args.database), "target": args.target, "seed": args.seed, "resources": total,
            "written": written, "seconds": round(elapsed, 1), "rate": round(written / elapsed) if elapsed else 0,
            "bytes": size, "workers": args.workers}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.grow", description=__doc__.split("\n\n")[0])
    parser.add_argument("database", type=Path, help="SQLite file (created if missing; grown if smaller)")
    parser.add_argument("--target", type=int, required=True, help="resources wanted (at least)")
    parser.add_argument("--seed", type=int, default=1, help="order of the records and ids of the copies (1)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="preparing processes (CPUs)")
    parser.add_argument("--batch", type=int, default=20000, help="resources per commit, whole records (20000)")
    parser.add_argument("--base-url", default="http://127.0.0.1:8080", help="the server's base URL (extraction)")
    parser.add_argument("--data", type=Path, default=SYNTHEA, help=f"Synthea bundles ({SYNTHEA})")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    result = asyncio.run(grow(parse_args(argv)))
    print(f"{result['resources']:,} resources in {result['database']} ({result['bytes'] / 2**30:.2f} GiB); "
          f"wrote {result['written']:,} in {result['seconds']} s: {result['rate']:,} resources/s "
          f"({result['workers']} workers)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
