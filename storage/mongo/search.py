"""The search IR (search/ir.py) run on MongoDB: filters, sorting, keyset paging, totals and includes.

Value predicates become `$elemMatch` conditions (storage/mongo/filters.py), the clauses on a single-valued date
parameter one of them (storage/single_dates.py). Chains and `_has` run as sub-queries first: a chain finds the
`_id`s ("Type/id") of the targets that match, then matches references to them (`ref.r $in`); `_has` collects the
references of the matching sources, then matches those `_id`s; past storage/mongo/unions.py's IN_LIMIT keys, in
batches (the filter is then a union of conditions, one command each, their answers merged). Sorting uses
the per-parameter `sort.{param}.min|max` values stored with the document, then creation order: `created`, the
change-log seq of the resource's create (storage/mongo/store.py), and `_id` ("Type/id") for the documents written
before resources carried `created` (they sort first, by type and id); paging is by keyset on the same keys, both
ways. Includes are search/ir.py's `include_steps` over `_id`s.

Every operation a search runs gets what is left of its deadline as MongoDB's maxTimeMS (`Deadline`), so the server
stops a search that runs too long (ExecutionTimeout) wherever it is.
"""

from __future__ import annotations

import time
from typing import Any, AsyncIterator, Sequence

from pymongo import ASCENDING, DESCENDING
from pymongo.errors import ExecutionTimeout

from hearth.search.ir import AnyOfPred, ChainPred, Clause, DatePred, HasPred, Include, MissingPred, Query, include_steps
from hearth.storage.base import KeysetMismatch, SearchPage
from hearth.storage.mongo import filters, unions
from hearth.storage.mongo.documents import to_version
from hearth.storage.mongo.filters import NOTHING, Condition
from hearth.storage.mongo.unions import Union
from hearth.storage.single_dates import group_single_dates

_VERSION = {"type": 1, "id": 1, "version_id": 1, "last_updated": 1, "deleted": 1, "body": 1}
_REFERENCES = {"ref.p": 1, "ref.r": 1}


class Deadline:
    """When a search must be done by: what is left of it is each operation's maxTimeMS (`seconds` 0: no limit)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    def ms(self) -> int | None:
        """The milliseconds left (None: no limit); ExecutionTimeout, as MongoDB's own, when none are."""
        if self.seconds <= 0:
            return None
        left = self.end - time.monotonic()
        if left <= 0:
            raise ExecutionTimeout("the search's deadline passed between two of its operations")
        return max(1, int(left * 1000))

    def count_options(self) -> dict[str, int]:
        """count_documents' keyword for the time left (it takes `maxTimeMS`, where find takes `max_time_ms`)."""
        limit = self.ms()
        return {} if limit is None else {"maxTimeMS": limit}


async def build_filter(resources: Any, types: Sequence[str], where: Sequence[Clause], deadline: Deadline,
                       session: Any = None) -> Union:
    """The filter of current (not deleted) resources of `types` (all when empty) matching `where` (chains and
    `_has` are read first, within the deadline)."""
    base: Condition = {"deleted": False}
    if len(types) == 1:
        base["type"] = types[0]
    elif types:
        base["type"] = {"$in": list(types)}
    parts = [[filters.single_dates(item[0].param, item)] if isinstance(item, tuple)
             else await _clause(resources, item, deadline, session) for item in group_single_dates(where)]
    return unions.all_of([[base], *parts])


async def _clause(resources: Any, clause: Clause, deadline: Deadline, session: Any) -> Union:
    return unions.any_of([await _pred(resources, clause.param, clause.param_type, pred, deadline, session)
                          for pred in clause.preds])


