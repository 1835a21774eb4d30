"""A fake upstream EHR (an aiohttp FHIR R4 server on 127.0.0.1) for the inbound connectors' tests: search with
HAPI-style opaque paging over a snapshot, history, read/vread, SMART Backend Services tokens (client_secret_basic
and private_key_jwt), Bulk Data 2.0 $export; and faults on demand (error statuses, stalls, connection resets,
bodies that are not JSON, expired tokens and page links, a failing export)."""

from __future__ import annotations

import asyncio
import base64
import copy
import itertools
import math
import re
import secrets
import socket
import struct
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from functools import partial
from typing import Any, Awaitable, Callable

import jwt
from aiohttp import web
from multidict import CIMultiDict, MultiDictProxy

from hearth.capability import fhir_json

PREFIX = "/fhir"
FHIR_JSON = "application/fhir+json"
NDJSON = "application/fhir+ndjson"
OUTPUT_FORMATS = {NDJSON, "application/ndjson", "ndjson"}
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
SIGNING_ALGORITHMS = ["RS384", "ES384"]
OAUTH_URIS = "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"
OPEN_PATHS = {"/metadata", "/.well-known/smart-configuration", "/auth/token"}
ISSUE_CODES = {202: "informational", 400: "invalid", 401: "login", 404: "not-found", 410: "deleted", 429: "throttled",
               500: "exception", 503: "transient"}
HISTORY_STATUS = {"POST": "201 Created", "PUT": "200 OK", "DELETE": "204 No Content"}
INSTANT = re.compile(r"(\d{4}-\d{2}-\d{2})(?:T(\d{2}:\d{2}:\d{2})(?:\.(\d+))?(Z|[+-]\d{2}:\d{2})?)?")
# FHIR date search against an instant: the search value stands for the whole range its precision covers
COMPARISONS: dict[str, Callable[[datetime, datetime, datetime], bool]] = {
    "eq": lambda at, start, end: start <= at < end, "ne": lambda at, start, end: not start <= at < end,
    "gt": lambda at, start, end: at >= end, "ge": lambda at, start, end: at >= start,
    "lt": lambda at, start, end: at < start, "le": lambda at, start, end: at < end}
TRUNCATED_JSON = b'{"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": {"resourceType": "Pat'


@dataclass
class FakeRequest:
    method: str
    path: str  # relative to the base: "/Patient/1", "" for the base itself (the page links)
    query: dict[str, list[str]]
    headers: CIMultiDict[str]
    time: float  # time.monotonic()


@dataclass(frozen=True)
class _Version:
    type: str
    id: str
    vid: int
    last_updated: str
    at: datetime
    resource: dict | None  # None: a deletion
    seq: int  # the order of writes, for history ties

    @property
    def method(self) -> str:
        return "DELETE" if self.resource is None else "POST" if self.vid == 1 else "PUT"


@dataclass
class _Snapshot:
    bundle_type: str
    versions: list[_Version]


@dataclass
class _Fault:
    answer: Callable[[web.Request], Awaitable[web.StreamResponse | None]]  # None: go on answering normally
    times: int
    path_contains: str | None


@dataclass
class _Export:
    request: str
    transaction_time: str
    files: list[tuple[str, list[dict]]]  # (resource type, resources), in output order
    polls: int = 0


