"""One wiring for every entry point (the server, `hearth import`, the benchmarks, connectors): the store, the
context every interaction gets with its SMART policy, the definitions stored in the database, the subscription
service's hooks, and the authorization server's records."""

from __future__ import annotations

from hearth.connectors.config import load as load_connectors
from hearth.connectors.operations import install as install_operations
from hearth.connectors.runner import Connectors
from hearth.interactions.context import Context
from hearth.interactions.definitions import Definitions, load
from hearth.interactions.export.config import ExportConfig, export_directory
from hearth.interactions.export.service import ExportService
from hearth.interactions.limits import Limits
from hearth.interactions.operations import install_all
from hearth.security.audit import Audit
from hearth.security.authority import Authority
from hearth.security.capability import rest_security
from hearth.security.issuers import ExternalTokens, parse_issuers
from hearth.security.policy import SmartPolicy
from hearth.server.settings import Settings
from hearth.storage import audit_log, connector_records, open_store, security_records
from hearth.storage.base import Store
from hearth.subscriptions.config import SubscriptionConfig
from hearth.subscriptions.service import SubscriptionService


async def open_context(settings: Settings, store: Store | None = None,
                       subscriptions: SubscriptionService | None = None) -> tuple[Context, SubscriptionService]:
    """The context on `store` (else the one `settings.storage` names, opened), with the SearchParameters,
    ValueSets and CodeSystems stored in it loaded, and the subscription service installed (its write checks run
    on every write of this process; the server also starts it), made from the settings unless given.
    Close with `close_context`."""
    if store is None:
        shared = {"writer": settings.sqlite_writer} if settings.sqlite_writer else {}  # (SQLite only)
        store = open_store(settings.storage, synchronous=settings.sqlite_synchronous,
                           search_timeout=settings.search_timeout, **shared)
    if hasattr(store, "open"):
        await store.open()
    ctx = Context(store, settings.public_base_url, settings.default_count, settings.max_count,
                  Limits.from_settings(settings), settings.conditional_delete_multiple, hooks=[Definitions()])
    ctx.policy = SmartPolicy(ctx, settings.auth_required)
    if settings.audit:
        log = audit_log(store)
        if hasattr(log, "open"):
            await log.open()
        ctx.audit = Audit(ctx, log)
    ctx.capability_extras["security"] = rest_security(ctx.base_url, settings.auth_required)
    ctx.loaded_seq = await store.last_seq()
    await load(ctx)
    subscriptions = subscriptions or SubscriptionService(SubscriptionConfig.from_settings(settings))
    subscriptions.install(ctx)
    install_all(ctx)
    return ctx, subscriptions


async def open_authority(ctx: Context, settings: Settings) -> Authority:
    """The authorization server's records and keys in the context's database (made on first use), trusting the
    other issuers the settings name."""
    external = None
    if settings.auth_issuers or settings.auth_introspection:
        external = ExternalTokens(parse_issuers(settings.auth_issuers), ctx.base_url, settings.auth_introspection,
                                  settings.auth_introspection_client)
    authority = Authority(security_records(ctx.store), ctx.base_url, external)
    await authority.open()
    return authority


async def open_connectors(ctx: Context, settings: Settings) -> Connectors | None:
    """The connectors `settings.connectors` declares (None: no file), their operations registered; not started."""
    if not settings.connectors:
        return None
    connectors = Connectors(ctx, load_connectors(settings.connectors), connector_records(ctx.store))
    await connectors.open()
    install_operations(ctx, connectors)
    return connectors


async def open_exports(ctx: Context, settings: Settings) -> ExportService:
    """The Bulk Data export service on the context (its operations installed, its jobs table made); not started."""
    config = ExportConfig(export_directory(settings.export_dir, settings.storage), settings.export_retention,
                          settings.export_max_jobs, settings.export_file_bytes, settings.export_poll,
                          settings.export_lease, requires_token=settings.auth_required)
    exports = ExportService(ctx, config)
    exports.install()
    await exports.open()
    return exports


async def close_context(ctx: Context, subscriptions: SubscriptionService) -> None:
    await subscriptions.stop()
    await ctx.audit.close()
    await ctx.store.close()
