"""SQLite index tables, one per entry shape (search/entries.py), and writing a resource's entries.

Every row carries `rid` (resources.rid), `param` and `resource_type` (the resource's type: `code` or `patient`
are parameters of dozens of types). Covering indexes run (param, value…, resource_type, rid), so a selective
predicate never scans all resources of a type, and its rids come typed off the index alone, with no lookup in
`resources` (a count, or the inner side of a chain or `_has`, reads nothing else). The `*_rid` indexes, which
test one resource's entries in place (the probes of search_where.py, sort values), lead with (rid, param) and
carry the values those tests read, so a probe is one seek that touches neither the resource's other parameters'
rows nor the table (~35% off a walk testing code and date per Observation, bench/search.py). Entries belong to the
current version: a write replaces them all.
"""

from __future__ import annotations

import re
import sqlite3
from operator import attrgetter
from typing import Iterable

import orjson

from hearth.search.entries import (CompositeEntry, DateEntry, Entry, NumberEntry, QuantityEntry, ReferenceEntry,
                            StringEntry, TokenEntry, UriEntry)

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS idx_token (rid INTEGER NOT NULL, param TEXT NOT NULL, system TEXT, code TEXT,
        text TEXT, type_system TEXT, type_code TEXT, resource_type TEXT)""",
    "CREATE INDEX IF NOT EXISTS idx_token_code ON idx_token (param, code, system, resource_type, rid)",
    "CREATE INDEX IF NOT EXISTS idx_token_rid ON idx_token (rid, param, code)",
    """CREATE TABLE IF NOT EXISTS idx_string (rid INTEGER NOT NULL, param TEXT NOT NULL, norm TEXT, exact TEXT,
        resource_type TEXT)""",
    "CREATE INDEX IF NOT EXISTS idx_string_norm ON idx_string (param, norm, resource_type, rid)",
    "CREATE INDEX IF NOT EXISTS idx_string_rid ON idx_string (rid, param, norm)",
    """CREATE TABLE IF NOT EXISTS idx_date (rid INTEGER NOT NULL, param TEXT NOT NULL, lo TEXT, hi TEXT,
        resource_type TEXT)""",
    "CREATE INDEX IF NOT EXISTS idx_date_lo ON idx_date (param, lo, hi, resource_type, rid)",
    "CREATE INDEX IF NOT EXISTS idx_date_hi ON idx_date (param, hi, lo, resource_type, rid)",
    "CREATE INDEX IF NOT EXISTS idx_date_rid ON idx_date (rid, param, lo, hi)",
    """CREATE TABLE IF NOT EXISTS idx_number (rid INTEGER NOT NULL, param TEXT NOT NULL, value REAL, lo REAL, hi REAL,
        resource_type TEXT)""",
    "CREATE INDEX IF NOT EXISTS idx_number_value ON idx_number (param, value, resource_type, rid)",
    "CREATE INDEX IF NOT EXISTS idx_number_rid ON idx_number (rid, param, value)",
    """CREATE TABLE IF NOT EXISTS idx_quantity (rid INTEGER NOT NULL, param TEXT NOT NULL, value REAL, lo REAL,
        hi REAL, system TEXT, code TEXT, unit TEXT, resource_type TEXT)""",
    "CREATE INDEX IF NOT EXISTS idx_quantity_code ON idx_quantity (param, code, value, resource_type, rid)",
    "CREATE INDEX IF NOT EXISTS idx_quantity_value ON idx_quantity (param, value, resource_type, rid)",
    "CREATE INDEX IF NOT EXISTS idx_quantity_rid ON idx_quantity (rid, param)",
    """CREATE TABLE IF NOT EXISTS idx_reference (rid INTEGER NOT NULL, param TEXT NOT NULL, target_type TEXT,
        target_id TEXT, url TEXT, version TEXT, identifier_system TEXT, identifier_value TEXT, resource_type TEXT)""",
    """CREATE INDEX IF NOT EXISTS idx_reference_target ON idx_reference (param, target_id, target_type, resource_type,
        rid)""",
    # absolute URLs and canonicals; partial (like the next), so the many local references cost nothing to write
    """CREATE INDEX IF NOT EXISTS idx_reference_url ON idx_reference (param, url, resource_type, rid)
        WHERE url IS NOT NULL""",
    # `:identifier`
    """CREATE INDEX IF NOT EXISTS idx_reference_identifier ON idx_reference (param, identifier_value, resource_type,
        rid)
        WHERE identifier_value IS NOT NULL""",
    "CREATE INDEX IF NOT EXISTS idx_reference_rid ON idx_reference (rid, param, target_type, target_id)",
    "CREATE TABLE IF NOT EXISTS idx_uri (rid INTEGER NOT NULL, param TEXT NOT NULL, value TEXT, resource_type TEXT)",
    "CREATE INDEX IF NOT EXISTS idx_uri_value ON idx_uri (param, value, resource_type, rid)",
    "CREATE INDEX IF NOT EXISTS idx_uri_rid ON idx_uri (rid, param, value)",
    # composite: the tuple kept whole (JSON), its components' fields read in SQL (component_field); `key` (the
    # first component's token code, if it is a token) narrows the rows first
    """CREATE TABLE IF NOT EXISTS idx_composite (rid INTEGER NOT NULL, param TEXT NOT NULL, key TEXT,
        components BLOB, resource_type TEXT)""",
    "CREATE INDEX IF NOT EXISTS idx_composite_key ON idx_composite (param, key, resource_type, rid)",
    "CREATE INDEX IF NOT EXISTS idx_composite_rid ON idx_composite (rid, param)",
)

# the (param, value…, resource_type, rid) indexes, rebuilt by `migrate`: those of SCHEMA naming resource_type
DRIVERS = tuple(name for statement in SCHEMA
                for name in re.findall(r"INDEX IF NOT EXISTS (\w+) ON \w+ \([^)]*resource_type", statement))

TABLES = ("idx_token", "idx_string", "idx_date", "idx_number", "idx_quantity", "idx_reference", "idx_uri",
          "idx_composite")

_ROWS = {  # shape: (table, the row of an entry, without its leading rid)
    TokenEntry: ("idx_token", lambda e: (e.param, e.system, e.code, e.text, e.type_system, e.type_code)),
    StringEntry: ("idx_string", lambda e: (e.param, e.norm, e.exact)),
    DateEntry: ("idx_date", lambda e: (e.param, e.lo, e.hi)),
    NumberEntry: ("idx_number", lambda e: (e.param, e.value, e.lo, e.hi)),
    QuantityEntry: ("idx_quantity", lambda e: (e.param, e.value, e.lo, e.hi, e.system, e.code, e.unit)),
    ReferenceEntry: ("idx_reference", lambda e: (e.param, e.target_type, e.target_id, e.url, e.version,
                                                 e.identifier_system, e.identifier_value)),
    UriEntry: ("idx_uri", lambda e: (e.param, e.value)),
    CompositeEntry: ("idx_composite", lambda e: (e.param, composite_key(e), encode_components(e))),
}

Rows = dict[str, list[tuple]]  # table: rows without rid, what a resource's entries are in the index tables


# a composite's components are stored as JSON rows [shape number, field values...] (fields in __slots__ order)
_COMPONENT_SHAPES = (TokenEntry, StringEntry, DateEntry, NumberEntry, QuantityEntry, ReferenceEntry, UriEntry)
_SHAPE_NUMBERS = {shape: number for number, shape in enumerate(_COMPONENT_SHAPES)}
_FIELDS = {shape: attrgetter(*shape.__slots__) for shape in _COMPONENT_SHAPES}


def encode_components(entry: CompositeEntry) -> bytes:
    """A composite's components as JSON: [[shape number, field values...], ...]."""
    return orjson.dumps([[_SHAPE_NUMBERS[type(c)], *_FIELDS[type(c)](c)] for c in entry.components])