async def _pred(resources: Any, param: str, param_type: str, pred: Any, deadline: Deadline, session: Any) -> Union:
    if isinstance(pred, ChainPred):
        targets = await build_filter(resources, pred.target_types, pred.where, deadline, session)
        keys = {doc["_id"] async for doc in _found(resources, targets, {"_id": 1}, deadline, session)}
        return unions.batches(sorted(keys), lambda batch: {"ref": {"$elemMatch": {"p": param, "r": {"$in": batch}}}})
    if isinstance(pred, HasPred):
        sources = await build_filter(resources, (pred.source_type,), pred.where, deadline, session)
        keys = {e["r"] async for doc in _found(resources, sources, _REFERENCES, deadline, session)
                for e in doc.get("ref", ()) if e.get("p") == pred.source_param and "r" in e}
        return unions.batches(sorted(keys), lambda batch: {"_id": {"$in": batch}})
    if isinstance(pred, AnyOfPred):
        return unions.any_of([await _clause(resources, clause, deadline, session) for clause in pred.clauses])
    return [_value(param, param_type, pred)]


def _value(param: str, param_type: str, pred: Any) -> Condition:
    """The condition of a predicate that needs no sub-query."""
    if isinstance(pred, MissingPred):
        if param in ("_id", "_lastUpdated"):  # every resource has both
            return NOTHING if pred.missing else {}
        return filters.missing_filter(param, param_type, pred.missing)
    if param == "_id":
        return filters.id_filter(pred)
    if param == "_lastUpdated" and isinstance(pred, DatePred):  # the document's one instant: lo = hi
        return filters.ranges(pred.ranges, {"lo": "last_updated", "hi": "last_updated"})
    return filters.value_filter(param, pred)


async def _found(resources: Any, union: Union, projection: dict[str, int], deadline: Deadline, session: Any
                 ) -> AsyncIterator[dict[str, Any]]:
    """The documents (`projection` of them) each condition of `union` matches, one command each (so a document
    matched by several conditions comes more than once)."""
    for condition in union:
        async for document in resources.find(condition, projection, session=session, max_time_ms=deadline.ms()):
            yield document


async def match_ids(resources: Any, query: Query, deadline: Deadline, session: Any = None) -> frozenset[str]:
    """The ids of every resource the query's conditions match (for Assertions)."""
    where = await build_filter(resources, query.types, query.where, deadline, session)
    return frozenset([doc["id"] async for doc in _found(resources, where, {"id": 1}, deadline, session)])


async def _count(resources: Any, where: Union, deadline: Deadline, session: Any) -> int:
    """How many documents `where` matches: one count, or the distinct `_id`s its conditions match."""
    if len(where) == 1:
        return await resources.count_documents(where[0], session=session, **deadline.count_options())
    return len({doc["_id"] async for doc in _found(resources, where, {"_id": 1}, deadline, session)})


# --- sorting and paging ----------------------------------------------------------------------------

def sort_fields(query: Query) -> list[tuple[str, int]]:
    """The document fields a query sorts on, then creation order (`created`, then `_id`, so the order is total),
    in the direction of the last sort key, as on SQLite."""
    fields = []
    for key in query.sort:
        if key.param == "_id":
            field = "id"
        elif key.param == "_lastUpdated":
            field = "last_updated"
        else:
            field = f"sort.{key.param}.{'max' if key.descending else 'min'}"
        fields.append((field, DESCENDING if key.descending else ASCENDING))
    last = DESCENDING if query.sort and query.sort[-1].descending else ASCENDING
    return [*fields, ("created", last), ("_id", last)]


def _after(fields: list[tuple[str, int]], values: Sequence[Any]) -> Condition:
    """Rows strictly after the row with these sort `values` in the order of `fields`.

    MongoDB sorts a missing value before any other ascending, after any other descending."""
    branches = []
    equal: list[Condition] = []
    for (field, direction), value in zip(fields, values):
        if direction == ASCENDING:
            beyond = {field: {"$ne": None}} if value is None else {field: {"$gt": value}}
        else:
            beyond = None if value is None else {"$or": [{field: {"$lt": value}}, {field: None}]}
        if beyond is not None:
            branches.append(filters.conjunction(*equal, beyond))
        equal.append({field: value})
    return filters.disjunction(branches)


