"""batch and transaction Bundles (`POST /`), processed by the R4 rules (http://hl7.org/fhir/R4/http.html#transaction).

Transaction: entries run in the order DELETE, POST, PUT/PATCH, GET/HEAD and commit as one `store.commit`,
all or nothing. Every decision taken by searching (ifNoneExist, conditional PUT/PATCH/DELETE, conditional
references) is re-checked inside that commit by an Assertion; if a concurrent writer changed the answer the
whole transaction is planned again. `urn:uuid:`/`urn:oid:` fullUrls become the new `Type/id` in every
Reference, uri-typed element and narrative link. Conditional references resolve against what is stored
before the transaction (not against resources the same transaction creates): no match is 404, several 412.
Batch: every entry on its own, with its own status (and OperationOutcome when it failed).
"""

from __future__ import annotations

import asyncio
import weakref
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Awaitable, Callable, Sequence

from hearth.capability.outcome import FhirError, invalid
from hearth.interactions import conditional
from hearth.interactions import patch as patching
from hearth.interactions.bundle_entries import (EntryRequest, Result, at_entry, dispatched, error_result, load_bundle,
                                         interaction_of, parse_request, patcher_of, response_entry, result_of)
from hearth.interactions.bundles import bundle as bundle_bytes
from hearth.interactions.context import Context
from hearth.interactions.request import Caller, Outcome, Request
from hearth.interactions.crud import same_content, tombstone_write, version_mismatch, version_write, written
from hearth.interactions.patch import Patcher
from hearth.interactions.references import Link, find_links, is_conditional, is_placeholder, rewrite_narrative
from hearth.interactions.resources import check_id, is_large, large_parts, new_id, off_loop, parse_resource
from hearth.storage.base import Assertion, AssertionFailed, TransactionsUnsupported, Version, VersionConflict, Write

RETRIES = 10  # a retry means a concurrent write changed what a condition matched; plans are cheap to redo
OFF_LOOP_ENTRIES = 50  # bundles with this many entries are checked on a worker thread, as large ones are
BATCH_CONCURRENCY = 16  # batch entries in flight at once (independent; group commit batches their writes)
_ORDER = {"DELETE": 0, "POST": 1, "PUT": 2, "PATCH": 2, "GET": 3, "HEAD": 3}


@dataclass
class Processed:
    """A processed Bundle: one Result per entry (request order) and the response Bundle's entries."""

    kind: str  # "batch-response" | "transaction-response"
    results: list[Result]
    entries: list[bytes]

    def body(self) -> bytes:
        return bundle_bytes(self.kind, self.entries)


Dispatch = Callable[[Context, Request], Awaitable[Outcome]]


async def process_bundle(ctx: Context, request: Request, dispatch: Dispatch) -> Processed:
    """Process the batch or transaction Bundle `request.body` (bytes, or parsed with capability.fhir_json: then it
    is modified), each entry asked by `request.caller` through `dispatch`.

    A transaction either applies every entry or raises FhirError naming the failing entry (nothing written); a
    batch never raises for an entry: each Result has its status, the Version written or read, or an
    OperationOutcome. `Processed.body()` is the response Bundle; `request.prefer_return` "minimal" leaves resources
    out of it. The work on a large Bundle (bytes past resources.OFF_LOOP_BYTES, or a parsed one `request.large`
    marks) runs on worker threads: parsing, and checking, stamping, serialising and indexing its entries (a batch's
    large ones)."""
    large = request.large or is_large(request.body or b"")
    bundle = await off_loop(large, load_bundle, request.body or b"")
    raw_entries = bundle.get("entry") or []
    if bundle["type"] == "transaction":
        request.interaction = "transaction"  # a REST request cannot tell before its Bundle is read
        return await transaction(ctx, raw_entries, request.caller, request.prefer_return, large, dispatch,
                                 request.keep_unchanged)
    resources = [raw.get("resource") if isinstance(raw, dict) else None for raw in raw_entries]
    parts_large = await asyncio.to_thread(large_parts, resources) if large else ()
    return await batch(ctx, raw_entries, request.caller, request.prefer_return, parts_large, dispatch)


# --- transaction ----------------------------------------------------------------------------------------------

@dataclass
class _Entry:
    """A transaction entry, checked, with what it needs at commit time."""

    request: EntryRequest
    asked: Request  # the same, as the dispatcher's request (caller, interaction, target)
    interaction: str = "read"
    resource: dict[str, Any] | None = None
    links: list[Link] = field(default_factory=list)
    patcher: Patcher | None = None
    keep_unchanged: bool = False  # an update equal to the current version writes none (connectors' re-sends)


