"""`hearth import`: load NDJSON files and Bundles through the interactions (never a backend directly).

Files are NDJSON (`.ndjson`, `.jsonl`: one resource per line) or JSON (`.json`: a Bundle, or one resource),
each optionally `.gz` or `.bz2`. NDJSON lines and collection entries are stored at their ids (update-as-create;
created when they have none); batch and transaction Bundles go through the dispatcher as a `POST /` would
(ifNoneExist, conditional and urn:uuid references; a transaction is all or nothing). Everything is written through
the dispatcher by the system caller `import`, on a context wired as the server's (server/wiring.py).
Files whose name starts with `0-` (Synthea's hospital and practitioner batch bundles, which the other bundles
reference conditionally) are loaded first, one after the other; the rest run `concurrency` files at a time.
Inside an NDJSON file or a collection, up to `window` entries are written concurrently so that the store can
commit them in groups; writes to the same resource keep their order in the file.
"""

from __future__ import annotations

import asyncio
import bz2
import gzip
import logging
import os
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Awaitable, Callable, Coroutine, Iterable

from hearth.capability import fhir_json
from hearth.capability.outcome import FhirError
from hearth.interactions.context import Context
from hearth.interactions.dispatcher import dispatch
from hearth.interactions.request import Caller, Outcome, Request
from hearth.interactions.resources import is_large, large_parts, off_loop
from hearth.server.progress import ProgressBar
from hearth.server.settings import Settings
from hearth.server.wiring import close_context, open_context

log = logging.getLogger("hearth.import")

IMPORT = Caller("system", "import")  # the operator loading files: the writes are Hearth's own

_OPENERS: dict[str, Callable[..., IO[bytes]]] = {".gz": gzip.open, ".bz2": bz2.open}
_NDJSON = {".ndjson", ".jsonl"}
_LOADABLE = _NDJSON | {".json"}
_FIRST_PREFIX = "0-"
_LINES_PER_READ = 2000  # NDJSON is read in slices off the event loop, never whole
_ENTRY = re.compile(r"Bundle\.entry\[(\d+)\]")


@dataclass(frozen=True, slots=True)
class LoadError:
    """One entry (or a whole file, `where` empty) that could not be loaded."""

    file: str
    where: str  # "line 12" (NDJSON, from 1), "entry[3]" (Bundle, from 0) or ""
    message: str

    def __str__(self) -> str:
        return f"{self.file}{' ' + self.where if self.where else ''}: {self.message}"


@dataclass
class LoadReport:
    counts: Counter[str] = field(default_factory=Counter)  # resources written, per resource type
    errors: list[LoadError] = field(default_factory=list)
    files: int = 0
    existing: int = 0  # batch/transaction POSTs whose ifNoneExist matched a stored resource: not written again
    elapsed: float = 0.0

    @property
    def resources(self) -> int:
        return sum(self.counts.values())

    @property
    def rate(self) -> float:
        return self.resources / self.elapsed if self.elapsed > 0 else 0.0

    def summary(self) -> str:
        lines = [f"Loaded {self.resources:,} resources from {self.files:,} files in {self.elapsed:.1f} s "
                 f"({self.rate:,.0f} resources/s); {len(self.errors):,} errors."]
        if self.existing:
            lines.append(f"{self.existing:,} conditional creates (ifNoneExist) found the resource already stored.")
        width = max((len(name) for name in self.counts), default=0)
        lines += [f"  {name.ljust(width)}  {count:>10,}" for name, count in sorted(self.counts.items())]
        if self.errors:
            lines.append("Errors:")
            lines += [f"  {error}" for error in self.errors]
        return "\n".join(lines)


def source_format(path: Path) -> str | None:
    """"ndjson" or "json" for a loadable file name (optionally compressed), None for anything else."""
    base, suffix = os.path.splitext(path.name.lower())
    if suffix in _OPENERS:
        suffix = os.path.splitext(base)[1]
    if suffix not in _LOADABLE:
        return None
    return "ndjson" if suffix in _NDJSON else "json"


def find_files(paths: Iterable[str | Path]) -> list[Path]:
    """The files to load: named files as they are, directories searched recursively for loadable files;
    `0-*` files first, each group sorted. A missing path raises FileNotFoundError."""
    found: set[Path] = set()
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found.update(p for p in path.rglob("*") if p.is_file() and source_format(p))
        elif path.is_file():
            found.add(path)
        else:
            raise FileNotFoundError(f"No such file or directory: {path}")
    return sorted(found, key=lambda p: (not p.name.startswith(_FIRST_PREFIX), str(p)))


def _open(path: Path) -> IO[bytes]:
    opener = _OPENERS.get(path.suffix.lower(), open)
    return opener(path, "rb")


def _read_all(path: Path) -> bytes:
    with _open(path) as stream:
        return stream.read()