async def execute(resources: Any, query: Query, deadline: Deadline, session: Any = None) -> SearchPage:
    """One page of a search, with its includes and (when asked for) the total."""
    where = await build_filter(resources, query.types, query.where, deadline, session)
    fields = sort_fields(query)
    page = SearchPage([])
    if query.total in ("accurate", "estimate") or query.summary == "count":
        page.total = await _count(resources, where, deadline, session)
    if query.count <= 0 or query.summary == "count":
        return page
    order, conditions = fields, where
    backwards = query.after is not None and query.after.direction == "prev"
    if backwards:  # walk backwards: reverse the order, reverse the rows after
        order = [(field, -way) for field, way in fields]
    if query.after is not None:
        if len(query.after.values) != len(fields):
            raise KeysetMismatch(f"{len(query.after.values)} key values for an order of {len(fields)} keys")
        after = _after(order, query.after.values)
        conditions = [filters.conjunction(condition, after) for condition in where]
    projection = {**_VERSION, **{field: 1 for field, _ in fields}}
    if query.includes:
        projection.update(_REFERENCES)
    pages = [await resources.find(condition, projection, session=session, max_time_ms=deadline.ms())
             .sort(order).limit(query.count + 1).to_list(None) for condition in conditions]
    documents = pages[0] if len(pages) == 1 else unions.merged(pages, order, query.count + 1)
    page.more = len(documents) > query.count
    documents = documents[:query.count]
    if backwards:
        documents.reverse()
    if documents:
        page.first, page.last = (tuple(unions.get(document, field) for field, _ in fields)
                                 for document in (documents[0], documents[-1]))
    page.matches = [to_version(doc) for doc in documents]
    if query.includes:
        included, page.included_cut = await _included(resources, documents, query, deadline, session)
        page.included = [to_version(doc) for doc in included]
    return page


# --- _include and _revinclude --------------------------------------------------------------------

async def _included(resources: Any, matches: list[dict[str, Any]], query: Query, deadline: Deadline,
                    session: Any) -> tuple[list[dict[str, Any]], bool]:
    """The documents the query's includes bring along for the matches (search/ir.py include_steps, over `_id`s),
    and whether they were cut at its bound."""
    documents = {doc["_id"]: doc for doc in matches}
    steps = include_steps([doc["_id"] for doc in matches], query.includes, query.include_limit)
    try:
        frontier, include = next(steps)
        while True:
            sources = [documents[key] for key in frontier]
            reach = _reverse(include, sources) if include.reverse else _forward(include, sources)
            cursor = resources.find(reach, {**_VERSION, **_REFERENCES}, session=session, max_time_ms=deadline.ms())
            found = await cursor.sort("_id", ASCENDING).to_list(None)
            for doc in found:
                documents.setdefault(doc["_id"], doc)
            frontier, include = steps.send([doc["_id"] for doc in found])
    except StopIteration as done:
        keys, cut = done.value
    return [documents[key] for key in keys], cut


def _forward(include: Include, sources: list[dict[str, Any]]) -> Condition:
    """`_include=Source:param[:Target]`: the targets the sources' references name."""
    keys = set()
    prefix = f"{include.target_type}/" if include.target_type else ""
    for doc in sources:
        if include.source_type not in ("*", doc["type"]):
            continue
        for entry in doc.get("ref", ()):
            key = entry.get("r")
            if key and key.startswith(prefix) and include.param in ("*", entry.get("p")):
                keys.add(key)
    return {"_id": {"$in": sorted(keys)}, "deleted": False}


def _reverse(include: Include, targets: list[dict[str, Any]]) -> Condition:
    """`_revinclude=Source:param[:Target]`: the sources whose references name one of the targets."""
    keys = sorted(doc["_id"] for doc in targets if include.target_type in (None, doc["type"]))
    reference: Condition = {"r": {"$in": keys}}
    if include.param != "*":
        reference["p"] = include.param
    condition: Condition = {"deleted": False, "ref": {"$elemMatch": reference}}
    if include.source_type != "*":
        condition["type"] = include.source_type
    return condition
