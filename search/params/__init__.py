"""Search parameter types, one module each (Blaze's `search_param/` files are the model): its modifiers, its
parsing (a value -> an IR predicate), its extraction (a FHIR value -> index entries) and its matching (an IR
predicate x one entry -> bool). search/parse.py, search/extract.py and search/matcher.py hold what is common to
all types and dispatch to these by type."""

from __future__ import annotations

from typing import Any, Callable

from hearth.search.params import composite
from hearth.search.params.composite import LEAF_TESTS, LEAVES

TYPES = {**LEAVES, composite.TYPE: composite}
_TESTS = {**LEAF_TESTS, **composite.TESTS}


def entry_test(pred: Any) -> Callable[[Any], bool]:
    """The in-memory test of a value predicate on one entry of its parameter (positive form: a negated token
    predicate holds when no entry passes)."""
    return _TESTS[type(pred)](pred)
