"""Settings from `HEARTH_*` environment variables, overridable by `hearth serve` flags."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from typing import Mapping


def cores() -> int:
    """The cores this process may run on (its CPU affinity, as in a container limited to some)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # (not Linux)
        return os.cpu_count() or 1


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8080
    storage: str = "./data/hearth.db"  # a SQLite file path, or mongodb://…
    base_url: str = ""  # the public base URL; empty: http://{host}:{port}
    max_body_bytes: int = 16 * 1024 * 1024
    log_level: str = "warning"
    default_count: int = 20
    max_count: int = 1000
    sqlite_synchronous: str = "NORMAL"  # NORMAL (WAL: durable but for the last commits on power loss) or FULL
    subscription_retry_horizon: float = 24.0  # hours a failing notification is retried before status `error`
    subscription_retry_base: float = 1.0  # seconds before the first retry (then doubling, with jitter)
    subscription_allowed_hosts: str = ""  # comma-separated hosts rest-hook endpoints may use; empty: any
    conditional_delete_multiple: bool = False  # DELETE Type?criteria may delete several matches (else 412)
    # what one request may cost (each refused past its bound with a 4xx OperationOutcome naming the setting)
    search_max_chain_depth: int = 4  # levels of chaining and nested _has in one search parameter
    search_max_values: int = 200  # values ORed in one search parameter (a,b,c)
    search_max_parameters: int = 100  # search parameters in one search (repeats and chains included)
    search_timeout: float = 10.0  # seconds a search may run; then its database work is interrupted
    max_resource_elements: int = 100_000  # JSON values (objects, arrays, primitives) in one resource
    # outbound: networks (CIDRs) rest-hook endpoints may reach although private, loopback or link-local
    subscription_allowed_networks: str = ""
    subscription_match_timeout: float = 1.0  # seconds one Subscription may spend matching one change
    # inbound HTTP
    allowed_hosts: str = ""  # Host header values served besides the base URL's host (comma-separated)
    trusted_proxies: str = ""  # addresses (CIDRs) whose Forwarded / X-Forwarded-* headers are honoured
    header_timeout: float = 10.0  # seconds a client has to send a request's headers
    body_timeout: float = 60.0  # seconds a client has to send a request's body
    max_header_bytes: int = 65536  # a request's line and headers together
    max_connections: int = 1000  # concurrent connections and requests; beyond, 503
    # security (docs/security.md)
    auth: str = ""  # required | open; empty: required unless listening on a loopback address
    cors_origins: str = ""  # browser origins allowed (comma-separated); `*` only on loopback
    auth_issuers: str = ""  # other authorization servers whose JWTs are accepted (security/issuers.py)
    auth_introspection: str = ""  # the IdP's RFC 7662 endpoint, for its opaque tokens
    auth_introspection_client: str = ""  # client_id:secret Hearth introspects as
    audit: bool = True  # false: no AuditEvents are recorded (benchmark floors, development; never in production)
    audit_retention_days: float = 0  # AuditEvents older than this are removed (checked hourly); 0: kept forever
    # Bulk Data export (docs/bulk-export.md)
    export_dir: str = ""  # the exports' files; empty: `exports` beside the SQLite file (./data/exports for MongoDB)
    export_retention: float = 3600.0  # seconds a finished export's files (and status) are kept
    export_max_jobs: int = 2  # exports accepted or running at once; more kick-offs answer 429
    export_file_bytes: int = 100_000_000  # an NDJSON file is closed and the next begun past this size
    export_poll: float = 1.0  # seconds between the export worker's looks for jobs
    export_lease: float = 60.0  # seconds a worker's claim on an export lasts unless renewed
    # inbound connectors (docs/connectors.md)
    connectors: str = ""  # the TOML file declaring them; empty: none
    # scale-out on one machine (docs/scale-out.md)
    workers: int = field(default_factory=cores)  # server processes on one listening socket (SQLite: one writer)
    singletons: bool = True  # may lead: take the group lease and run the once-only work (server/leadership.py)
    leader_lease: float = 15.0  # seconds the group lease lasts unless renewed (a dead leader is replaced after it)
    sqlite_writer: str = ""  # set by `hearth serve --workers N`: the Unix socket of the group's SQLite writer
    metrics_dir: str = ""  # set by `hearth serve --workers N`: where its processes share their metrics
    follow_interval: float = 1.0  # seconds between a process's reads of the change log for others' definitions
    # SearchParameter re-index jobs (docs/search.md)
    reindex_page: int = 500  # resources a re-index job indexes and saves its position after
    reindex_lease: float = 30.0  # seconds a worker's claim on a re-index job lasts unless renewed

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> "Settings":
        """Defaults, then `HEARTH_<NAME>` variables, then non-None `overrides`."""
        env = os.environ if env is None else env
        values: dict[str, object] = {}
        for setting in fields(cls):
            raw = env.get(f"HEARTH_{setting.name.upper()}")
            if raw is not None:
                kind = setting.type
                values[setting.name] = (int(raw) if kind in ("int", int) else
                                        raw.strip().lower() in ("1", "true", "yes", "on") if kind in ("bool", bool)
                                        else float(raw) if kind in ("float", float) else raw)
        values.update({name: value for name, value in overrides.items() if value is not None})
        return replace(cls(), **values)

    @property
    def loopback(self) -> bool:
        """Whether the server listens on a loopback address only."""
        return self.host in ("127.0.0.1", "::1", "localhost") or self.host.startswith("127.")

    @property
    def auth_required(self) -> bool:
        """Whether every FHIR request needs a bearer token (HEARTH_AUTH; by default, unless on loopback)."""
        mode = self.auth.strip().lower()
        if mode not in ("", "required", "open"):
            raise ValueError(f"HEARTH_AUTH must be 'required' or 'open', not {self.auth!r}")
        return mode == "required" or (mode == "" and not self.loopback)

    @property
    def public_base_url(self) -> str:
        """`base_url`, or one made from the address listened on (a wildcard address names no host a client could
        use, so links then say `localhost`: set HEARTH_BASE_URL when clients come from elsewhere)."""
        if self.base_url:
            return self.base_url.rstrip("/")
        host = "localhost" if self.host in ("", "0.0.0.0", "::") else self.host
        return f"http://{f'[{host}]' if ':' in host else host}:{self.port}"