def _parse_file(path: Path) -> tuple[Any, bool]:
    """The file's JSON document, and whether it is large (then the work on its resources goes to worker threads)."""
    data = _read_all(path)
    return fhir_json.loads(data), is_large(data)


def _read_lines(stream: IO[bytes], limit: int) -> list[bytes]:
    lines = []
    for line in stream:
        lines.append(line)
        if len(lines) == limit:
            break
    return lines


class _Window:
    """Runs coroutines concurrently, at most `size` at once; those with the same key run in submission order.

    The coroutines handle their own errors (a failed one never stops the others).
    """

    def __init__(self, size: int) -> None:
        self._slots = asyncio.Semaphore(size)
        self._tasks: set[asyncio.Task] = set()
        self._last: dict[Any, asyncio.Task] = {}

    async def submit(self, key: Any, work: Coroutine[Any, Any, None]) -> None:
        await self._slots.acquire()
        before = self._last.get(key) if key is not None else None
        task = asyncio.create_task(self._run(before, work))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        if key is not None:
            self._last[key] = task
            task.add_done_callback(lambda done: self._forget(key, done))

    def _forget(self, key: Any, task: asyncio.Task) -> None:
        if self._last.get(key) is task:
            del self._last[key]

    async def _run(self, before: asyncio.Task | None, work: Awaitable[None]) -> None:
        try:
            if before is not None:
                await asyncio.wait([before])
            await work
        finally:
            self._slots.release()

    async def drain(self) -> None:
        while self._tasks:
            await asyncio.gather(*self._tasks)


def _method(raw_entry: Any) -> str | None:
    request = raw_entry.get("request") if isinstance(raw_entry, dict) else None
    return request.get("method") if isinstance(request, dict) else None


def _wrote(method: str | None, status: int) -> bool:
    """Whether a successful batch/transaction entry wrote its resource (a POST answered 200 found it instead)."""
    return status == 201 or (status == 200 and method in ("PUT", "PATCH"))


def _entry_named(error: FhirError) -> str:
    """"entry[i]" for the Bundle entry an error names, "" when it names none."""
    for issue in error.issues:
        for text in (*issue.expression, issue.diagnostics):
            match = _ENTRY.search(text)
            if match:
                return f"entry[{match.group(1)}]"
    return ""


def _outcome_text(outcome: dict[str, Any] | None) -> str:
    issues = (outcome or {}).get("issue") or []
    return "; ".join(str(issue.get("diagnostics") or issue.get("code")) for issue in issues)


def _key(resource: Any) -> tuple[str, str] | None:
    """What orders writes to one resource: (type, id) when the entry names both."""
    if isinstance(resource, dict):
        resource_type, resource_id = resource.get("resourceType"), resource.get("id")
        if isinstance(resource_type, str) and isinstance(resource_id, str):
            return resource_type, resource_id
    return None