class FakeEhr:
    """An upstream FHIR R4 server holding every version of its resources in memory, and misbehaving on demand."""

    def __init__(self, *, page_size: int = 50, supports_last_updated: bool = True, supports_history: bool = True,
                 require_token: bool = False, token_lifetime: float = 300.0, clients: dict[str, str] | None = None,
                 jwks: dict | None = None) -> None:
        self.page_size = page_size
        self.supports_last_updated = supports_last_updated
        self.supports_history = supports_history
        self.require_token = require_token
        self.token_lifetime = token_lifetime
        self.clients = clients or {}
        self.jwks = jwks or {}
        self.base = ""
        self.requests: list[FakeRequest] = []
        self.on_page: Callable[[int], None] | None = None
        self.export_polls = 2
        self.export_retry_after = 0.05  # Retry-After carries whole seconds: below 1 it reads "0"
        self.export_retry_after_date = False
        self.export_file_lines = 1000
        self.export_fail = False
        self.deleted_exports: list[str] = []
        self._history: dict[tuple[str, str], list[_Version]] = {}
        self._seq = itertools.count()
        self._faults: list[_Fault] = []
        self._tokens: dict[str, float] = {}
        self._jtis: set[str] = set()
        self._snapshots: dict[str, _Snapshot] = {}
        self._exports: dict[str, _Export] = {}
        self._stopping = asyncio.Event()

    async def start(self) -> str:
        """Serve on a free port of 127.0.0.1; the FHIR base URL."""
        app = web.Application(middlewares=[self._middleware])
        routes = [
            ("GET", "/metadata", self._metadata),
            ("GET", "/.well-known/smart-configuration", self._smart_configuration),
            ("POST", "/auth/token", self._token),
            ("GET", "", self._next_page),
            ("GET", "/_history", self._history_bundle),
            ("GET", "/$export", self._export_system),
            ("GET", "/Patient/$export", self._export_patients),
            ("GET", "/Group/{id}/$export", self._export_group),
            ("GET", "/$export-poll/{job}", self._export_status),
            ("DELETE", "/$export-poll/{job}", self._export_delete),
            ("GET", r"/$export-file/{job}/{n:\d+}", self._export_file),
            ("GET", "/{type:[A-Z][A-Za-z]+}/_history", self._history_bundle),
            ("GET", r"/{type:[A-Z][A-Za-z]+}/{id:[A-Za-z0-9\-.]{1,64}}/_history/{vid:\d+}", self._vread),
            ("GET", r"/{type:[A-Z][A-Za-z]+}/{id:[A-Za-z0-9\-.]{1,64}}", self._read),
            ("GET", "/{type:[A-Z][A-Za-z]+}", self._search),
        ]
        for method, path, handler in routes:
            app.router.add_route(method, PREFIX + path, handler)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.base = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}{PREFIX}"
        return self.base

    async def stop(self) -> None:
        self._stopping.set()  # wakes stalled answers, which the shutdown would otherwise wait for
        await self._runner.cleanup()

    @property
    def token_url(self) -> str:
        return f"{self.base}/auth/token"

    def put(self, resource: dict, *, last_updated: str | None = None) -> dict:
        """Create `resource` or add its next version (an id assigned when it has none); the stored resource."""
        stored = copy.deepcopy(resource)
        stored.setdefault("id", str(uuid.uuid4()))
        versions = self._history.get((stored["resourceType"], stored["id"]), [])
        stamp = last_updated or _now()
        stored["meta"] = {**stored.get("meta", {}), "versionId": str(len(versions) + 1), "lastUpdated": stamp}
        self._add(stored["resourceType"], stored["id"], stored, stamp)
        return copy.deepcopy(stored)

    def delete(self, resource_type: str, resource_id: str, *, last_updated: str | None = None) -> None:
        """Add a deletion (a tombstone in history); KeyError when the resource is absent."""
        if self.current(resource_type, resource_id) is None:
            raise KeyError(f"{resource_type}/{resource_id}")
        self._add(resource_type, resource_id, None, last_updated or _now())

    def current(self, resource_type: str, resource_id: str) -> dict | None:
        versions = self._history.get((resource_type, resource_id))
        return copy.deepcopy(versions[-1].resource) if versions else None

    def _add(self, resource_type: str, resource_id: str, resource: dict | None, stamp: str) -> None:
        versions = self._history.setdefault((resource_type, resource_id), [])
        versions.append(_Version(resource_type, resource_id, len(versions) + 1, stamp, _instant(stamp)[0], resource,
                                 next(self._seq)))

    def _current_versions(self, resource_type: str | None = None) -> list[_Version]:
        return [versions[-1] for (stored_type, _), versions in self._history.items()
                if versions[-1].resource is not None and resource_type in (None, stored_type)]

    def fail(self, status: int, times: int = 1, *, retry_after: str | None = None,
             path_contains: str | None = None) -> None:
        """Answer `status` with an OperationOutcome (and Retry-After when given)."""
        self._faults.append(_Fault(partial(self._failed, status, retry_after), times, path_contains))

    def stall(self, seconds: float, times: int = 1, *, path_contains: str | None = None) -> None:
        """Wait `seconds` before answering."""
        self._faults.append(_Fault(partial(self._stalled, seconds), times, path_contains))

    def reset(self, times: int = 1, *, path_contains: str | None = None) -> None:
        """Drop the connection with a TCP reset instead of answering."""
        self._faults.append(_Fault(self._reset, times, path_contains))

    def malformed(self, times: int = 1, *, path_contains: str | None = None) -> None:
        """Answer 200 with a body that is not JSON (cut short)."""
        self._faults.append(_Fault(self._malformed, times, path_contains))

    def fail_export_file(self, n_times: int = 1) -> None:
        """The next `n_times` export file downloads answer 500."""
        self.fail(500, n_times, path_contains="/$export-file/")

    def expire_tokens(self) -> None:
        self._tokens.clear()

    def expire_pages(self) -> None:
        """The page links given so far answer 410 Gone."""
        self._snapshots.clear()

    def _take_fault(self, target: str) -> _Fault | None:
        """The first queued fault whose `path_contains` is in `target` (path and query after the base), used once."""
        for fault in self._faults:
            if fault.path_contains is None or fault.path_contains in target:
                fault.times -= 1
                if fault.times <= 0:
                    self._faults.remove(fault)
                return fault
        return None

    async def _failed(self, status: int, retry_after: str | None, request: web.Request) -> web.Response:
        return _outcome(status, "injected failure", headers={"Retry-After": retry_after} if retry_after else None)

    async def _stalled(self, seconds: float, request: web.Request) -> None:
        try:
            await asyncio.wait_for(self._stopping.wait(), seconds)
        except TimeoutError:
            pass

    async def _reset(self, request: web.Request) -> web.Response:
        assert request.transport is not None
        # SO_LINGER 0 makes the close an RST: the client reads "connection reset", not an orderly end of stream
        request.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                                               struct.pack("ii", 1, 0))
        request.transport.abort()
        return web.Response()  # never reaches the client: the transport is gone

    async def _malformed(self, request: web.Request) -> web.Response:
        return web.Response(body=TRUNCATED_JSON, content_type=FHIR_JSON)

    @web.middleware
    async def _middleware(self, request: web.Request,
                          handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        path = request.path.removeprefix(PREFIX)
        query = {key: request.query.getall(key) for key in request.query}
        self.requests.append(FakeRequest(request.method, path, query, CIMultiDict(request.headers), time.monotonic()))
        fault = self._take_fault(request.path_qs.removeprefix(PREFIX))
        if fault is not None and (answer := await fault.answer(request)) is not None:
            return answer
        if self.require_token and path not in OPEN_PATHS and not self._authorized(request):
            return _outcome(401, "a valid bearer token is required",
                            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
        try:
            return await handler(request)
        except web.HTTPException as error:
            return _outcome(error.status, error.text or error.reason)

    def _authorized(self, request: web.Request) -> bool:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        return scheme.lower() == "bearer" and self._tokens.get(token, 0.0) > time.monotonic()

    async def _metadata(self, request: web.Request) -> web.Response:
        interactions = ["read", "vread", "search-type"] + (["history-type"] if self.supports_history else [])
        search_params = [{"name": "_lastUpdated", "type": "date"}] if self.supports_last_updated else []
        resources = [{"type": resource_type, "interaction": [{"code": code} for code in interactions],
                      **({"searchParam": search_params} if search_params else {})}
                     for resource_type in sorted({resource_type for resource_type, _ in self._history})]
        rest: dict[str, Any] = {"mode": "server", "resource": resources,
                                "operation": [{"name": "export", "definition":
                                               "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export"}]}
        if self.supports_history:
            rest["interaction"] = [{"code": "history-system"}]
        if self.require_token:
            rest["security"] = {
                "extension": [{"url": OAUTH_URIS, "extension": [{"url": "token", "valueUri": self.token_url}]}],
                "service": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                                         "code": "SMART-on-FHIR"}]}]}
        return _fhir({"resourceType": "CapabilityStatement", "status": "active", "date": _now(), "kind": "instance",
                      "fhirVersion": "4.0.1", "format": ["json"], "rest": [rest]})

    async def _smart_configuration(self, request: web.Request) -> web.Response:
        return web.json_response({
            "token_endpoint": self.token_url,
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "private_key_jwt"],
            "token_endpoint_auth_signing_alg_values_supported": SIGNING_ALGORITHMS,
            "grant_types_supported": ["client_credentials"],
            "capabilities": ["client-confidential-symmetric", "client-confidential-asymmetric"]})

    async def _token(self, request: web.Request) -> web.Response:
        form = await request.post()
        if form.get("grant_type") != "client_credentials":
            return web.json_response({"error": "unsupported_grant_type"}, status=400)
        header = request.headers.get("Authorization")
        client_id = self._basic_client(header) if header else self._assertion_client(form)
        if client_id is None:
            return web.json_response({"error": "invalid_client"}, status=401)
        token = secrets.token_urlsafe(24)
        self._tokens[token] = time.monotonic() + self.token_lifetime
        # expires_in is in whole seconds, rounded up: a sub-second lifetime ends before the client expects it to
        return web.json_response({"access_token": token, "token_type": "bearer",
                                  "expires_in": math.ceil(self.token_lifetime), "scope": form.get("scope", "")},
                                 headers={"Cache-Control": "no-store"})

    def _basic_client(self, header: str) -> str | None:
        scheme, _, encoded = header.partition(" ")
        try:
            client_id, _, secret = base64.b64decode(encoded, validate=True).decode().partition(":")
        except ValueError:  # binascii.Error and UnicodeDecodeError are ValueErrors
            return None
        return client_id if scheme.lower() == "basic" and self.clients.get(client_id) == secret else None

    def _assertion_client(self, form: MultiDictProxy) -> str | None:
        """The client a valid SMART Backend Services client assertion authenticates, or None."""
        if form.get("client_assertion_type") != ASSERTION_TYPE:
            return None
        assertion = str(form.get("client_assertion", ""))
        try:
            client_id = jwt.decode(assertion, options={"verify_signature": False})["iss"]
            kid = jwt.get_unverified_header(assertion).get("kid")
            keys = [key for key in jwt.PyJWKSet.from_dict(self.jwks[client_id]).keys if kid in (None, key.key_id)]
        except (jwt.PyJWTError, KeyError, TypeError):
            return None
        for key in keys:
            try:
                claims = jwt.decode(assertion, key.key, algorithms=SIGNING_ALGORITHMS, audience=self.token_url,
                                    issuer=client_id, options={"require": ["exp", "iss", "sub", "jti"]})
            except (jwt.PyJWTError, ValueError, TypeError):
                continue
            fresh = claims["exp"] <= time.time() + 300 and claims["jti"] not in self._jtis
            if not fresh or claims["sub"] != client_id or form.get("client_id", client_id) != client_id:
                return None
            self._jtis.add(claims["jti"])
            return client_id
        return None

    async def _read(self, request: web.Request) -> web.Response:
        return _version_response(self._versions(request)[-1])

    async def _vread(self, request: web.Request) -> web.Response:
        versions = self._versions(request)
        vid = int(request.match_info["vid"])
        if not 1 <= vid <= len(versions):
            raise web.HTTPNotFound(text=f"no version {vid}")
        return _version_response(versions[vid - 1])

    def _versions(self, request: web.Request) -> list[_Version]:
        key = (request.match_info["type"], request.match_info["id"])
        if key not in self._history:
            raise web.HTTPNotFound(text=f"{key[0]}/{key[1]} is not known")
        return self._history[key]

    async def _search(self, request: web.Request) -> web.Response:
        query = request.query
        if not self.supports_last_updated and ("_lastUpdated" in query or "_sort" in query):
            unknown = "_lastUpdated" if "_lastUpdated" in query else "_sort"
            raise web.HTTPBadRequest(text=f"Unknown search parameter {unknown}")
        if query.get("_sort", "_lastUpdated") != "_lastUpdated":
            raise web.HTTPBadRequest(text=f"Unknown sort parameter {query['_sort']}")
        count = self._count(query)
        self._notify_page(0)
        bounds = [_prefixed_range(value) for value in query.getall("_lastUpdated", [])]
        found = [version for version in self._current_versions(request.match_info["type"])
                 if all(COMPARISONS[prefix](version.at, start, end) for prefix, start, end in bounds)]
        # without _sort the order is the ids', not time: a client needing time order has to ask for it
        found.sort(key=(lambda v: (v.at, v.id)) if "_sort" in query else (lambda v: v.id))
        return self._first_page(request, "searchset", found, count)

    async def _history_bundle(self, request: web.Request) -> web.Response:
        if not self.supports_history:
            raise web.HTTPBadRequest(text="history not supported")
        count = self._count(request.query)
        self._notify_page(0)
        since = _parse_instant(request.query["_since"])[0] if "_since" in request.query else None
        resource_type = request.match_info.get("type")
        found = [version for versions in self._history.values() for version in versions
                 if resource_type in (None, version.type) and (since is None or version.at >= since)]
        found.sort(key=lambda v: (v.at, v.seq), reverse=True)
        return self._first_page(request, "history", found, count)

    async def _next_page(self, request: web.Request) -> web.Response:
        """A page link's answer: `_getpages` names a snapshot, which may have expired."""
        query = request.query
        if "_getpages" not in query:
            raise web.HTTPBadRequest(text="a request to the base needs _getpages")
        if query["_getpages"] not in self._snapshots:
            raise web.HTTPGone(text=f"search {query['_getpages']} does not exist and may have expired")
        count = self._count(query)
        offset = _whole(query.get("_getpagesoffset", "0"), "_getpagesoffset")
        self._notify_page(offset // count)
        return self._page(query["_getpages"], offset, count, str(request.url))

    def _count(self, query: MultiDictProxy) -> int:
        count = _whole(query.get("_count", str(self.page_size)), "_count")
        if count < 1:
            raise web.HTTPBadRequest(text="_count must be at least 1")
        return min(count, self.page_size)

    def _notify_page(self, number: int) -> None:
        if self.on_page is not None:
            self.on_page(number)

    def _first_page(self, request: web.Request, bundle_type: str, versions: list[_Version],
                    count: int) -> web.Response:
        token = str(uuid.uuid4())
        self._snapshots[token] = _Snapshot(bundle_type, versions)
        return self._page(token, 0, count, str(request.url))

    def _page(self, token: str, offset: int, count: int, url: str) -> web.Response:
        snapshot = self._snapshots[token]
        links = [{"relation": "self", "url": url}]
        if offset + count < len(snapshot.versions):
            links.append({"relation": "next",
                          "url": f"{self.base}?_getpages={token}&_getpagesoffset={offset + count}&_count={count}"})
        bundle: dict[str, Any] = {"resourceType": "Bundle", "id": str(uuid.uuid4()), "type": snapshot.bundle_type,
                                  "total": len(snapshot.versions), "link": links}
        entries = [self._entry(version, snapshot.bundle_type)
                   for version in snapshot.versions[offset:offset + count]]
        if entries:  # FHIR JSON has no empty arrays
            bundle["entry"] = entries
        return _fhir(bundle)

    def _entry(self, version: _Version, bundle_type: str) -> dict:
        entry: dict[str, Any] = {"fullUrl": f"{self.base}/{version.type}/{version.id}"}
        if version.resource is not None:
            entry["resource"] = version.resource
        if bundle_type == "searchset":
            entry["search"] = {"mode": "match"}
        else:
            entry["request"] = {"method": version.method, "url": f"{version.type}/{version.id}"}
            entry["response"] = {"status": HISTORY_STATUS[version.method], "etag": f'W/"{version.vid}"',
                                 "lastModified": version.last_updated}
        return entry

    async def _export_system(self, request: web.Request) -> web.Response:
        return self._start_export(request, self._current_versions())

    async def _export_patients(self, request: web.Request) -> web.Response:
        patients = {version.id for version in self._current_versions("Patient")}
        return self._start_export(request, self._compartments(patients))

    async def _export_group(self, request: web.Request) -> web.Response:
        group = self.current("Group", request.match_info["id"])
        if group is None:
            raise web.HTTPNotFound(text=f"Group/{request.match_info['id']} is not known")
        members = {patient for member in group.get("member", []) if (patient := _patient_id(member.get("entity")))}
        return self._start_export(request, self._compartments(members))

    def _compartments(self, patients: set[str]) -> list[_Version]:
        """The patients and the resources whose subject or patient is one of them."""
        return [version for version in self._current_versions()
                if (version.type == "Patient" and version.id in patients)
                or any(_patient_id(version.resource.get(name)) in patients for name in ("subject", "patient"))]

    def _start_export(self, request: web.Request, versions: list[_Version]) -> web.Response:
        if "respond-async" not in request.headers.get("Prefer", ""):
            raise web.HTTPBadRequest(text="$export needs the header Prefer: respond-async")
        accept = request.headers.get("Accept", FHIR_JSON)
        if not any(kind in accept for kind in (FHIR_JSON, "application/json", "*/*")):
            raise web.HTTPBadRequest(text="$export answers in application/fhir+json only")
        if request.query.get("_outputFormat", NDJSON) not in OUTPUT_FORMATS:
            raise web.HTTPBadRequest(text=f"_outputFormat {request.query['_outputFormat']} is not supported")
        if "_type" in request.query:
            types = {name.strip() for name in request.query["_type"].split(",")}
            versions = [version for version in versions if version.type in types]
        if "_since" in request.query:
            since = _parse_instant(request.query["_since"])[0]
            versions = [version for version in versions if version.at >= since]
        job = uuid.uuid4().hex
        self._exports[job] = _Export(str(request.url), _now(), self._export_files(versions))
        return _outcome(202, "export started", severity="information",
                        headers={"Content-Location": f"{self.base}/$export-poll/{job}"})

    def _export_files(self, versions: list[_Version]) -> list[tuple[str, list[dict]]]:
        by_type: dict[str, list[dict]] = {}
        for version in versions:
            by_type.setdefault(version.type, []).append(version.resource)
        size = self.export_file_lines
        return [(resource_type, resources[start:start + size]) for resource_type, resources in sorted(by_type.items())
                for start in range(0, len(resources), size)]

    async def _export_status(self, request: web.Request) -> web.Response:
        job = self._export(request)
        if job.polls < self.export_polls:
            job.polls += 1
            return _outcome(202, "export in progress", severity="information",
                            headers={"X-Progress": f"{100 * (job.polls - 1) // self.export_polls}%",
                                     "Retry-After": self._retry_after(job.polls - 1)})
        if self.export_fail:
            return _outcome(500, "the export failed")
        job_id = request.match_info["job"]
        return web.json_response({
            "transactionTime": job.transaction_time, "request": job.request, "requiresAccessToken": self.require_token,
            "output": [{"type": resource_type, "url": f"{self.base}/$export-file/{job_id}/{n}", "count": len(lines)}
                       for n, (resource_type, lines) in enumerate(job.files)],
            "error": []})

    def _retry_after(self, poll: int) -> str:
        """Delta seconds; every other poll an HTTP-date when export_retry_after_date."""
        if self.export_retry_after_date and poll % 2:
            return format_datetime(datetime.now(timezone.utc) + timedelta(seconds=self.export_retry_after), usegmt=True)
        return str(int(self.export_retry_after))

    async def _export_delete(self, request: web.Request) -> web.Response:
        self._export(request)
        job_id = request.match_info["job"]
        del self._exports[job_id]
        self.deleted_exports.append(f"{self.base}/$export-poll/{job_id}")
        return _outcome(202, "export deleted", severity="information")

    async def _export_file(self, request: web.Request) -> web.StreamResponse:
        files = self._export(request).files
        n = int(request.match_info["n"])
        if n >= len(files):
            raise web.HTTPNotFound(text=f"no file {n}")
        response = web.StreamResponse(headers={"Content-Type": NDJSON})
        await response.prepare(request)
        for resource in files[n][1]:
            await response.write(fhir_json.dumps(resource) + b"\n")
        await response.write_eof()
        return response

    def _export(self, request: web.Request) -> _Export:
        job = self._exports.get(request.match_info["job"])
        if job is None:
            raise web.HTTPNotFound(text="no such export")
        return job


def _fhir(body: dict, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    # as a real server writes FHIR JSON: decimals as stored (72.50 stays 72.50)
    return web.json_response(body, status=status, headers=headers, content_type=FHIR_JSON,
                             dumps=lambda value: fhir_json.dumps(value).decode())


def _outcome(status: int, diagnostics: str, *, severity: str = "error",
             headers: dict[str, str] | None = None) -> web.Response:
    issue = {"severity": severity, "code": ISSUE_CODES.get(status, "processing"), "diagnostics": diagnostics}
    return _fhir({"resourceType": "OperationOutcome", "issue": [issue]}, status, headers)


def _version_response(version: _Version) -> web.Response:
    if version.resource is None:
        raise web.HTTPGone(text=f"{version.type}/{version.id} is deleted")
    return _fhir(version.resource, headers={"ETag": f'W/"{version.vid}"',
                                            "Last-Modified": format_datetime(version.at, usegmt=True)})


def _patient_id(reference: Any) -> str | None:
    """The id of the Patient a Reference points to ("Patient/1" or an absolute URL), or None."""
    parts = reference.get("reference", "").split("/") if isinstance(reference, dict) else []
    return parts[-1] if len(parts) >= 2 and parts[-2] == "Patient" else None


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _whole(text: str, name: str) -> int:
    if not text.isdigit():
        raise web.HTTPBadRequest(text=f"{name} must be a whole number")
    return int(text)


def _parse_instant(text: str) -> tuple[datetime, datetime]:
    """`_instant` for a query parameter: 400 when it is not a date."""
    try:
        return _instant(text)
    except ValueError:
        raise web.HTTPBadRequest(text=f"{text!r} is not a FHIR date or instant") from None


def _instant(text: str) -> tuple[datetime, datetime]:
    """The range a FHIR date or dateTime covers at its precision, [start, end): a day, a second, 10**-n second."""
    match = INSTANT.fullmatch(text)
    if match is None:
        raise ValueError(f"{text!r} is not a FHIR date or instant")
    day, clock, fraction, zone = match.groups()
    if clock is None:
        start = datetime.fromisoformat(day).replace(tzinfo=timezone.utc)
        return start, start + timedelta(days=1)
    # a time without a zone is the server's local time, and this server lives in UTC
    start = datetime.fromisoformat(f"{day}T{clock}{'+00:00' if zone in (None, 'Z') else zone}")
    if fraction is None:
        return start, start + timedelta(seconds=1)
    digits = fraction[:6]  # datetime stops at microseconds
    start += timedelta(microseconds=int(digits.ljust(6, "0")))
    return start, start + timedelta(microseconds=10 ** (6 - len(digits)))


def _prefixed_range(value: str) -> tuple[str, datetime, datetime]:
    """A `_lastUpdated` value: its prefix ("eq" when none) and the range its date covers."""
    prefix, date = (value[:2], value[2:]) if value[:2].isalpha() else ("eq", value)
    if prefix not in COMPARISONS:
        raise web.HTTPBadRequest(text=f"unsupported prefix {prefix}")
    return (prefix, *_parse_instant(date))
