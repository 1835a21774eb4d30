"""`bulk-export`: one pass is one FHIR Bulk Data (2.0) export from the upstream, stored as it streams in.

Kick-off `$export` (system, `Patient/` or `Group/ID/` by `export_level`; `_type` the connector's types, `_since`
the last export's `transactionTime`) with `Prefer: respond-async`; the status URL is polled as the upstream asks
(`Retry-After` in delta seconds or an HTTP date; `X-Progress` logged); each NDJSON file is streamed line by line
(with the token only when the manifest says `requiresAccessToken`) and stored in chunks. The job's status URL, the
files done and the lines done of the current one are saved after every chunk, so a pass that crashes resumes
where it was (or, if the upstream forgot the job, starts a new one: what is fetched again is found unchanged).
A job the upstream says failed (a 500 whose OperationOutcome is not `transient`: Bulk Data's error status), or
one whose files it no longer has (404/410), is dropped the same way: the pass fails, the next starts a new one.
A line that is not one JSON resource is kept as a dead letter (`malformed`), the rest of the file is stored.
When every file is stored the checkpoint becomes the export's `transactionTime` and the job is deleted upstream.
With `then_poll`, later passes poll (connectors/poll.py) from that time instead of exporting again.
"""

from __future__ import annotations

import logging
from typing import Any

from hearth.capability import fhir_json
from hearth.connectors.config import ConnectorConfig
from hearth.connectors.state import ConnectorState
from hearth.connectors.sync import Sink
from hearth.connectors.upstream import Upstream, UpstreamError, retry_after
from hearth.storage.clock import parse_instant, to_instant

log = logging.getLogger("hearth.connectors")
_CHUNK = 500  # resources stored (and the position saved) at a time: memory stays flat in the file's size
_DEFAULT_WAIT = 2.0  # seconds between status polls when the upstream does not say


