"""`hearth`: the command line (serve, import)."""

from __future__ import annotations

import argparse
import sys

from server.settings import Settings


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from server.app import create_app
    from server.logs import configure

    settings = Settings.from_env(host=args.host, port=args.port, storage=args.storage, base_url=args.base_url,
                                 max_body_bytes=args.max_body_bytes, log_level=args.log_level)
    configure(settings.log_level)
    print(f"Hearth serving FHIR R4 at {settings.public_base_url} (storage: {settings.storage})", file=sys.stderr)
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level=settings.log_level,
                access_log=False, lifespan="on")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hearth", description="Hearth, a FHIR R4 server")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the server (settings also from HEARTH_* variables)")
    serve.add_argument("--host", help="interface to listen on (HEARTH_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (HEARTH_PORT, default 8080)")
    serve.add_argument("--storage", help="SQLite file or mongodb:// URL (HEARTH_STORAGE, default ./data/hearth.db)")
    serve.add_argument("--base-url", help="public base URL (HEARTH_BASE_URL, default http://HOST:PORT)")
    serve.add_argument("--max-body-bytes", type=int, help="request body limit (HEARTH_MAX_BODY_BYTES, 16 MiB)")
    serve.add_argument("--log-level", help="debug, info, warning, error (HEARTH_LOG_LEVEL, default warning)")
    serve.set_defaults(run=_serve)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
