"""`hearth`: the command line (serve, import, and operating security: clients, users, tokens, keys, launch)."""

from __future__ import annotations

import argparse
import socket
import sys
from importlib import metadata

from hearth.server.settings import Settings

SHUTDOWN_SECONDS = 5  # on SIGTERM, requests still running after this long are cancelled


def _serve(args: argparse.Namespace) -> int:
    from hearth.server import workers
    from hearth.server.logs import configure

    settings = Settings.from_env(host=args.host, port=args.port, storage=args.storage, base_url=args.base_url,
                                 max_body_bytes=args.max_body_bytes, log_level=args.log_level, auth=args.auth,
                                 connectors=args.connectors, workers=args.workers)
    configure(settings.log_level)
    # threads of this process (the SQLite readers, the audit log's) get the GIL within 0.5 ms instead of Python's
    # 5 ms: a search waits for its reader thread, and a thread kept waiting behind the event loop halves throughput
    sys.setswitchinterval(0.0005)
    listening = workers.inherited_socket()
    if listening is not None:  # one server process of a `--workers N` group, started by its supervisor
        workers.watch_parent()
        _run(settings, args, listening)
        return 0
    if settings.connectors:  # a mistake in the file is said now, plainly, not as a failed start-up's traceback
        from hearth.connectors.config import ConfigError, load
        try:
            load(settings.connectors)
        except ConfigError as error:
            print(f"hearth serve: {error}", file=sys.stderr)
            return 2
    print(f"Hearth serving FHIR R4 at {settings.public_base_url} (storage: {settings.storage})", file=sys.stderr)
    if not settings.base_url and settings.host in ("", "0.0.0.0", "::"):
        print(f"Hearth: no HEARTH_BASE_URL given, so links say {settings.public_base_url} and only requests for "
              "localhost are answered; set HEARTH_BASE_URL to the URL clients use", file=sys.stderr)
    if settings.workers > 1:
        tls = [arg for flag, value in (("--ssl-certfile", args.ssl_certfile), ("--ssl-keyfile", args.ssl_keyfile))
               if value for arg in (flag, value)]
        return workers.Group(settings, SHUTDOWN_SECONDS, tls).run()
    _run(settings, args)
    return 0


def _run(settings: Settings, args: argparse.Namespace, listening: socket.socket | None = None) -> None:
    """Serve on uvicorn, on `settings`' address or on the `listening` socket (a group's)."""
    import uvicorn

    from hearth.server.app import create_app
    from hearth.server.metrics import Observability
    from hearth.server.protocol import bounded_protocol

    config = uvicorn.Config(
        Observability(create_app(settings)), host=settings.host, port=settings.port,
        log_level=settings.log_level, access_log=False, lifespan="on",
        log_config=None,  # uvicorn's own lines go through the root JSON handler too
        http=bounded_protocol(settings.header_timeout, settings.body_timeout, settings.max_header_bytes,
                              settings.max_connections),
        proxy_headers=False,  # server/proxies.py reads them, from HEARTH_TRUSTED_PROXIES only
        timeout_graceful_shutdown=SHUTDOWN_SECONDS,
        ssl_certfile=args.ssl_certfile, ssl_keyfile=args.ssl_keyfile)
    server = uvicorn.Server(config)
    try:
        server.run(sockets=None if listening is None else [listening])
    except KeyboardInterrupt:
        pass
    if not server.started:  # as uvicorn.run: a failed start-up is an exit status
        sys.exit(3)


def _import(args: argparse.Namespace) -> int:
    import asyncio

    from hearth.server.load import find_files, import_files
    from hearth.server.logs import configure
    from hearth.server.progress import ProgressBar

    settings = Settings.from_env(storage=args.storage, base_url=args.base_url, log_level=args.log_level)
    configure(settings.log_level)
    try:
        files = find_files(args.paths)
    except FileNotFoundError as exc:
        print(f"hearth import: {exc}", file=sys.stderr)
        return 2
    progress = ProgressBar(sum(path.stat().st_size for path in files))
    print(f"Importing {len(files):,} files into {settings.storage}", file=sys.stderr)
    report = asyncio.run(import_files(settings, files, args.concurrency, progress))
    print(report.summary())
    return 1 if report.errors else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hearth", description="Hearth, a FHIR R4 server")
    parser.add_argument("--version", action="version", version=f"hearth {metadata.version('hearth')}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the server (settings also from HEARTH_* variables)")
    serve.add_argument("--host", help="interface to listen on (HEARTH_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (HEARTH_PORT, default 8080)")
    serve.add_argument("--storage", help="SQLite file or mongodb:// URL (HEARTH_STORAGE, default ./data/hearth.db)")
    serve.add_argument("--base-url", help="public base URL (HEARTH_BASE_URL, default http://HOST:PORT)")
    serve.add_argument("--max-body-bytes", type=int, help="request body limit (HEARTH_MAX_BODY_BYTES, 16 MiB)")
    serve.add_argument("--log-level", help="debug, info, warning, error (HEARTH_LOG_LEVEL, default warning)")
    serve.add_argument("--auth", choices=("required", "open"),
                       help="require bearer tokens (HEARTH_AUTH; default: required unless on loopback)")
    serve.add_argument("--ssl-certfile", help="serve HTTPS with this certificate (PEM)")
    serve.add_argument("--ssl-keyfile", help="the certificate's private key (PEM)")
    serve.add_argument("--connectors", metavar="FILE", help="run the connectors this TOML file declares "
                                                            "(HEARTH_CONNECTORS; docs/connectors.md)")
    serve.add_argument("--workers", type=int, help="server processes sharing the port and the store (HEARTH_WORKERS, "
                                                   "default: the cores; docs/scale-out.md)")
    serve.set_defaults(run=_serve)
    load = commands.add_parser("import", help="load NDJSON files and Bundles (.json, .ndjson; .gz, .bz2; folders)")
    load.add_argument("paths", nargs="+", metavar="PATH", help="files or folders; 0-* files are loaded first")
    load.add_argument("--storage", help="SQLite file or mongodb:// URL (HEARTH_STORAGE, default ./data/hearth.db)")
    load.add_argument("--base-url", help="the server's public base URL, for its absolute references (HEARTH_BASE_URL)")
    load.add_argument("--concurrency", type=int, default=4, help="files loaded at the same time (default 4)")
    load.add_argument("--log-level", help="debug, info, warning, error (HEARTH_LOG_LEVEL, default warning)")
    load.set_defaults(run=_import)
    from hearth.conformance.cli import add_parser as add_conformance_parser  # argparse only; the runner loads on use

    add_conformance_parser(commands)
    from hearth.server.connector_cli import add_parser as add_connector_parser
    add_connector_parser(commands)
    from hearth.server.security_cli import add_parsers as add_security_parsers

    add_security_parsers(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