@dataclass
class _Target:
    """Where a write entry lands, decided by searching and reading before the commit."""

    entry: _Entry
    type: str
    id: str
    current: Version | None  # the resource's current version (None: never existed)
    existing: bool = False  # nothing is written: a POST whose ifNoneExist matched, or a patch changing nothing
    twin: _Target | None = None  # an earlier POST of this transaction with the same ifNoneExist, that creates
    unchanged: bool = False  # an update kept out because its content is the current version's (keep_unchanged)


class _Replan(Exception):
    """A condition or a version changed under the transaction: plan it again."""


_TURNS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = weakref.WeakKeyDictionary()


@asynccontextmanager
async def _turn(off: bool) -> AsyncIterator[None]:
    """Transactions planned on worker threads (`off`) are planned one at a time, in order of arrival, each then
    committing while the next is planned. Side by side they would share the interpreter lock, all finish
    planning together and leave the store's writer idle until then, and the event loop idle while it works."""
    if not off:
        yield
        return
    loop = asyncio.get_running_loop()
    lock = _TURNS.get(loop)
    if lock is None:
        lock = _TURNS[loop] = asyncio.Lock()
    async with lock:
        yield


async def transaction(ctx: Context, raw_entries: list[Any], caller: Caller, prefer_return: str | None,
                      large: bool, dispatch: Dispatch, keep_unchanged: bool = False) -> Processed:
    off = large or len(raw_entries) > OFF_LOOP_ENTRIES
    entries: list[_Entry] = []
    for attempt in range(RETRIES):
        async with _turn(off):
            if attempt == 0:
                entries = await off_loop(off, _check, ctx, raw_entries, caller)
                for entry in entries:
                    entry.keep_unchanged = keep_unchanged
            planned = await _plan(ctx, caller, entries, large)
        try:
            results = await _finish(ctx, planned, dispatch)
        except _Replan:
            continue
        for entry in entries:  # what the writes answer with leaves as the policy shows it (GETs were dispatched)
            result = results[entry.request.index]
            if entry.interaction != "read" and result.version is not None:
                result.version = ctx.policy.after(entry.asked, result.version)
        responses = [response_entry(ctx, results[e.request.index], prefer_return, e.request.method)
                     for e in entries]
        return Processed("transaction-response", [results[e.request.index] for e in entries], responses)
    raise FhirError(409, "conflict", "The transaction's conditions keep changing under concurrent writes; try again")


def _check(ctx: Context, raw_entries: list[Any], caller: Caller) -> list[_Entry]:
    """Parse and validate every entry, each asked by `caller` as the policy allows (FhirError naming the first bad
    or refused one); find the references to rewrite."""
    entries: list[_Entry] = []
    full_urls: dict[str, int] = {}
    # A POST entry with a real fullUrl (not urn:) gets a new id: literal references to it must follow.
    literal = any(isinstance(raw, dict) and isinstance(raw.get("fullUrl"), str) and "://" in raw["fullUrl"]
                  and (raw.get("request") or {}).get("method") == "POST" for raw in raw_entries)
    for index, raw in enumerate(raw_entries):
        request = None
        try:
            request = parse_request(index, raw, ctx.base_url)
            entry = _Entry(request, dispatched(request, caller))
            ctx.policy.before(entry.asked)
            if request.method not in ("GET", "HEAD"):
                entry.interaction = interaction_of(request)
            if request.full_url:
                if request.full_url in full_urls:
                    raise invalid(f"fullUrl {request.full_url} is also the fullUrl of "
                                  f"Bundle.entry[{full_urls[request.full_url]}]", (f"Bundle.entry[{index}].fullUrl",))
                full_urls[request.full_url] = index
            if request.method in ("POST", "PUT"):
                entry.resource = parse_resource(request.resource or {}, request.type, ctx.limits)
                entry.links = find_links(entry.resource, literal)
                if entry.interaction == "update":
                    _check_body_id(request, entry.resource)
            elif request.method == "PATCH":
                entry.patcher = patcher_of(request)
        except FhirError as error:
            raise at_entry(error, request, index) from None
        entries.append(entry)
    return entries


def _check_body_id(request: EntryRequest, resource: dict[str, Any]) -> None:
    check_id(request.id or "")
    if resource.get("id") != request.id:
        raise invalid(f"The resource's id ('{resource.get('id')}') must be the id in the URL ('{request.id}')",
                      (f"{request.type}.id",))


