"""The connectors an operator declares: a TOML file (`HEARTH_CONNECTORS` or `--connectors FILE`), one table each.

    [connectors.ehr]
    kind = "fhir-poll"                       # or "bulk-export"
    base = "https://ehr.example.org/fhir/r4"  # the upstream FHIR base (operator's: private addresses allowed)
    types = ["Patient", "Observation"]       # nothing else is requested or stored
    mask = ["Patient.photo"]                 # elements dropped before storing
    every = "60s"                            # or "continuous"
    since = "2024-01-01T00:00:00Z"           # the first checkpoint
    conflict = "upstream-wins"               # local-wins | newest-wins | manual
    rate = 5                                 # requests per second, at most
    concurrency = 4                          # requests in flight, at most
    [connectors.ehr.auth]
    kind = "backend-services"                # bearer | client-secret | backend-services; or auth = "none"
    client_id = "hearth"
    key_file = "/etc/hearth/ehr-key.pem"
    alg = "RS384"
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

from hearth.capability.resource_types import RESOURCE_TYPES
from hearth.connectors.hl7v2.config import KIND as HL7_KIND, Hl7Config, parse_hl7
from hearth.connectors.config_values import ConfigError, choice, flag, positive, seconds, whole
from hearth.storage.clock import parse_instant

KINDS = ("fhir-poll", "bulk-export", HL7_KIND)
CONFLICTS = ("upstream-wins", "local-wins", "newest-wins", "manual")
AUTH_KINDS = ("none", "bearer", "client-secret", "backend-services")
_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,21}$")  # part of every local id: NAME.h + 40 characters fits in 64


@dataclass(frozen=True)
class AuthConfig:
    kind: str = "none"
    token: str = ""  # bearer
    client_id: str = ""
    secret: str = ""  # client-secret
    key_file: str = ""  # backend-services: the private key (PEM)
    alg: str = "RS384"  # RS384 | ES384
    key_id: str = ""  # the `kid` the upstream knows the key by
    scope: str = "system/*.rs"


@dataclass(frozen=True)
class ConnectorConfig:
    name: str
    kind: str
    base: str
    types: tuple[str, ...]
    mask: tuple[str, ...] = ()
    every: float | None = 60.0  # seconds between passes; None: continuous (the next pass right after one ends)
    since: datetime | None = None
    conflict: str = "upstream-wins"
    rate: float = 10.0
    concurrency: int = 4
    auth: AuthConfig = field(default_factory=AuthConfig)
    timeout: float = 30.0  # seconds for one upstream request
    retries: int = 5  # attempts after the first, for one request
    page_size: int = 100  # _count asked of the upstream
    export_level: str = "system"  # bulk-export: system | patient | group/ID
    then_poll: bool = False  # bulk-export: a first export, then polling (hybrid)


def load(path: str | Path) -> dict[str, ConnectorConfig | Hl7Config]:
    """The connectors declared in a TOML file, by name."""
    try:
        document = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise ConfigError(f"{path}: {error}") from None
    return parse(document)


def parse(document: dict[str, Any]) -> dict[str, ConnectorConfig | Hl7Config]:
    tables = document.get("connectors", {})
    if not isinstance(tables, dict):
        raise ConfigError("[connectors] must be a table of connector tables")
    return {name: _connector(name, table) for name, table in tables.items()}


def _connector(name: str, table: Any) -> ConnectorConfig | Hl7Config:
    where = f"connector {name!r}"
    if not _NAME.match(name):
        raise ConfigError(f"{where}: names are 1-22 lower-case letters, digits and '-'")
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: must be a table")
    if table.get("kind") == HL7_KIND:
        return parse_hl7(name, table, where)
    known = {"kind", "base", "types", "mask", "every", "since", "conflict", "rate", "concurrency", "auth", "timeout",
             "retries", "page_size", "export_level", "then_poll"}
    unknown = sorted(set(table) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}")
    kind = choice(where, "kind", table.get("kind"), KINDS)
    base = table.get("base")
    if not isinstance(base, str) or not re.match(r"^https?://[^/\s]+", base):
        raise ConfigError(f"{where}: 'base' must be the upstream's http(s) FHIR base URL")
    types = table.get("types")
    if not isinstance(types, list) or not types or not all(isinstance(t, str) for t in types):
        raise ConfigError(f"{where}: 'types' must list the resource types to bring (nothing else is stored)")
    wrong = [t for t in types if t not in RESOURCE_TYPES]
    if wrong:
        raise ConfigError(f"{where}: not R4 resource types: {', '.join(wrong)}")
    mask = table.get("mask", [])
    if not isinstance(mask, list) or not all(isinstance(m, str) and "." in m for m in mask):
        raise ConfigError(f"{where}: 'mask' lists elements as Type.element")
    wrong_mask = sorted({m.split(".", 1)[0] for m in mask} - set(types))
    if wrong_mask:
        raise ConfigError(f"{where}: 'mask' names types the connector does not bring: {', '.join(wrong_mask)}")
    since = table.get("since")
    try:  # TOML may give a date or datetime of its own, or a string
        since_at = None if since is None else parse_instant(
            since.isoformat() if isinstance(since, (date, datetime)) else str(since))
    except ValueError:
        raise ConfigError(f"{where}: 'since' must be an instant such as 2024-01-01T00:00:00Z") from None
    export_level = table.get("export_level", "system")
    if not isinstance(export_level, str) or (export_level not in ("system", "patient")
                                             and not re.match(r"^group/[A-Za-z0-9\-.]{1,64}$", export_level)):
        raise ConfigError(f"{where}: 'export_level' is system, patient or group/ID")
    return ConnectorConfig(
        name=name, kind=kind, base=base.rstrip("/"), types=tuple(dict.fromkeys(types)), mask=tuple(mask),
        every=_every(where, table.get("every", "60s")), since=since_at,
        conflict=choice(where, "conflict", table.get("conflict", "upstream-wins"), CONFLICTS),
        rate=positive(where, "rate", table.get("rate", 10.0)),
        concurrency=whole(where, "concurrency", table.get("concurrency", 4), least=1),
        auth=_auth(where, table.get("auth", "none")),
        timeout=positive(where, "timeout", seconds(where, "timeout", table.get("timeout", 30.0))),
        retries=whole(where, "retries", table.get("retries", 5), least=0),
        page_size=whole(where, "page_size", table.get("page_size", 100), least=1),
        export_level=export_level, then_poll=flag(where, "then_poll", table.get("then_poll", False)))


def _auth(where: str, value: Any) -> AuthConfig:
    if value == "none":
        return AuthConfig()
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: 'auth' is \"none\" or a table with a kind")
    kind = choice(where, "auth.kind", value.get("kind"), AUTH_KINDS)
    fields = {key: str(item) for key, item in value.items() if key != "kind"}
    unknown = sorted(set(fields) - {"token", "client_id", "secret", "key_file", "alg", "key_id", "scope"})
    if unknown:
        raise ConfigError(f"{where}: unknown auth key(s) {', '.join(unknown)}")
    needed = {"bearer": ("token",), "client-secret": ("client_id", "secret"),
              "backend-services": ("client_id", "key_file")}.get(kind, ())
    missing = [key for key in needed if not fields.get(key)]
    if missing:
        raise ConfigError(f"{where}: auth kind {kind} needs {', '.join(missing)}")
    auth = AuthConfig(kind=kind, **fields)
    if auth.alg not in ("RS384", "ES384"):
        raise ConfigError(f"{where}: auth alg is RS384 or ES384")
    return auth


def _every(where: str, value: Any) -> float | None:
    if value == "continuous":
        return None
    return positive(where, "every", seconds(where, "every", value))
