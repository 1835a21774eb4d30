"""The ASGI application: a FHIR URL dispatcher over the REST endpoints, errors as OperationOutcomes."""

from __future__ import annotations

import asyncio
import logging
import os
from functools import lru_cache
from urllib.parse import urlsplit
from typing import Any, Awaitable, Callable

from starlette.middleware.cors import CORSMiddleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from hearth.capability.outcome import FhirError
from hearth.connectors.runner import Connectors
from hearth.interactions.context import Context
from hearth.interactions.export.service import ExportService
from hearth.interactions.follower import Follower
from hearth.interactions.reindex_worker import Reindexer
from hearth.interactions.request import ANONYMOUS, Caller
from hearth.security.audit import keep_for
from hearth.security.authority import AuthError, Authority
from hearth.security.launch import Launches
from hearth.server import http, rest
from hearth.server.hosts import TrustedHosts, allowed_hosts
from hearth.server.leadership import Leadership
from hearth.server.oauth import OAuthEndpoints
from hearth.server.proxies import ProxyHeaders, parse_networks
from hearth.server.wiring import close_context, open_authority, open_connectors, open_context, open_exports
from hearth.server.settings import Settings
from hearth.storage import leases
from hearth.storage.base import Store
from hearth.subscriptions.config import SubscriptionConfig
from hearth.subscriptions.service import SubscriptionService
from hearth.subscriptions.websocket import PATH as WEBSOCKET_PATH

log = logging.getLogger("hearth.server")

GZIP_MIN_BYTES = 1400  # smaller responses fit one TCP segment anyway: compressing them saves no round trip
GZIP_LEVEL = 6  # zlib's default: ~30% faster than 9 on a 1 MB Bundle for 3% more bytes

Handler = Callable[..., Awaitable[Response]]

# URL shapes, tried in order. "{x}" captures a segment (never one starting with "_" or "$"; "{type}" only one
# starting upper-case; "{op}" only one starting with "$", an operation); others are literal.
ROUTES: list[tuple[tuple[str, ...], dict[str, Handler]]] = [
    (("$export",), {"GET": rest.export_kick_off, "POST": rest.export_kick_off}),
    (("{type}", "$export"), {"GET": rest.export_kick_off, "POST": rest.export_kick_off}),
    (("{type}", "{id}", "$export"), {"GET": rest.export_kick_off, "POST": rest.export_kick_off}),
    (("_export", "{id}"), {"GET": rest.export_status, "DELETE": rest.export_cancel}),
    (("_export", "{id}", "{id}"), {"GET": rest.export_download}),
    ((), {"GET": rest.search_system}),
    (("metadata",), {"GET": rest.metadata}),
    (("healthz",), {"GET": rest.healthz}),
    (("readyz",), {"GET": rest.readyz}),
    (("_history",), {"GET": rest.history}),
    (("hl7v2", "{id}"), {"POST": rest.hl7v2}),
    (("{type}",), {"GET": rest.search_type, "POST": rest.create}),
    (("{type}", "_search"), {"POST": rest.search_type_post, "GET": rest.search_type}),
    (("{type}", "_history"), {"GET": rest.history}),
    (("{type}", "{id}"), {"GET": rest.read, "PUT": rest.update, "DELETE": rest.delete}),
    (("{type}", "{id}", "_history"), {"GET": rest.history}),
    (("{type}", "{id}", "{type}"), {"GET": rest.search_compartment}),
    (("{type}", "{id}", "_history", "{vid}"), {"GET": rest.vread}),
    ((), {"POST": rest.bundle}),
    (("{type}",), {"PUT": rest.conditional_update, "DELETE": rest.conditional_delete,
                   "PATCH": rest.conditional_patch}),
    (("{type}", "{id}"), {"PATCH": rest.patch}),
    (("{op}",), {"GET": rest.operation, "POST": rest.operation}),
    (("{type}", "{op}"), {"GET": rest.operation, "POST": rest.operation}),
    (("{type}", "{id}", "{op}"), {"GET": rest.operation, "POST": rest.operation}),
    (("{type}", "{id}", "_history", "{vid}", "{op}"), {"GET": rest.version_operation, "POST": rest.version_operation}),
]


@lru_cache(maxsize=8)
def _static_body(size: int) -> bytes:
    head, tail = b'{"resourceType":"Basic","pad":"', b'"}'
    return head + b"x" * max(0, size - len(head) - len(tail)) + tail


async def _bench_static(request: Request, ctx: Context) -> Response:
    """Fixed bytes, `?size=` long: a read minus the interaction, the floor bench/crud.py measures reads against."""
    headers = {"ETag": 'W/"1"', "Last-Modified": "Tue, 24 Nov 2026 18:00:00 GMT"}
    return http.fhir_response(_static_body(int(request.query_params.get("size", "0"))), 200, headers)


if os.environ.get("HEARTH_BENCH_FLOOR") == "1":  # only for bench/; placed where a read matches, same dispatch cost
    ROUTES.insert([pattern for pattern, _ in ROUTES].index(("{type}", "{id}")),
                  (("_bench", "static"), {"GET": _bench_static}))