@dataclass
class _Planned:
    """One try at a transaction, planned: its entries in R4 order, the writes, their results so far, the
    conditions to assert at commit and the resources written (targets) and claimed."""

    caller: Caller
    ordered: list[_Entry]
    writes: list[Write]
    results: dict[int, Result]
    assertions: list[Assertion]
    targets: list[_Target]
    claimed: dict[tuple[str, str], int]


async def _plan(ctx: Context, caller: Caller, entries: list[_Entry], large: bool) -> _Planned:
    """One try's plan: the targets found, the references resolved and rewritten, every Write built."""
    ordered = sorted(entries, key=lambda e: _ORDER[e.request.method])
    assertions: list[Assertion] = []
    targets: list[_Target] = []
    claimed: dict[tuple[str, str], int] = {}
    conditional_creates: dict[tuple[str | None, str], _Target] = {}
    for entry in ordered:
        if entry.interaction == "read":
            continue
        condition = (entry.request.type, entry.request.if_none_exist or "")
        twin = conditional_creates.get(condition) if entry.interaction == "create" and condition[1] else None
        if twin is not None:  # the same condition twice: one resource, whoever makes it
            targets.append(_Target(entry, twin.type, twin.id, twin.current, existing=True,
                                   twin=None if twin.existing else twin))
            continue
        try:
            for target in await _targets(ctx, caller, entry, assertions):
                if not target.existing:
                    other = claimed.setdefault((target.type, target.id), entry.request.index)
                    if other != entry.request.index:
                        raise invalid(f"{target.type}/{target.id} is also the target of Bundle.entry[{other}]; "
                                      "a transaction may touch each resource once")
                if condition[1] and entry.interaction == "create":
                    conditional_creates[condition] = target
                targets.append(target)
        except FhirError as error:
            raise at_entry(error, entry.request, entry.request.index) from None
    resolved = await _resolve_all(ctx, caller, entries, assertions)
    # rewriting, stamping, serialising and indexing
    writes, results = await off_loop(large or len(targets) > OFF_LOOP_ENTRIES, _build, ctx, entries, targets, resolved)
    return _Planned(caller, ordered, writes, results, assertions, targets, claimed)


async def _finish(ctx: Context, planned: _Planned, dispatch: Dispatch) -> dict[int, Result]:
    """The rest of one try: answer the GETs that may fail it, commit, then answer the GETs after the commit."""
    ordered, results, claimed = planned.ordered, planned.results, planned.claimed
    reads = [entry for entry in ordered if entry.interaction == "read"]
    for entry in reads:  # a GET that fails before the commit fails the transaction (and leaves no trace)
        if (entry.request.type, entry.request.id) not in claimed:
            try:
                await dispatch(ctx, entry.asked)
            except FhirError as error:
                raise at_entry(error, entry.request, entry.request.index) from None
    await _commit(ctx, planned.caller, planned.writes, planned.assertions, planned.targets)
    for entry in ordered:  # a conditional delete that matched nothing
        if entry.interaction != "read" and entry.request.index not in results:
            results[entry.request.index] = Result(204)
    for entry in reads:  # after the commit, GETs see the writes; a failure now is the entry's own
        try:
            results[entry.request.index] = result_of(await dispatch(ctx, entry.asked))
        except FhirError as error:
            results[entry.request.index] = error_result(at_entry(error, entry.request, entry.request.index))
    return results


async def _targets(ctx: Context, caller: Caller, entry: _Entry, assertions: list[Assertion]) -> list[_Target]:
    """The resources a write entry lands on (a conditional delete may match none or, if enabled, several)."""
    request, interaction = entry.request, entry.interaction
    resource_type = request.type or ""
    if interaction == "create":
        if request.if_none_exist:
            query = conditional.parse_criteria(ctx, caller, resource_type, request.if_none_exist)
            found = await _find(ctx, query, resource_type, request.if_none_exist, "ifNoneExist", assertions)
            if found:
                return [_Target(entry, resource_type, found[0].id, found[0], existing=True)]
        return [_Target(entry, resource_type, new_id(), None)]
    if not interaction.startswith("conditional-"):
        resource_id = request.id or ""
        return [_Target(entry, resource_type, resource_id, await ctx.store.read(resource_type, resource_id))]
    criteria = request.criteria or ""
    query = conditional.parse_criteria(ctx, caller, resource_type, criteria)
    multiple = interaction == "conditional-delete" and ctx.conditional_delete_multiple
    found = await _find(ctx, query, resource_type, criteria, interaction, assertions, multiple)
    if interaction == "conditional-delete":
        return [_Target(entry, resource_type, version.id, version) for version in found]
    if found:
        body_id = entry.resource.get("id") if entry.resource else None
        if body_id is not None and body_id != found[0].id:
            raise invalid(f"The resource's id ('{body_id}') is not the id of the match ('{found[0].id}')")
        return [_Target(entry, resource_type, found[0].id, found[0])]
    if interaction == "conditional-patch":
        raise FhirError(404, "not-found", f"No {resource_type} matches {criteria}; nothing to patch")
    body_id = entry.resource.get("id") if entry.resource else None
    if body_id is None:
        return [_Target(entry, resource_type, new_id(), None)]
    check_id(body_id)
    return [_Target(entry, resource_type, body_id, await ctx.store.read(resource_type, body_id))]