def component_field(position: int, shape: type, field: str) -> str:
    """SQL reading `field` of the component at `position` (an entry of `shape`) of the stored composite `e`."""
    return f"(CAST(e.components AS TEXT) ->> '$[{position}][{1 + shape.__slots__.index(field)}]')"


def composite_key(entry: CompositeEntry) -> str | None:
    """The first component's code when it is a token (what a composite search usually fixes)."""
    first = entry.components[0] if entry.components else None
    return first.code if isinstance(first, TokenEntry) else None


# parameters every search reads off the resources row (search_preds.py, search_sort.py): their entries would
# only cost writes (two of a resource's ~16 rows, 7 of its ~50 B-tree inserts)
_ON_THE_ROW = frozenset({"_id", "_lastUpdated"})


def entry_rows(entries: Iterable[Entry]) -> Rows:
    """`entries` as rows of the index tables (plain tuples: cheap to hand to the writer process), less those of
    the parameters kept on the resources row."""
    rows: Rows = {}
    for entry in entries:
        if entry.param in _ON_THE_ROW:
            continue
        table, row = _ROWS[type(entry)]
        rows.setdefault(table, []).append(row(entry))
    return rows


def replace_entries(conn: sqlite3.Connection, rid: int, resource_type: str, rows: Rows, existed: bool) -> None:
    """Make `rows` (from `entry_rows`) the index of resource `rid` (dropping the previous version's)."""
    if existed:
        for table in TABLES:
            conn.execute(f"DELETE FROM {table} WHERE rid = ?", (rid,))
    for table, items in rows.items():
        conn.executemany(f"INSERT INTO {table} VALUES (?{',?' * (len(items[0]) + 1)})",
                         [(rid, *row, resource_type) for row in items])


def migrate(conn: sqlite3.Connection) -> bool:
    """Bring index tables made before rows carried `resource_type` up to date (the column filled from
    `resources`, the driving indexes rebuilt with it), in one transaction; whether there was anything to do."""
    stale = [table for table in TABLES
             if "resource_type" not in {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}]
    if not stale:
        return False
    conn.execute("BEGIN IMMEDIATE")
    for table in stale:
        conn.execute(f"ALTER TABLE {table} ADD COLUMN resource_type TEXT")
        conn.execute(f"UPDATE {table} SET resource_type = (SELECT r.type FROM resources r WHERE r.rid = {table}.rid)")
    for name in DRIVERS:
        conn.execute(f"DROP INDEX IF EXISTS {name}")
    for statement in SCHEMA:
        conn.execute(statement)
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the rewrite is in the WAL: every read would look there first
    return True
