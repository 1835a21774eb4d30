"""What storage refuses, as the OperationOutcomes clients see."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from hearth.capability.outcome import FhirError
from hearth.search import paging
from hearth.search.limits import timed_out
from hearth.storage.base import (KeysetMismatch, SearchRefused, SearchTimedOut, SearchTooNested, StoreClosing,
                                 WriteTooLarge)


def refusal(error: SearchRefused | StoreClosing | WriteTooLarge) -> FhirError:
    """The OperationOutcome a client sees for a search (or a commit's assertion, a history read) or a write storage
    refused."""
    if isinstance(error, SearchTimedOut):
        return timed_out(error.seconds)
    if isinstance(error, SearchTooNested):
        return FhirError(400, "too-costly", f"The search nests chains and _has {error.depth} levels deep, more than "
                                            f"{error.backend} compiles: lower HEARTH_SEARCH_MAX_CHAIN_DEPTH (at most "
                                            f"{error.most} on {error.backend})")
    if isinstance(error, KeysetMismatch):
        return paging.not_this_search()
    if isinstance(error, StoreClosing):
        return FhirError(503, "transient", str(error))
    if isinstance(error, WriteTooLarge):
        return FhirError(413, "too-costly", f"{error.type}/{error.id} would be stored as {error.size:,} bytes with its "
                                            f"search index entries, more than the {error.limit:,} bytes a "
                                            "document holds in this store: nothing was written")
    raise TypeError(f"no answer for {error!r}")


@contextmanager
def answered() -> Iterator[None]:
    """Storage's refusals raised inside, as the FhirErrors clients see (`refusal`)."""
    try:
        yield
    except (SearchRefused, StoreClosing, WriteTooLarge) as error:
        raise refusal(error) from None