async def _find(ctx: Context, query: Any, resource_type: str, criteria: str, what: str,
                assertions: list[Assertion], multiple: bool = False) -> list[Version]:
    """Matches of a condition, asserted to hold still at commit."""
    found = await conditional.matches(ctx, query, resource_type, criteria, what, multiple)
    assertions.append(Assertion(query, conditional.ids(found)))
    return found


async def _resolve_all(ctx: Context, caller: Caller, entries: list[_Entry], assertions: list[Assertion]
                       ) -> dict[str, str]:
    """Every distinct conditional reference of the transaction -> `Type/id`, searched concurrently
    (FhirError naming the first entry that holds a reference that does not resolve)."""
    first_holder: dict[str, _Entry] = {}
    for entry in entries:
        for link in entry.links:
            if link.kind == "reference" and is_conditional(link.original):
                first_holder.setdefault(link.original, entry)
    outcomes = await asyncio.gather(*(_resolve(ctx, caller, reference, assertions) for reference in first_holder),
                                    return_exceptions=True)
    for entry, outcome in zip(first_holder.values(), outcomes):
        if isinstance(outcome, FhirError):
            raise at_entry(outcome, entry.request, entry.request.index)
        if isinstance(outcome, BaseException):
            raise outcome
    return dict(zip(first_holder, outcomes))  # type: ignore[arg-type]


async def _resolve(ctx: Context, caller: Caller, reference: str, assertions: list[Assertion]) -> str:
    """A conditional reference `Type?criteria` -> `Type/id` of its one match (none: 404, several: 412)."""
    resource_type, _, criteria = reference.partition("?")
    query = conditional.parse_criteria(ctx, caller, resource_type, criteria)
    found = await _find(ctx, query, resource_type, criteria, "a conditional reference", assertions)
    if not found:
        raise FhirError(404, "not-found", f"The conditional reference {reference} matches no resource")
    return f"{resource_type}/{found[0].id}"


def _build(ctx: Context, entries: list[_Entry], targets: list[_Target],
           resolved: dict[str, str]) -> tuple[list[Write], dict[int, Result]]:
    """Rewrite the references, then make every Write (stamped, serialised, indexed) and each entry's Result."""
    new_refs = {t.entry.request.full_url: f"{t.type}/{t.id}" for t in targets if t.entry.request.full_url}
    for entry in entries:
        try:
            _rewrite(entry, new_refs, resolved)
        except FhirError as error:
            raise at_entry(error, entry.request, entry.request.index) from None
    writes: list[Write] = []
    results: dict[int, Result] = {}
    made: dict[int, Version] = {}  # id(target) -> the version it writes
    for target in targets:
        try:
            write, status = _write(ctx, target)
        except FhirError as error:
            raise at_entry(error, target.entry.request, target.entry.request.index) from None
        if write is not None:
            writes.append(write)
            made[id(target)] = written(write)
        version = made.get(id(target.twin or target))  # a twin answers with what its first entry made
        if version is None and target.existing:
            version = target.current
        results.setdefault(target.entry.request.index, Result(status, version, unchanged=target.unchanged))
    return writes, results


def _rewrite(entry: _Entry, new_refs: dict[str, str], resolved: dict[str, str]) -> None:
    """Point the entry's placeholders, conditional and literal references at their resources (from the
    originals). A relative literal reference is read against the base of the entry's own fullUrl."""
    base = _base_of(entry.request.full_url)
    for link in entry.links:
        if link.kind == "narrative":
            link.set(rewrite_narrative(link.original, new_refs.get))
        elif is_placeholder(link.original):
            target = new_refs.get(link.original)
            if target is not None:
                link.set(target)
            elif link.kind == "reference":
                raise invalid(f"{link.path} refers to {link.original}, which no entry of the transaction has as "
                              "its fullUrl", (link.path,))
        elif link.original in resolved:
            link.set(resolved[link.original])
        elif link.kind == "reference":
            absolute = link.original if "://" in link.original else f"{base}/{link.original}"
            if absolute in new_refs:
                link.set(new_refs[absolute])


