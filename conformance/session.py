"""The state of one TestScript run: fixtures, responses by id, the last exchange, variables."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from hearth.conformance.client import Exchange
from hearth.conformance.paths import PathError, as_text, evaluate_expression, evaluate_path
from hearth.conformance.script import Script

_VARIABLE = re.compile(r"\$\{([^}]+)\}")


@dataclass
class Session:
    script: Script
    servers: dict[int, str]  # destination index -> base URL (1 is the default)
    given: dict[str, str] = field(default_factory=dict)  # values supplied on the command line
    fixtures: dict[str, Any] = field(default_factory=dict)  # fixture id -> its resource (static or from a response)
    exchanges: dict[str, Exchange] = field(default_factory=dict)  # responseId / requestId -> exchange
    # fixture id -> (type, id) on the server once a create/update sent it: targetId then means that resource
    server_ids: dict[str, tuple[str, str]] = field(default_factory=dict)
    last: Exchange | None = None

    def __post_init__(self) -> None:
        self.fixtures.update({key: fixture.resource for key, fixture in self.script.fixtures.items()})
        self.variables = {item["name"]: item for item in self.script.resource.get("variable", ())}

    def base(self, destination: int | None = None) -> str:
        return self.servers.get(destination or 1, self.servers[1])

    def record(self, exchange: Exchange, response_id: str | None, request_id: str | None) -> None:
        self.last = exchange
        if response_id:
            self.exchanges[response_id] = exchange
            self.fixtures[response_id] = exchange.resource
        if request_id:
            self.exchanges[request_id] = exchange

    def resource(self, source_id: str | None) -> Any:
        """The resource an assert or variable reads: a fixture or a response by id, else the last response."""
        if source_id:
            if source_id not in self.fixtures:
                raise KeyError(source_id)
            return self.fixtures[source_id]
        return self.last.resource if self.last else None

    def exchange(self, source_id: str | None) -> Exchange | None:
        return self.exchanges.get(source_id) if source_id else self.last

    # -------------------------------------------------------------- variables

    def substitute(self, text: str | None) -> str | None:
        """`${name}` replaced by the variable's current value (unknown names are left as written)."""
        if not text or "${" not in text:
            return text
        return _VARIABLE.sub(lambda match: self.value(match.group(1), match.group(0)), text)

    def value(self, name: str, unknown: str = "") -> str:
        """A variable evaluated now: command-line value, headerField, path or expression, then defaultValue."""
        if name in self.given:
            return self.given[name]
        variable = self.variables.get(name)
        if variable is None:
            return unknown
        found: str | None = None
        try:
            if variable.get("headerField"):
                exchange = self.exchange(variable.get("sourceId"))
                if exchange is not None:
                    found = exchange.headers.get(variable["headerField"].lower())
            elif variable.get("path") or variable.get("expression"):
                resource = self.resource(variable.get("sourceId"))
                if resource is not None:
                    values = (evaluate_path(resource, variable["path"]) if variable.get("path")
                              else evaluate_expression(resource, variable["expression"]))
                    found = as_text(values[0]) if values else None
        except (KeyError, PathError):
            found = None
        if found is None:
            found = variable.get("defaultValue")
        return unknown if found is None else found
