"""`hearth connector run|status|dead-letters`: operating the connectors a TOML file declares (docs/connectors.md),
on the server's wiring (writes go through the dispatcher as the caller `connector NAME`). Each prints JSON."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any, Awaitable, Callable

from hearth.connectors.config import ConfigError
from hearth.connectors.runner import Connectors
from hearth.server.logs import configure
from hearth.server.settings import Settings
from hearth.server.wiring import close_context, open_connectors, open_context

Action = Callable[[Connectors, argparse.Namespace], Awaitable[Any]]


def add_parser(commands: Any) -> None:
    group = commands.add_parser("connector", help="run connectors, see their status and dead letters")
    actions = group.add_subparsers(dest="action", required=True)
    run = _command(actions, "run", "run a connector on its schedule here until interrupted, or one pass with "
                                   "--once (refused while another process holds its lease)", _run_pass)
    run.add_argument("name")
    run.add_argument("--once", action="store_true", help="one pass now, then exit (an HL7 v2 connector: convert "
                                                         "what its inbox holds pending)")
    status = _command(actions, "status", "each connector's state, circuit, last success and error, lag, "
                                         "checkpoint and counters", lambda c, a: c.status(a.name))
    status.add_argument("name", nargs="?")
    letters = _command(actions, "dead-letters", "what a connector could not store: list, show, retry, discard",
                       _dead_letters)
    letters.add_argument("name")
    letters.add_argument("--show", metavar="ID", help="one dead letter in full")
    letters.add_argument("--retry", metavar="ID", help="try one again")
    letters.add_argument("--all", action="store_true", help="try them all again")
    letters.add_argument("--discard", metavar="ID", help="drop one (a conflict: Hearth's version stays)")


def _command(actions: Any, name: str, help_text: str, action: Action) -> argparse.ArgumentParser:
    parser = actions.add_parser(name, help=help_text)
    parser.add_argument("--connectors", metavar="FILE", help="the connectors' TOML file (HEARTH_CONNECTORS)")
    parser.add_argument("--storage", help="SQLite file or mongodb:// URL (HEARTH_STORAGE, default ./data/hearth.db)")
    parser.add_argument("--base-url", help="the server's public base URL (HEARTH_BASE_URL)")
    parser.add_argument("--log-level", help="debug, info (each retry), warning, error (HEARTH_LOG_LEVEL, default "
                                            "warning)")
    parser.set_defaults(run=lambda args: _run(args, action))
    return parser


def _run(args: argparse.Namespace, action: Action) -> int:
    settings = Settings.from_env(storage=args.storage, base_url=args.base_url, connectors=args.connectors,
                                 log_level=args.log_level)
    configure(settings.log_level)
    if not settings.connectors:
        print("hearth connector: name the connectors' file with --connectors FILE or HEARTH_CONNECTORS",
              file=sys.stderr)
        return 2

    async def run() -> Any:
        ctx, subscriptions = await open_context(settings)
        try:
            connectors = await open_connectors(ctx, settings)
            assert connectors is not None
            try:
                return await action(connectors, args)
            finally:
                await connectors.stop()
        finally:
            await close_context(ctx, subscriptions)

    try:
        result = asyncio.run(run())
    except KeyboardInterrupt:  # `run` without --once ends so: the pass under way stopped, its lease released
        return 130
    except (ConfigError, KeyError, OSError) as error:
        print(f"hearth connector: {error.args[0] if isinstance(error, KeyError) else error}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2))
    if isinstance(result, dict) and result.get("refused"):
        return 3
    return 1 if isinstance(result, dict) and result.get("state") == "failing" else 0


async def _run_pass(connectors: Connectors, args: argparse.Namespace) -> Any:
    if not args.once:  # the schedule in the foreground (a pass whenever the lease is free), until Ctrl-C
        await connectors.run_forever(args.name)
    status = await connectors.run_once(args.name)
    if status is None:
        holder = await connectors.get(args.name).state.lease_holder()
        return {"refused": f"connector {args.name} is running in {holder or 'another process'}"}
    return status


async def _dead_letters(connectors: Connectors, args: argparse.Namespace) -> Any:
    if args.retry or args.all:
        return await connectors.retry(args.name, None if args.all else args.retry)
    if args.discard:
        return {"id": args.discard, "discarded": await connectors.discard(args.name, args.discard)}
    letters = await connectors.dead_letters(args.name, args.show)
    if args.show:
        return letters[0] if letters else {"error": f"no dead letter {args.show}"}
    return [{key: letter.get(key) for key in ("id", "reason", "error", "url", "time")} for letter in letters]
