"""A search's filter as a union of conditions, so that no command carries more than IN_LIMIT keys of one chain or
`_has`.

A chain or `_has` whose sub-query matches more than IN_LIMIT resources becomes one condition per batch of their
keys (an `$in` of 10,000 keys is about 0.5 MB, far below MongoDB's 16 MB command limit, however many a sub-query
matches); a clause is the union of its predicates' conditions, a conjunction of clauses the union of every
combination of one condition from each. A search runs one command per condition and merges the answers: a page by
its sort keys (each condition's first rows, in MongoDB's order), a total by `_id`. With no sub-query that large the
union is one condition, the one command of a search.
"""

from __future__ import annotations

import functools
import itertools
from typing import Any, Callable, Sequence

from hearth.storage.mongo import filters
from hearth.storage.mongo.filters import NOTHING, Condition

IN_LIMIT = 10_000  # keys of one chain or `_has` in one command

Union = list[Condition]  # the documents any of the conditions match (at least one condition)


def batches(keys: Sequence[str], condition: Callable[[list[str]], Condition]) -> Union:
    """`condition` of each batch of at most IN_LIMIT `keys` (of none, when there are none)."""
    return [condition(list(keys[start:start + IN_LIMIT])) for start in range(0, max(len(keys), 1), IN_LIMIT)]


def any_of(unions: list[Union]) -> Union:
    """The union of `unions`: their n-th conditions ORed together, as many as the longest has (NOTHING for none)."""
    longest = max((len(union) for union in unions), default=0)
    return [filters.disjunction([union[n] for union in unions if n < len(union)]) for n in range(longest)] or [NOTHING]


def all_of(unions: list[Union]) -> Union:
    """The intersection of `unions`: the conjunction of each combination of one condition from every union."""
    return [filters.conjunction(*combination) for combination in itertools.product(*unions)]


def get(document: dict[str, Any], path: str) -> Any:
    """The value at a dotted `path` of `document` (None when missing)."""
    for part in path.split("."):
        if not isinstance(document, dict):
            return None
        document = document.get(part)
    return document


def merged(pages: list[list[dict[str, Any]]], order: list[tuple[str, int]], limit: int) -> list[dict[str, Any]]:
    """The first `limit` documents of `pages` (each in `order`), in `order`, each once."""
    unique = list({document["_id"]: document for page in pages for document in page}.values())
    return sorted(unique, key=functools.cmp_to_key(lambda a, b: _compare(a, b, order)))[:limit]


def _compare(a: dict[str, Any], b: dict[str, Any], order: list[tuple[str, int]]) -> int:
    for field, direction in order:
        left, right = _bson_rank(get(a, field)), _bson_rank(get(b, field))
        if left != right:
            return direction if left > right else -direction
    return 0


def _bson_rank(value: Any) -> tuple[int, Any]:
    """`value` where MongoDB sorts it: missing and null first, then numbers, then strings (by code point: UTF-8
    byte order), then booleans."""
    if value is None:
        return 0, 0
    if isinstance(value, bool):
        return 3, value
    if isinstance(value, (int, float)):
        return 1, value
    return 2, str(value)