def _match(pattern: tuple[str, ...], segments: list[str]) -> list[str] | None:
    if len(pattern) != len(segments):
        return None
    captured = []
    for part, segment in zip(pattern, segments):
        if part == "{op}":
            if not segment.startswith("$"):
                return None
            captured.append(segment)
        elif part.startswith("{"):
            if not segment or segment[0] in "_$" or (part == "{type}" and not segment[0].isupper()):
                return None  # resource types start upper-case, so `metadata`, `healthz`… are never types
            captured.append(segment)
        elif part != segment:
            return None
    return captured


def resolve(method: str, path: str) -> tuple[Handler, list[str]]:
    """The handler for `method` on `path` and the captured segments; FhirError 404/405 otherwise."""
    segments = [segment for segment in path.split("/") if segment]
    allowed: set[str] = set()
    for pattern, handlers in ROUTES:
        captured = _match(pattern, segments)
        if captured is None:
            continue
        handler = handlers.get("GET" if method == "HEAD" else method)
        if handler is not None:
            return handler, captured
        allowed.update(handlers)
    if allowed:
        raise FhirError(405, "not-supported", f"{method} is not allowed on /{'/'.join(segments)}",
                        headers={"Allow": ", ".join(sorted(allowed))})
    operation = next((segment for segment in segments if segment.startswith("$")), None)
    if operation is not None:  # a 404 would read as "that resource does not exist" to client libraries
        raise FhirError(400, "not-supported", f"The operation {operation} is not supported on "
                                              f"{method} /{'/'.join(segments)}")
    raise FhirError(404, "not-found", f"No FHIR endpoint at /{'/'.join(segments)}")


