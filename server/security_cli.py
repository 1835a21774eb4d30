"""`hearth clients|users|tokens|keys|launch`: operating the built-in authorization server. Each prints JSON."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Awaitable, Callable

from hearth.security.authority import AuthError, Authority
from hearth.server.settings import Settings
from hearth.storage import audit_log, open_store, security_records

Action = Callable[[Authority, argparse.Namespace], Awaitable[Any]]


def add_parsers(commands: Any) -> None:
    clients = _group(commands, "clients", "register, list and remove client applications")
    add = _command(clients, "add", "register a client; prints it, with its client_secret if --secret", _add_client)
    add.add_argument("name", help="the client_id")
    add.add_argument("--scope", required=True, help='the most it may be granted, e.g. "system/*.rs"')
    add.add_argument("--jwks", type=Path, help="its public keys (JWKS file): private_key_jwt (Backend Services)")
    add.add_argument("--jwks-url", help="where its public keys are published: private_key_jwt")
    add.add_argument("--secret", action="store_true", help="a generated secret: client_secret_basic")
    add.add_argument("--public", action="store_true", help="a public (browser) app: PKCE, no secret")
    add.add_argument("--mask", default="", help="elements it never receives, e.g. Patient.name,Patient.address")
    add.add_argument("--redirect-uri", action="append", default=[], help="allowed redirect URI (repeatable)")
    _command(clients, "list", "the registered clients", lambda a, _: _listed(a, "client"))
    remove = _command(clients, "remove", "remove a client (its tokens stop working within 30 s)",
                      lambda a, args: _removed(a.remove_client(args.name)))
    remove.add_argument("name")

    users = _group(commands, "users", "add, list and remove users of the login page")
    add = _command(users, "add", "add a user; prints it, with a generated password unless --password", _add_user)
    add.add_argument("name")
    add.add_argument("--role", required=True, help="admin, clinician, integration, auditor or patient")
    add.add_argument("--patient", help="Patient/ID: the patient a patient user is")
    add.add_argument("--fhir-user", help="the user as a FHIR resource, e.g. Practitioner/123")
    add.add_argument("--password", help="the password (default: generated and printed once)")
    _command(users, "list", "the users", lambda a, _: _listed(a, "user"))
    remove = _command(users, "remove", "remove a user", lambda a, args: _removed(a.records.delete("user", args.name)))
    remove.add_argument("name")

    tokens = _group(commands, "tokens", "issue access tokens (for operators and tests)")
    issue = _command(tokens, "issue", "print a signed access token whose audience is the base URL", _issue)
    issue.add_argument("--client", required=True, help="a registered client's name")
    issue.add_argument("--scope", required=True, help="scopes asked for (narrowed to the client's and role's)")
    issue.add_argument("--patient", help="the launch patient's id")
    issue.add_argument("--user", help="a user's name (their role bounds the scopes)")
    issue.add_argument("--expires", type=int, default=3600, help="seconds (default 3600)")

    keys = _group(commands, "keys", "the authorization server's signing keys")
    _command(keys, "list", "key ids and creation times", _list_keys)
    _command(keys, "rotate", "sign with a new key from now on (older keys stay published)",
             lambda a, _: _rotated(a))
    remove = _command(keys, "remove", "stop accepting tokens signed with a key", lambda a, args: _removed(
        a.keys.remove(args.kid)))
    remove.add_argument("kid")

    audit = commands.add_parser("audit", help="the audit log").add_subparsers(dest="action", required=True)
    export = audit.add_parser("export", help="every AuditEvent as NDJSON on stdout, oldest first")
    _common(export)
    export.add_argument("--since", help="only those recorded at or after this instant or date (2026-12-01)")
    export.set_defaults(run=_export_audit)

    launch = commands.add_parser("launch", help="make an EHR launch context; prints its launch id")
    _common(launch)
    launch.add_argument("--patient", required=True, help="the patient in context (id)")
    launch.add_argument("--encounter", help="the encounter in context (id)")
    launch.set_defaults(run=lambda args: _run(args, _launch))


def _group(commands: Any, name: str, help_text: str) -> Any:
    parser = commands.add_parser(name, help=help_text)
    return parser.add_subparsers(dest="action", required=True)


def _command(group: Any, name: str, help_text: str, action: Action) -> argparse.ArgumentParser:
    parser = group.add_parser(name, help=help_text)
    _common(parser)
    parser.set_defaults(run=lambda args: _run(args, action))
    return parser


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--storage", help="SQLite file or mongodb:// URL (HEARTH_STORAGE, default ./data/hearth.db)")
    parser.add_argument("--base-url", help="the server's public base URL: tokens' audience (HEARTH_BASE_URL)")


def _run(args: argparse.Namespace, action: Action) -> int:
    settings = Settings.from_env(storage=args.storage, base_url=args.base_url)

    async def run() -> Any:
        async with _opened(settings) as store:
            authority = Authority(security_records(store), settings.public_base_url)
            await authority.open()
            return await action(authority, args)

    try:
        result = asyncio.run(run())
    except (AuthError, ValueError, OSError) as error:
        print(f"hearth {args.command}: {getattr(error, 'description', error)}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2))
    return 0


@asynccontextmanager
async def _opened(settings: Settings) -> AsyncIterator[Any]:
    """The store the settings name, open for one command."""
    store = open_store(settings.storage, synchronous=settings.sqlite_synchronous)
    if hasattr(store, "open"):
        await store.open()
    try:
        yield store
    finally:
        await store.close()


def _export_audit(args: argparse.Namespace) -> int:
    settings = Settings.from_env(storage=args.storage, base_url=args.base_url)

    async def run() -> None:
        async with _opened(settings) as store:
            log = audit_log(store)
            try:
                async for body in log.export(args.since):
                    sys.stdout.buffer.write(body + b"\n")
            finally:
                await log.close()

    asyncio.run(run())
    return 0


async def _add_client(authority: Authority, args: argparse.Namespace) -> Any:
    jwks = json.loads(args.jwks.read_text()) if args.jwks else None
    mask = tuple(path.strip() for path in args.mask.split(",") if path.strip())
    return await authority.add_client(args.name, args.scope, jwks=jwks, jwks_url=args.jwks_url, secret=args.secret,
                                      mask=mask, redirect_uris=tuple(args.redirect_uri), public=args.public)


async def _add_user(authority: Authority, args: argparse.Namespace) -> Any:
    return await authority.add_user(args.name, args.role, args.patient, args.fhir_user, args.password)


async def _issue(authority: Authority, args: argparse.Namespace) -> Any:
    client = await authority.client(args.client)
    if client is None:
        raise AuthError("invalid_client", f"No client named {args.client!r}")
    user = await authority.records.get("user", args.user) if args.user else None
    if args.user and user is None:
        raise AuthError("invalid_request", f"No user named {args.user!r}")
    issued = await authority.issue(client, args.scope, user=user, patient=args.patient, expires=args.expires)
    return {"access_token": issued.token, "token_type": "bearer", "expires_in": issued.expires_in,
            "scope": issued.claims["scope"], **({"patient": issued.claims["patient"]}
                                                if "patient" in issued.claims else {})}


async def _listed(authority: Authority, kind: str) -> Any:
    hidden = ("secret_sha256", "salt", "password_hash")
    return [{k: v for k, v in record.items() if k not in hidden} for record in await authority.records.list(kind)]


async def _list_keys(authority: Authority, args: argparse.Namespace) -> Any:
    return [{"kid": key["kid"], "alg": key["alg"], "created": key["created"]}
            for key in await authority.records.list("key")]


async def _rotated(authority: Authority) -> Any:
    return {"kid": await authority.keys.rotate()}


async def _removed(done: Awaitable[bool]) -> Any:
    if not await done:
        raise ValueError("nothing by that name")
    return {"removed": True}


async def _launch(authority: Authority, args: argparse.Namespace) -> Any:
    import secrets
    import time
    launch = secrets.token_urlsafe(16)
    context = {"patient": args.patient.removeprefix("Patient/"), "encounter": args.encounter}
    await authority.records.put("launch", launch, context, time.time() + 3600)
    return {"launch": launch, **context}
