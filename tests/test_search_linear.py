"""Chains and `_has` cost work linear in their depth, counted at depths 3, 6 and 12 with the depth cap raised: the
parser's registry lookups and the IR's size, SQLite's compile (leaf compilations, SQL sent) and MongoDB's queries.
(Before, the parser did (target types per level) ** depth lookups, and SQLite compiled each level twice over.)"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import pytest

from hearth.search.registry import default_registry
from conftest import make_store
from hearth.search.ir import ChainPred, Clause, HasPred, Query
from hearth.search.limits import SearchLimits
from hearth.search.parse import parse_search
from hearth.storage.sqlite import search as sqlite_search, search_where
from hearth.storage.sqlite.writer_process import connect

LIMITS = SearchLimits(max_chain_depth=12)


class CountingRegistry:
    """The registry, counting its lookups by (type, code)."""

    def __init__(self) -> None:
        self.registry = default_registry()
        self.lookups = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.registry, name)

    def get(self, resource_type: str, code: str) -> Any:
        self.lookups += 1
        return self.registry.get(resource_type, code)


def parse(resource_type: str, key: str, registry: Any = None) -> Query:
    return parse_search((resource_type,), [(key, "x")], registry=registry or default_registry(), strict=True,
                        default_count=20, max_count=100, base_url="http://h", limits=LIMITS)


def size(node: Any) -> int:
    """Nodes in the IR below `node`, shared sub-trees counted each time they are reached."""
    if isinstance(node, Clause):
        return 1 + sum(size(pred) for pred in node.preds)
    if isinstance(node, (ChainPred, HasPred)):
        return 1 + sum(size(clause) for clause in node.where)
    return 1


def assert_linear(cost: dict[int, Any]) -> None:
    """The same growth from depth 3 to 6 as from 6 to 12, per level."""
    assert cost[12] - cost[6] == 2 * (cost[6] - cost[3]), cost


CHAINS = [("Task", "based-on", "_id"), ("Task", "subject", "_id"), ("Organization", "partof", "name")]


@pytest.mark.parametrize("resource_type, step, leaf", CHAINS)
def test_parsing_a_chain_is_linear_in_its_depth(resource_type, step, leaf):
    lookups, nodes = {}, {}
    for depth in (1, 2, 3, 6, 12):
        registry = CountingRegistry()
        query = parse(resource_type, ".".join([step] * depth + [leaf]), registry)
        lookups[depth], nodes[depth] = registry.lookups, size(query.where[0])
        if depth == 3:  # (checked early: at depth 12, the exponential parser would not end)
            assert lookups[3] - lookups[2] == lookups[2] - lookups[1], lookups
    assert_linear(lookups)
    assert_linear(nodes)


def deep(kind: str, depth: int) -> str:
    """Organizations' `partof`, `depth` levels deep, as a chain or as nested `_has`."""
    step = "partof." if kind == "chain" else "_has:Organization:partof:"
    return step * depth + "name"


@pytest.mark.parametrize("kind", ["chain", "_has"])
def test_sqlite_compiles_a_deep_query_in_linear_work(kind, tmp_path, monkeypatch):
    # depths 3 to 5: SQLite's parser takes subqueries nested about six levels deep at most
    store = make_store("sqlite", tmp_path)
    conn = connect(str(tmp_path / "hearth.db"), "NORMAL")
    compiled = []
    compile_pred = search_where.compile_pred
    monkeypatch.setattr(search_where, "compile_pred", lambda *args: compiled.append(1) or compile_pred(*args))
    sent: list[str] = []
    conn.set_trace_callback(sent.append)
    leaves, text = {}, {}
    try:
        for depth in (3, 4, 5):
            compiled.clear()
            sent.clear()
            sqlite_search.execute(conn, with_total(parse("Organization", deep(kind, depth))))
            leaves[depth], text[depth] = len(compiled), sum(map(len, sent))
    finally:
        conn.close()
        asyncio.run(store.close())
    assert leaves == {3: 1, 4: 1, 5: 1}  # the one `name` clause, compiled once (before: 2 ** depth times)
    assert abs((text[5] - text[4]) - (text[4] - text[3])) < 100, text


def with_total(query: Query) -> Query:
    return replace(query, total="accurate")


async def test_mongodb_runs_a_deep_chain_in_linear_work(tmp_path):
    # Task.based-on reaches 13 types that have `based-on` again, each with targets of its own (before: an IR twice as
    # large a level, so twice the sub-queries)
    store = make_store("mongo", tmp_path)
    await store.open()
    finds = []
    find = store.resources.find
    store.resources.find = lambda *args, **kwargs: finds.append(1) or find(*args, **kwargs)
    count = {}
    for depth in (1, 2, 3, 6, 12):
        finds.clear()
        await store.search(with_total(parse("Task", "based-on." * depth + "_id")))
        count[depth] = len(finds)
        if depth == 3:
            assert count[3] - count[2] == count[2] - count[1], count
    assert_linear(count)