class BulkExport:
    def __init__(self, config: ConnectorConfig, upstream: Upstream, sink: Sink, state: ConnectorState) -> None:
        self.config = config
        self.upstream = upstream
        self.sink = sink
        self.state = state
        self.checkpoint: dict[str, Any] = {}

    async def run_pass(self) -> None:
        self.checkpoint = await self.state.checkpoint()
        job = self.checkpoint.get("export")
        if job is None:
            job = await self._kick_off()
        manifest = await self._manifest(job)
        authorized = bool(manifest.get("requiresAccessToken", True))
        for output in manifest.get("output") or []:
            url = output["url"]
            if url in job["done"]:
                continue
            try:
                await self._download(job, url, authorized)
            except UpstreamError as error:
                if error.status in (404, 410):  # the file expired upstream: the job cannot be finished
                    await self._save(None)
                raise
        for error in manifest.get("error") or []:
            log.warning("connector %s: the upstream export reported errors in %s", self.config.name,
                        error.get("url") if isinstance(error, dict) else error)
        await self._finish(job, manifest)

    async def _kick_off(self) -> dict[str, Any]:
        path = {"system": "$export", "patient": "Patient/$export"}.get(self.config.export_level) or \
            f"Group/{self.config.export_level.split('/', 1)[1]}/$export"
        params = {"_type": ",".join(self.config.types), "_outputFormat": "application/fhir+ndjson"}
        since = self.checkpoint.get("exported_at") or (to_instant(self.config.since) if self.config.since else None)
        if since:
            params["_since"] = since
        answer = await self.upstream.request("GET", path, params=params, expect=(202,),
                                             headers={"Prefer": "respond-async", "Accept": "application/fhir+json"})
        status_url = answer.headers.get("Content-Location")
        if not status_url:
            raise UpstreamError("the upstream's $export kick-off answered 202 without Content-Location")
        job = {"status": status_url, "done": [], "file": None, "lines": 0}
        await self._save(job)
        return job

    async def _manifest(self, job: dict[str, Any]) -> dict[str, Any]:
        failures = 0
        while True:
            try:  # a 500 is the upstream's word on the export (Bulk Data: an OperationOutcome says if it failed)
                answer = await self.upstream.request("GET", job["status"], expect=(200, 202, 500),
                                                     headers={"Accept": "application/json"})
            except UpstreamError as error:
                if error.status is not None and error.status < 500 and error.status not in (408, 429):
                    await self._save(None)  # the job is gone or refused: the next pass starts a new one
                raise
            if answer.status == 500:
                issues = _issues(answer)
                if issues is not None and not (issues and all(code == "transient" for code, _ in issues)):
                    await self._save(None)  # the export failed and will not complete: the next pass starts anew
                    raise UpstreamError(f"the upstream's export {job['status']} failed: "
                                        f"{'; '.join(text for _, text in issues) or 'no diagnostics'}", 500)
                self.upstream.circuit.failed()  # a polling failure, not the export's: asked again as any request
                failures = await self.upstream.again(f"GET {job['status']} answered 500", 500, failures,
                                                     retry_after(answer.headers.get("Retry-After")))
                continue
            if answer.status == 200:
                manifest = answer.json()
                problem = _manifest_problem(manifest)
                if problem is not None:  # a pass that fails, not one that crashes after storing every file;
                    await self._save(None)  # and the next asks for a new export, not this one's manifest again
                    raise UpstreamError(f"the upstream's export manifest {problem}")
                return manifest
            progress = answer.headers.get("X-Progress")
            if progress:
                log.info("connector %s: upstream export in progress: %s", self.config.name, progress)
            wait = retry_after(answer.headers.get("Retry-After"))
            await self.upstream.sleep(_DEFAULT_WAIT if wait is None else wait)

    async def _download(self, job: dict[str, Any], url: str, authorized: bool) -> None:
        skip = job["lines"] if job["file"] == url else 0
        job["file"], job["lines"] = url, skip
        chunk: list[Any] = []
        async for line in self.upstream.lines(url, skip=skip, authorized=authorized):
            try:
                resource = fhir_json.loads(line)
                if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
                    raise fhir_json.JsonSyntaxError("a line of a Bulk Data file is one resource (a JSON object)")
                chunk.append(resource)
            except fhir_json.JsonSyntaxError as error:
                chunk.append(None)  # counted in the position all the same
                await self.sink.dead_line(url, line.decode("utf-8", "replace"), str(error))
            if len(chunk) >= _CHUNK:
                await self._store(job, chunk)
                chunk = []
        await self._store(job, chunk)
        job["done"].append(url)
        job["file"], job["lines"] = None, 0
        await self._save(job)

    async def _store(self, job: dict[str, Any], chunk: list[Any]) -> None:
        await self.sink.store([resource for resource in chunk if resource is not None])
        job["lines"] += len(chunk)
        await self._save(job)

    async def _finish(self, job: dict[str, Any], manifest: dict[str, Any]) -> None:
        moment = to_instant(parse_instant(str(manifest["transactionTime"])))
        self.checkpoint["exported_at"] = moment
        self.checkpoint["exported"] = True
        for part in ("types", "deletes"):  # where polling starts, for a hybrid connector
            self.checkpoint.setdefault(part, {}).update({t: moment for t in self.config.types})
        await self._save(None)
        try:
            await self.upstream.request("DELETE", job["status"], expect=(200, 202, 204, 404))
        except UpstreamError as error:  # the upstream expires it anyway; the data is stored
            log.warning("connector %s: the finished export could not be deleted upstream: %s",
                        self.config.name, error)

    async def _save(self, job: dict[str, Any] | None) -> None:
        if job is None:
            self.checkpoint.pop("export", None)
        else:
            self.checkpoint["export"] = job
        await self.state.save_checkpoint(self.checkpoint)


def _issues(answer: Any) -> list[tuple[str, str]] | None:
    """(code, diagnostics) of the issues of an OperationOutcome answer; None when the body is not one."""
    try:
        body = fhir_json.loads(answer.body)
    except fhir_json.JsonSyntaxError:
        return None
    if not isinstance(body, dict) or body.get("resourceType") != "OperationOutcome":
        return None
    issues = [issue for issue in body.get("issue") or [] if isinstance(issue, dict)]
    return [(str(issue.get("code", "")), str(issue.get("diagnostics") or issue.get("code", ""))) for issue in issues]


def _manifest_problem(manifest: Any) -> str | None:
    """What makes an export manifest unusable (None: nothing)."""
    if not isinstance(manifest, dict):
        return "is not a JSON object"
    try:
        parse_instant(str(manifest.get("transactionTime")))
    except ValueError:
        return f"has no transactionTime instant (found {manifest.get('transactionTime')!r})"
    outputs = manifest.get("output") or []
    if not isinstance(outputs, list) or not all(isinstance(output, dict) and isinstance(output.get("url"), str)
                                                for output in outputs):
        return "does not list its files as objects with a url"
    return None