class Loader:
    """Loads files into the store behind `ctx`, collecting a LoadReport."""

    def __init__(self, ctx: Context, concurrency: int = 4, window: int = 32,
                 progress: ProgressBar | None = None) -> None:
        self.ctx = ctx
        self.concurrency = max(1, concurrency)
        self.window = max(1, window)
        self.progress = progress
        self.report = LoadReport()
        self._started = 0.0

    async def load(self, files: list[Path]) -> LoadReport:
        self._started = time.perf_counter()
        first = [path for path in files if path.name.startswith(_FIRST_PREFIX)]
        rest = iter([path for path in files if not path.name.startswith(_FIRST_PREFIX)])
        for path in first:
            await self._load_file(path)

        async def worker() -> None:
            for path in rest:  # the iterator is shared: each file goes to exactly one worker
                await self._load_file(path)

        await asyncio.gather(*(worker() for _ in range(self.concurrency)))
        self.report.elapsed = time.perf_counter() - self._started
        if self.progress is not None:
            self.progress.close()
        return self.report

    # -- files -------------------------------------------------------------------------------------

    async def _load_file(self, path: Path) -> None:
        size = 0
        try:
            size = path.stat().st_size
            if source_format(path) == "ndjson":
                await self._load_ndjson(path)
            else:
                await self._load_json(path)
        except (OSError, EOFError) as exc:  # unreadable or corrupt (compressed) file
            self._fail(path, "", f"cannot read the file: {exc}")
        except Exception as exc:  # a bug or a storage failure: reported, logged in full, the import goes on
            log.exception("importing %s failed", path)
            self._fail(path, "", f"internal error: {exc!r}")
        self.report.files += 1
        if self.progress is not None:
            self.progress.advance(size, self._status())

    async def _load_ndjson(self, path: Path) -> None:
        window = _Window(self.window)
        try:
            with _open(path) as stream:
                number = 0
                while lines := await asyncio.to_thread(_read_lines, stream, _LINES_PER_READ):
                    for line in lines:
                        number += 1
                        if not line.strip():
                            continue
                        large = is_large(line)
                        try:
                            resource = await off_loop(large, fhir_json.loads, line)
                        except fhir_json.JsonSyntaxError as exc:
                            self._fail(path, f"line {number}", f"not valid JSON: {exc}")
                            continue
                        await window.submit(_key(resource), self._put(path, f"line {number}", resource, large))
        finally:
            await window.drain()

    async def _load_json(self, path: Path) -> None:
        try:
            document, large = await asyncio.to_thread(_parse_file, path)
        except fhir_json.JsonSyntaxError as exc:
            self._fail(path, "", f"not valid JSON: {exc}")
            return
        if not isinstance(document, dict) or document.get("resourceType") != "Bundle":
            await self._put(path, "", document, large)  # a single resource
            return
        kind = document.get("type")
        if kind == "collection":
            await self._load_collection(path, document, large)
        elif kind in ("batch", "transaction"):
            await self._load_bundle(path, document, large)
        else:
            self._fail(path, "", f"a Bundle of type '{kind}' cannot be imported: collection, batch or transaction")

    async def _load_collection(self, path: Path, bundle: dict[str, Any], large: bool) -> None:
        """Each entry's resource is stored at its id (update-as-create), as by a PUT."""
        entries = bundle.get("entry")
        resources = [entry.get("resource") if isinstance(entry, dict) else None
                     for entry in (entries if isinstance(entries, list) else [])]
        parts_large = await asyncio.to_thread(large_parts, resources) if large else [False] * len(resources)
        window = _Window(self.window)
        try:
            for index, resource in enumerate(resources):
                await window.submit(_key(resource), self._put(path, f"entry[{index}]", resource, parts_large[index]))
        finally:
            await window.drain()

    async def _load_bundle(self, path: Path, bundle: dict[str, Any], large: bool) -> None:
        """A batch (entries one by one, each reported) or a transaction (all or nothing), as `POST /` does."""
        raw_entries = bundle.get("entry")
        methods = [_method(raw) for raw in raw_entries] if isinstance(raw_entries, list) else []
        try:
            processed = await dispatch(self.ctx, Request("batch", IMPORT, body=bundle, large=large,
                                                         prefer_return="minimal"))
        except FhirError as error:  # a transaction that failed as a whole: nothing of it was written
            self._fail(path, _entry_named(error), f"transaction not loaded: {error.diagnostics}")
            return
        for index, result in enumerate(processed.entries):
            if result.status >= 400:
                self._fail(path, f"entry[{index}]", _outcome_text(result.outcome) or f"status {result.status}")
            elif result.version is not None and _wrote(methods[index], result.status):
                self._count(result.version.type)
            elif result.status == 200 and methods[index] == "POST":
                self.report.existing += 1  # ifNoneExist found it: nothing written

    # -- entries -----------------------------------------------------------------------------------

    async def _put(self, path: Path, where: str, resource: Any, large: bool) -> None:
        """Store one resource: update-as-create at its id, or create when it has none (`large`: off the loop)."""
        resource_type = resource.get("resourceType") if isinstance(resource, dict) else None
        if not isinstance(resource_type, str):
            self._fail(path, where, "not a FHIR resource (no resourceType)")
            return
        resource_id = resource.get("id")
        request = Request("create", IMPORT, resource_type, body=resource, large=large) if resource_id is None else \
            Request("update", IMPORT, resource_type, str(resource_id), body=resource, large=large)
        await self._write(path, where, dispatch(self.ctx, request))

    async def _write(self, path: Path, where: str, write: Awaitable[Outcome]) -> None:
        try:
            outcome = await write
        except FhirError as error:
            self._fail(path, where, error.diagnostics)
            return
        except Exception as exc:  # a bug or a storage failure: reported, logged in full, the import goes on
            log.exception("importing %s %s failed", path, where)
            self._fail(path, where, f"internal error: {exc!r}")
            return
        if outcome.version is not None:
            self._count(outcome.version.type)

    def _count(self, resource_type: str) -> None:
        self.report.counts[resource_type] += 1
        if self.progress is not None:
            self.progress.show(self._status())

    def _fail(self, path: Path, where: str, message: str) -> None:
        self.report.errors.append(LoadError(str(path), where, message))

    def _status(self) -> str:
        report = self.report
        elapsed = time.perf_counter() - self._started
        rate = report.resources / elapsed if elapsed > 0 else 0.0
        return (f"{report.files:,} files, {report.resources:,} resources ({rate:,.0f}/s), "
                f"{len(report.errors):,} errors")


async def import_files(settings: Settings, files: list[Path], concurrency: int = 4,
                       progress: ProgressBar | None = None) -> LoadReport:
    """Open the store `settings` names, wired as the server's is, load `files` into it, close it."""
    ctx, subscriptions = await open_context(settings)
    try:
        return await Loader(ctx, concurrency, progress=progress).load(files)
    finally:
        await close_context(ctx, subscriptions)
