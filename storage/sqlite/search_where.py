"""A search `where` (an AND of clauses, each an OR of predicates) as SQL over the `resources` table.

Every clause compiles to a `Part`: a test on the resource row (correlated probes through each index
table's `rid` index) and, when the clause can only be satisfied by entries (no `:not`, no `:missing=true`),
an uncorrelated set of rids read through the (param, value…) indexes. The planner measures each rid set
with a capped count and lets the smallest drive the query, testing the other clauses row by row; so an
unselective clause (`status=final`) is never materialised. When the caller can read its page straight off
an index in output order (one type in creation order or by _lastUpdated, or the first sort parameter's own index) and no
clause is selective, nothing drives: the caller walks that index and stops after one page.

A chain or `_has` that is the only candidate driver is measured by reading its rids (up to ESTIMATE_CAP) into a
list, so it is evaluated once: the page and the total read the list. Tests that look at nothing but the rid
(index probes, such as `:not`) are applied to the list first, so no resource row is read for a rid they rule out.
A `_has` on one type is read as the ids its sources reference instead: the row test `type = ? AND id IN (ids)` is
answered through the (type, id) index, which carries the rid: no lookup by type and id per source.

Chains and `_has` test the related row in place (an uncorrelated IN list inside a correlated subquery is
rebuilt for every row tested); their rid sets are joins that stream, so a capped count stops early. A clause is
compiled once per place it is used (its test and its rid set share the compiled sub-clauses), so the work grows with
the depth of a chain, not twice over per level.

Size: SQLite refuses an expression more than 1,000 deep and a compound SELECT of more than 500 terms; a long
flat `a OR b OR …` is as deep as it is long. So ORs and ANDs of many terms are nested groups (search_preds.joined)
and unions of many rid sets nested compounds (union_all): a clause with thousands of values still compiles.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any, Sequence

import orjson

from hearth.search.ir import AnyOfPred, ChainPred, Clause, HasPred
from hearth.storage.single_dates import group_single_dates
from hearth.storage.sqlite.search_dates import single_date_cond
from hearth.storage.sqlite.search_preds import RESOURCE, Cond, compile_pred, joined, tabled, tabled_joins, union_all

ESTIMATE_CAP = 5000  # rows counted at most per clause when choosing the driver
_SMALL = ESTIMATE_CAP // 5  # a plain clause this selective drives without measuring chains and _has
_NEVER = "SELECT NULL AS rid WHERE 0"
_LISTED = "SELECT value AS rid FROM json_each(?)"  # a driver read into a list: its rids as a JSON array
_FEW_TYPES = 8  # types listed as arguments at most; more are one JSON argument
_MEASURED = 100  # parts measured in one statement at most, one column each (SQLite allows 2,000)


@dataclass(frozen=True, slots=True)
class Part:
    test: str  # a boolean over the resource alias
    args: tuple
    rids: str | None = None  # SELECT of the rids that satisfy it, if positive
    rid_args: tuple = ()
    nested: bool = False  # a chain or _has: costlier to measure
    rid_only: bool = False  # `test` reads nothing of the resource row but its rid
    exact: bool = False  # `rids` are all current resources of the searched types (no row check needed)
    ids: str | None = None  # `_has` on one type: SELECT of the ids of that type its sources reference
    id_args: tuple = ()
    keyed: str | None = None  # a driver read as ids: its test on the row, through the (type, id) index
    keyed_args: tuple = ()


def _any(parts: Sequence[Part]) -> Part:
    """OR of parts."""
    if len(parts) == 1:
        return parts[0]
    test = "(" + joined(" OR ", [p.test for p in parts]) + ")"
    args = tuple(a for p in parts for a in p.args)
    rid_only = all(p.rid_only for p in parts)
    if any(p.rids is None for p in parts):
        return Part(test, args, rid_only=rid_only)
    return Part(test, args, union_all([p.rids for p in parts]), tuple(a for p in parts for a in p.rid_args),
                any(p.nested for p in parts), rid_only, all(p.exact for p in parts))


def _typed(column: str, types: Sequence[str]) -> tuple[str, tuple]:
    """` AND column IN (types)` and its arguments, or nothing for every type (many types: one JSON argument, as
    every clause of a search on them repeats the list)."""
    if not types:
        return "", ()
    if len(types) > _FEW_TYPES:
        return f" AND {column} IN (SELECT value FROM json_each(?))", (orjson.dumps(list(types)).decode(),)
    return f" AND {column} IN ({','.join('?' * len(types))})", tuple(types)


def _driven(driver: Part, alias: str) -> tuple[str, tuple]:
    """The condition by which `driver` selects the rows of `alias`, and its arguments."""
    if driver.keyed is not None:
        return driver.keyed, driver.keyed_args
    return f"{alias}.rid IN ({driver.rids})", driver.rid_args


def _cond_part(param: str, cond: Cond, alias: str, types: Sequence[str]) -> Part:
    if not cond.alts:
        return Part("1", (), rid_only=True) if cond.negated else Part("0", (), _NEVER, rid_only=True)
    tests = tabled(cond.alts)
    alt_args = tuple(a for _, args in tests for a in args)
    alts = joined(" OR ", [f"({sql})" for sql, _ in tests])
    if cond.table == RESOURCE:
        test = alts.format(r=alias)
        return Part(f"NOT ({test})" if cond.negated else f"({test})", alt_args)
    table = cond.table
    probe = (f"EXISTS (SELECT 1 FROM {table} e INDEXED BY {table}_rid WHERE e.rid = {alias}.rid AND e.param = ? "
             f"AND ({alts}))")
    if cond.negated:
        return Part("NOT " + probe, (param, *alt_args), rid_only=True)
    # index rows exist for current resources only, and carry their type: these rids need no row check
    typed, type_args = _typed("e.resource_type", types)
    joins = tabled_joins(cond.alts)
    rids = union_all([f"SELECT e.rid FROM {head}{table} e WHERE e.param = ? AND {sql}{typed}" for head, sql, _ in joins])
    rid_args = tuple(a for head, _, args in joins
                     for a in ((*args, param, *type_args) if head else (param, *args, *type_args)))
    return Part(probe, (param, *alt_args), rids, rid_args, rid_only=True, exact=True)


def _list_key(part: Part, parts: Sequence[Part]) -> tuple:
    """A listed driver's identity: its rids and the rid-only tests applied to the list (the same rid set can
    drive queries at several depths, with other clauses beside it)."""
    return (part.rids, part.rid_args,
            tuple((p.test, p.args) for p in parts if p is not part and p.rid_only))


class WhereCompiler:
    """Compiles the `where` of one query on one connection (it measures candidate drivers there)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self._sizes: dict[tuple[str, tuple], int] = {}
        self._lists: dict[tuple, Part] = {}  # drivers read into a list, by _list_key (see _listed)
        self._parts: dict[tuple, Part] = {}  # compiled clauses, by (clause, alias, depth, types)

    def condition(self, types: Sequence[str], where: Sequence[Clause], alias: str = "r0", ordered: bool = False,
                  depth: int = 0, drive: bool = True) -> tuple[str, tuple, bool]:
        """The WHERE body selecting current resources of `types` (all if empty) that match `where`, its
        arguments, and whether a clause's rid set drives it.

        `ordered`: the caller can read its page off an index in output order, so a driver is only worth
        it when it is selective. `drive=False`: tests only, for a row the enclosing query already has."""
        driver, tests, args, _ = self._plan(types, where, alias, ordered, depth, drive)
        if driver is None:
            return tests, args, False
        driven, driven_args = _driven(driver, alias)
        return f"{driven} AND {tests}", (*driven_args, *args), True

    def rid_set(self, types: Sequence[str], where: Sequence[Clause], depth: int) -> tuple[str, tuple]:
        """A SELECT of the rids matching (repeats allowed). It streams: a LIMIT on it stops reading early."""
        alias = f"r{depth}"
        driver, tests, args, bare = self._plan(types, where, alias, False, depth, True)
        if driver is None:
            return f"SELECT {alias}.rid FROM resources {alias} WHERE {tests}", args
        if bare:
            return f"SELECT d.rid FROM ({driver.rids}) d", driver.rid_args
        if driver.keyed is not None:
            driven, driven_args = _driven(driver, alias)
            return f"SELECT {alias}.rid FROM resources {alias} WHERE {driven} AND {tests}", (*driven_args, *args)
        return (f"SELECT {alias}.rid FROM ({driver.rids}) d CROSS JOIN resources {alias} ON {alias}.rid = d.rid "
                f"WHERE {tests}", (*driver.rid_args, *args))

    def count(self, types: Sequence[str], where: Sequence[Clause], alias: str = "r0") -> tuple[str, tuple]:
        """A SELECT of the number of current resources of `types` matching `where`: off the driving index alone
        when its rids need no other test."""
        driver, tests, args, bare = self._plan(types, where, alias, False, 0, True)
        if bare:
            return f"SELECT count(*) FROM (SELECT DISTINCT d.rid FROM ({driver.rids}) d)", driver.rid_args
        if driver is None:
            return f"SELECT count(*) FROM resources {alias} WHERE {tests}", args
        driven, driven_args = _driven(driver, alias)
        return f"SELECT count(*) FROM resources {alias} WHERE {driven} AND {tests}", (*driven_args, *args)

    def _plan(self, types: Sequence[str], where: Sequence[Clause], alias: str, ordered: bool, depth: int,
              drive: bool) -> tuple[Part | None, str, tuple, bool]:
        """(the driving part, the remaining tests, their arguments, whether the driver's rids are the answer:
        exact, and no other test)."""
        parts = [_cond_part(item[0].param, single_date_cond(item), alias, types) if isinstance(item, tuple)
                 else self._clause(item, alias, depth, types) for item in group_single_dates(where)]
        driver = self._driver(parts, ordered, alias, types) if drive else None
        if driver is not None and (driver.rids == _LISTED or driver.keyed is not None):
            # a list stands for its part (and a list of rids for the rid-only tests too, applied to it)
            stood_for = [p for p in parts if self._lists.get(_list_key(p, parts)) is driver]
            parts = [p for p in parts if all(p is not q for q in stood_for)
                     and not (p.rid_only and driver.rids == _LISTED)]
        conds: list[str] = []
        args: list[Any] = []
        if types:
            column = f"+{alias}.type" if driver else f"{alias}.type"  # `+`: keep the planner on the driver
            conds.append(f"{column} = ?" if len(types) == 1 else f"{column} IN ({','.join('?' * len(types))})")
            args.extend(types)
        conds.append(f"{alias}.deleted = 0")
        rest = [part for part in parts if part is not driver]
        for part in rest:
            conds.append(part.test)
            args.extend(part.args)
        return driver, joined(" AND ", conds), tuple(args), driver is not None and driver.exact and not rest

    def _driver(self, parts: list[Part], ordered: bool, alias: str, types: Sequence[str]) -> Part | None:
        """The part whose rids drive the query (None: no clause is worth it), as a list when it is small."""
        candidates = [p for p in parts if p.rids is not None]
        if not candidates:
            return None
        listed = next((self._lists[key] for p in candidates if (key := _list_key(p, parts)) in self._lists), None)
        if listed is not None:  # read already, for this query's page (now: its total)
            return listed
        if len(candidates) == 1 and not ordered:
            return candidates[0]
        plain = [p for p in candidates if not p.nested]
        if plain and len(plain) < len(candidates):
            sizes = self._measure(plain)
            if min(sizes) < _SMALL:
                return plain[sizes.index(min(sizes))]
        if len(candidates) == 1 and candidates[0].nested:  # measured by reading it, so it is evaluated once
            part = candidates[0]
            if part.ids is not None:
                ids = self._read(part.ids, part.id_args)
                return None if len(ids) >= ESTIMATE_CAP else self._keyed(part, parts, alias, types[0], ids)
            rids = self._read(part.rids, part.rid_args)
            return None if len(rids) >= ESTIMATE_CAP else self._listed(part, parts, alias, rids)
        sizes = self._measure(candidates)
        best = min(range(len(candidates)), key=sizes.__getitem__)
        if ordered and sizes[best] >= ESTIMATE_CAP:
            return None
        return candidates[best]

    def _read(self, sql: str, args: tuple) -> list[Any]:
        """The first column of `sql`'s rows (a part's rids or ids), up to ESTIMATE_CAP of them."""
        return [row[0] for row in self.conn.execute(f"SELECT * FROM ({sql}) LIMIT {ESTIMATE_CAP}", args)]

    def _keyed(self, driver: Part, parts: list[Part], alias: str, resource_type: str, ids: list[str]) -> Part:
        """A `_has` driver as the ids its sources reference: a test on the row that SQLite answers through the
        (type, id) index, which carries the rid (no lookup by type and id per source, as its rids would take)."""
        args = (resource_type, orjson.dumps(sorted(set(ids))).decode())
        test = "{a}.type = ? AND {a}.id IN (SELECT value FROM json_each(?))"
        keyed = Part(driver.test, driver.args, f"SELECT k.rid FROM resources k WHERE {test.format(a='k')}", args,
                     keyed=test.format(a=alias), keyed_args=args)
        self._lists[_list_key(driver, parts)] = keyed
        return keyed

    def _listed(self, driver: Part, parts: list[Part], alias: str, rids: list[int]) -> Part:
        """A chain or `_has` driver as the list of its rids, so that the page and the total do not evaluate it
        again, less the rids failing the other parts' rid-only tests: those are checked on the index tables
        alone, so no resource row is read for a rid they rule out."""
        tests = [p for p in parts if p is not driver and p.rid_only]
        rids = sorted(set(rids))
        if tests and rids:
            # the tests name the resource alias; here that is the list, which has the rid and nothing else
            rows = self.conn.execute(f"SELECT {alias}.rid FROM ({_LISTED}) {alias} WHERE "
                                     + joined(" AND ", [test.test for test in tests]),
                                     (orjson.dumps(rids).decode(), *(a for test in tests for a in test.args)))
            rids = [row[0] for row in rows]
        listed = Part(driver.test, driver.args, _LISTED, (orjson.dumps(rids).decode(),), rid_only=driver.rid_only,
                      exact=driver.exact)
        self._lists[_list_key(driver, parts)] = listed
        return listed

    def _measure(self, parts: list[Part]) -> list[int]:
        """Each part's number of rids, counted up to ESTIMATE_CAP, in one statement."""
        todo = [p for p in parts if (p.rids, p.rid_args) not in self._sizes]
        for start in range(0, len(todo), _MEASURED):
            batch = todo[start:start + _MEASURED]
            sql = "SELECT " + ", ".join(f"(SELECT count(*) FROM (SELECT 1 FROM ({p.rids}) LIMIT {ESTIMATE_CAP}))"
                                        for p in batch)
            row = self.conn.execute(sql, tuple(a for p in batch for a in p.rid_args)).fetchone()
            for part, size in zip(batch, row):
                self._sizes[(part.rids, part.rid_args)] = size
        return [self._sizes[(p.rids, p.rid_args)] for p in parts]

    def _clause(self, clause: Clause, alias: str, depth: int, types: Sequence[str]) -> Part:
        key = (clause, alias, depth, tuple(types))
        part = self._parts.get(key)
        if part is None:
            part = self._parts[key] = self._compile(clause, alias, depth, types)
        return part

    def _compile(self, clause: Clause, alias: str, depth: int, types: Sequence[str]) -> Part:
        if all(isinstance(pred, (ChainPred, HasPred, AnyOfPred)) for pred in clause.preds):
            return _any([self._nested(clause, pred, alias, depth, types) for pred in clause.preds])
        conds = [compile_pred(clause.param, clause.param_type, pred) for pred in clause.preds]
        if len({(cond.table, cond.negated) for cond in conds}) == 1 and not conds[0].negated:
            # one value's entry or another's: one entry meeting any of their alternatives (so they can be tabled)
            conds = [Cond(conds[0].table, tuple(alt for cond in conds for alt in cond.alts))]
        return _any([_cond_part(clause.param, cond, alias, types) for cond in conds])

    def _nested(self, clause: Clause, pred: ChainPred | HasPred | AnyOfPred, alias: str, depth: int,
                types: Sequence[str]) -> Part:
        if isinstance(pred, ChainPred):
            return self._chain(clause.param, pred, alias, depth, types)
        if isinstance(pred, HasPred):
            return self._has(pred, alias, depth, types)
        return _any([self._clause(inner, alias, depth, types) for inner in pred.clauses])

    def _chain(self, param: str, pred: ChainPred, alias: str, depth: int, types: Sequence[str]) -> Part:
        """A local reference through `param`, from a resource of `types` (all if empty), to a current target
        matching the chained `where`."""
        target = f"r{depth + 1}"
        tests, test_args, _ = self.condition(pred.target_types, pred.where, target, depth=depth + 1, drive=False)
        test = (f"EXISTS (SELECT 1 FROM idx_reference e INDEXED BY idx_reference_rid CROSS JOIN resources {target} "
                f"ON {target}.type = e.target_type AND {target}.id = e.target_id WHERE e.rid = {alias}.rid "
                f"AND e.param = ? AND {tests})")
        inner, inner_args = self.rid_set(pred.target_types, pred.where, depth + 1)
        # only references from `types` count: a parameter like `patient` is shared by many types, and the
        # others' references would make the measured size (and a driven rid list) many times too large
        typed, type_args = _typed("e.resource_type", types)
        rids = (f"SELECT e.rid FROM ({inner}) i CROSS JOIN resources t ON t.rid = i.rid CROSS JOIN idx_reference e "
                f"ON e.param = ? AND e.target_id = t.id AND e.target_type = t.type{typed}")
        return Part(test, (param, *test_args), rids, (*inner_args, param, *type_args), nested=True, rid_only=True,
                    exact=True)

    def _has(self, pred: HasPred, alias: str, depth: int, types: Sequence[str]) -> Part:
        """A current `source_type` resource matching `where` references this one through `source_param`."""
        source = f"r{depth + 1}"
        tests, test_args, _ = self.condition((pred.source_type,), pred.where, source, depth=depth + 1, drive=False)
        test = (f"EXISTS (SELECT 1 FROM idx_reference e CROSS JOIN resources {source} ON {source}.rid = e.rid "
                f"WHERE e.param = ? AND e.target_id = {alias}.id AND e.target_type = {alias}.type "
                f"AND {tests})")
        inner, inner_args = self.rid_set((pred.source_type,), pred.where, depth + 1)
        rids = (f"SELECT t.rid FROM ({inner}) i CROSS JOIN idx_reference e INDEXED BY idx_reference_rid "
                f"ON e.rid = i.rid CROSS JOIN resources t ON t.type = e.target_type AND t.id = e.target_id "
                f"WHERE e.param = ?")
        ids, id_args = None, ()
        if len(types) == 1:  # the referenced ids, for a driver read as ids (_keyed)
            ids = ("SELECT DISTINCT e.target_id FROM ({inner}) i "
                   "CROSS JOIN idx_reference e INDEXED BY idx_reference_rid "
                   "ON e.rid = i.rid WHERE e.param = ? AND e.target_type = ?").format(inner=inner)
            id_args = (*inner_args, pred.source_param, types[0])
        return Part(test, (pred.source_param, *test_args), rids, (*inner_args, pred.source_param), nested=True,
                    ids=ids, id_args=id_args)