def _base_of(full_url: str | None) -> str | None:
    """`http://x/fhir` for `http://x/fhir/Patient/1`; None when the fullUrl is not a RESTful URL."""
    if not full_url or "://" not in full_url:
        return None
    parts = full_url.split("/")
    return "/".join(parts[:-2]) if len(parts) > 4 else None


def _write(ctx: Context, target: _Target) -> tuple[Write | None, int]:
    """The Write for one target (None when there is nothing to write) and the entry's status."""
    entry, current = target.entry, target.current
    request, interaction = entry.request, entry.interaction
    live = current is not None and not current.deleted
    if target.existing:
        return None, 200
    if request.if_match is not None and (not live or current.version_id != request.if_match):
        raise version_mismatch(target.type, target.id, request.if_match, current)
    if interaction.endswith("delete"):
        return (tombstone_write(current) if live else None), 204
    if interaction.endswith("patch"):
        if current is None:
            raise FhirError(404, "not-found", f"{target.type}/{target.id} is not known")
        if current.deleted:
            raise FhirError(410, "deleted", f"{target.type}/{target.id} was deleted")
        resource = patching.patched(current, entry.patcher, ctx.limits)
        if not entry.patcher.changes:  # no new version: the entry answers with the current one
            target.existing = True
            return None, 200
        return version_write(ctx, entry.asked.caller, target.type, target.id, resource, current.version_id), 200
    assert entry.resource is not None
    if entry.keep_unchanged and live and same_content(current, entry.resource):
        target.existing = target.unchanged = True
        return None, 200
    previous = current.version_id if current else 0
    return version_write(ctx, entry.asked.caller, target.type, target.id, entry.resource, previous), \
        200 if live else 201


async def _commit(ctx: Context, caller: Caller, writes: list[Write], assertions: list[Assertion],
                  targets: list[_Target]) -> None:
    if not writes:
        return
    try:
        await ctx.commit(writes, assertions, caller)
    except AssertionFailed:
        raise _Replan() from None
    except VersionConflict as conflict:
        for target in targets:
            request = target.entry.request
            if (target.type, target.id) == (conflict.type, conflict.id) and request.if_match is not None:
                raise at_entry(version_mismatch(target.type, target.id, request.if_match, None, conflict.actual),
                               request, request.index) from None
        raise _Replan() from None
    except TransactionsUnsupported:
        raise FhirError(501, "not-supported",
                        f"This {ctx.store.name} deployment cannot commit several writes atomically (MongoDB needs a "
                        "replica set, even of one node, for transactions), so the transaction was refused and "
                        "nothing was written. Send a batch Bundle, or run MongoDB as a replica set.") from None


# --- batch ----------------------------------------------------------------------------------------------------

async def batch(ctx: Context, raw_entries: list[Any], caller: Caller, prefer_return: str | None,
                large: Sequence[bool], dispatch: Dispatch) -> Processed:
    """Every entry on its own through the dispatcher (R4 order by method; entries of one method concurrently;
    those `large` marks, by index, on worker threads)."""
    limit = asyncio.Semaphore(BATCH_CONCURRENCY)
    requests: list[EntryRequest | None] = [None] * len(raw_entries)
    results: list[Result | None] = [None] * len(raw_entries)
    for index, raw in enumerate(raw_entries):
        try:
            requests[index] = parse_request(index, raw, ctx.base_url)
        except FhirError as error:
            results[index] = error_result(error)

    async def run(request: EntryRequest) -> None:
        async with limit:
            try:
                asked = dispatched(request, caller, bool(large) and large[request.index])
                results[request.index] = result_of(await dispatch(ctx, asked))
            except FhirError as error:
                results[request.index] = error_result(at_entry(error, request, request.index))
    for group in range(4):
        await asyncio.gather(*(run(r) for r in requests if r is not None and _ORDER[r.method] == group))
    done = [result or Result(500) for result in results]
    responses = [response_entry(ctx, result, prefer_return, request.method if request else "")
                 for request, result in zip(requests, done)]
    return Processed("batch-response", done, responses)