class HearthApp:
    """Pure ASGI: lifespan opens and closes the store; every request is dispatched by `resolve`."""

    def __init__(self, settings: Settings, store: Store | None = None) -> None:
        self.settings = settings
        self.store = store  # a store made by the caller (tests); otherwise opened from settings at start-up
        self.ctx: Context | None = None
        self.authority: Authority | None = None
        self._retention: asyncio.Task | None = None
        self._leading: asyncio.Task | None = None
        self.leadership: Leadership | None = None
        self._following: asyncio.Task | None = None
        self.follower: Follower | None = None
        self.oauth: OAuthEndpoints | None = None
        self.connectors: Connectors | None = None
        self.exports: ExportService | None = None
        self.reindexer: Reindexer | None = None
        self.subscriptions = SubscriptionService(SubscriptionConfig.from_settings(settings))
        # requests may carry the public base URL's path (http://host/fhir/Patient): routes start after it
        self.base_path = urlsplit(settings.public_base_url).path.rstrip("/")
        # what every request and websocket passes before it is answered (outermost first)
        self.pipeline = ProxyHeaders(
            TrustedHosts(cors(GZipMiddleware(self._endpoint, minimum_size=GZIP_MIN_BYTES, compresslevel=GZIP_LEVEL),
                              settings),
                         allowed_hosts(settings.public_base_url, settings.allowed_hosts)),
            parse_networks(settings.trusted_proxies))

    async def startup(self) -> None:
        ctx, _ = await open_context(self.settings, self.store, self.subscriptions)
        self.authority = await open_authority(ctx, self.settings)
        self.oauth = OAuthEndpoints(self.authority, Launches(self.authority, ctx.base_url), ctx.base_url)
        await self.subscriptions.start(background=False)
        self.connectors = await open_connectors(ctx, self.settings)
        self.exports = await open_exports(ctx, self.settings)
        self.exports.start()
        self.reindexer = Reindexer(ctx, self.settings.reindex_page, self.settings.reindex_lease,
                                   self.settings.follow_interval)
        await self.reindexer.start()
        self.follower = Follower(ctx, self.settings.follow_interval)
        self._following = asyncio.create_task(self.follower.run(), name="hearth-follower")
        self.ctx = ctx
        if self.settings.singletons:  # the group's once-only work: in whichever process holds the group lease
            group_lease = leases(ctx.store)
            await group_lease.open()
            self.leadership = Leadership(group_lease, self._lead, self._step_down, self.settings.leader_lease)
            await self.leadership.step()  # a lone process leads from its start
            self._leading = asyncio.create_task(self.leadership.run(), name="hearth-leadership")
        if not self.settings.auth_required:
            log.warning("AUTHORIZATION IS OFF: requests without a token may read and write everything "
                        "(HEARTH_AUTH=open, the default on loopback); set HEARTH_AUTH=required to require tokens")

    async def _lead(self) -> None:
        """Start the group's once-only work in this process (server/leadership.py)."""
        assert self.ctx is not None
        if self.settings.audit and self.settings.audit_retention_days > 0:
            self._retention = asyncio.create_task(keep_for(self.ctx.audit.log, self.settings.audit_retention_days))
        await self.subscriptions.lead()
        if self.connectors is not None:  # (HL7 v2 listeners bind their ports)
            self.connectors.start()

    async def _step_down(self) -> None:
        if self._retention is not None:
            self._retention.cancel()
            self._retention = None
        if self.connectors is not None:
            await self.connectors.stop()
        await self.subscriptions.step_down()

    async def shutdown(self) -> None:
        if self._leading is not None:
            self._leading.cancel()  # stops the once-only work here and gives the group lease up
            await asyncio.gather(self._leading, return_exceptions=True)
            self._leading = None
        if self._following is not None:
            self._following.cancel()
        if self.connectors is not None:
            await self.connectors.stop()
            self.connectors = None
        if self.exports is not None:
            await self.exports.stop()
            self.exports = None
        if self.reindexer is not None:
            await self.reindexer.stop()
            self.reindexer = None
        if self.ctx is not None:
            await close_context(self.ctx, self.subscriptions)
            self.ctx = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] in ("http", "websocket"):
            await self.pipeline(scope, receive, send)

    async def _endpoint(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
            return
        request = Request(scope, receive)
        response = await self.respond(request)
        await response(scope, receive, send)

    async def respond(self, request: Request) -> Response:
        xml = False
        try:
            # an export's files are NDJSON (clients ask for application/fhir+ndjson); its status is always JSON
            xml = False if "/_export/" in request.scope["path"] else http.check_accept(request)
            if self.ctx is None:
                raise FhirError(503, "transient", "Hearth is starting")
            path = request.scope["path"]  # not request.url: building a URL object costs ~4% of a read
            if self.base_path and (path == self.base_path or path.startswith(self.base_path + "/")):
                path = path[len(self.base_path):]
            if path.startswith(("/auth/", "/.well-known/")):  # the authorization server: OAuth, not FHIR
                return await self._oauth(request, path)
            request.scope["hearth.caller"] = await self._caller(request)
            request.scope["hearth.exports"] = self.exports  # the export jobs' status and files (server/rest.py)
            handler, captured = resolve(request.method, path)
            request.scope["hearth.interaction"] = handler.__name__  # the label server/metrics.py counts by
            response = await handler(request, self.ctx, *captured)
        except FhirError as error:
            response = http.error_response(error, http.pretty(request))
        except ClientDisconnect:  # nobody is left to answer (e.g. a body that did not arrive in time)
            response = Response(b"", 400)
        except Exception:  # a bug: say so as an OperationOutcome, log it in full
            log.exception("unhandled error on %s %s", request.method, request.url.path)
            response = http.error_response(FhirError(500, "exception", "Internal server error"))
        return http.as_xml(response) if xml else response  # JSON stays the fast path: XML only when asked

    async def _oauth(self, request: Request, path: str) -> Response:
        assert self.oauth is not None
        endpoint = self.oauth.find(request.method, path)
        if endpoint is None:
            raise FhirError(404, "not-found", f"No endpoint at {path}")
        return await endpoint(request)

    async def _caller(self, request: Request) -> Caller:
        """Who asks: the client (and user) of a valid bearer token, or anonymous without one (401 for a token
        that is not valid: a client must know its token was refused, not get what anonymous callers get)."""
        header = request.headers.get("authorization")
        if header is None:
            return ANONYMOUS
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise FhirError(401, "login", "Authorization must be a Bearer access token",
                            headers={"WWW-Authenticate": 'Bearer realm="hearth"'})
        assert self.authority is not None
        try:
            grant = await self.authority.grant_for(token.strip())
        except AuthError as error:
            raise FhirError(401, "login", error.description,
                            headers={"WWW-Authenticate": 'Bearer realm="hearth", error="invalid_token"'}) from None
        return Caller("client", grant.client, grant)

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Websocket subscription channel at [base]/$subscription-ws; anything else is refused."""
        path = scope["path"].removeprefix(self.base_path).strip("/")
        if self.ctx is None or path != WEBSOCKET_PATH:
            await send({"type": "websocket.close", "code": 1008})
            return
        await self.subscriptions.websockets.serve(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message: dict[str, Any] = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:  # reported to the server, which stops
                    log.exception("start-up failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return


def cors(app: Any, settings: Settings) -> Any:
    """CORS for browser SMART apps from the origins HEARTH_CORS_ORIGINS names (`*`: any, on loopback only)."""
    origins = [origin.strip().rstrip("/") for origin in settings.cors_origins.split(",") if origin.strip()]
    if not origins:
        return app
    if "*" in origins and not settings.loopback:
        raise ValueError("HEARTH_CORS_ORIGINS='*' is allowed only when listening on loopback: list the origins")
    return CORSMiddleware(app, allow_origins=origins, allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"],
                          allow_headers=["Authorization", "Content-Type", "Accept", "Prefer", "If-Match",
                                         "If-None-Match", "If-None-Exist", "If-Modified-Since", "X-Request-Id"],
                          expose_headers=["Location", "Content-Location", "ETag", "Last-Modified", "X-Progress",
                                          "Retry-After", "WWW-Authenticate"], max_age=600)


def create_app(settings: Settings | None = None, store: Store | None = None) -> HearthApp:
    return HearthApp(settings or Settings.from_env(), store)
