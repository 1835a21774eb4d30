"""One wiring for every entry point (the server, `hearth import`, the benchmarks, connectors): the store, the
context every interaction gets with its SMART policy, the definitions stored in the database, the subscription
service's hooks, and the authorization server's records."""

from __future__ import annotations

from hearth.interactions.context import Context
from hearth.interactions.definitions import Definitions, load
from hearth.interactions.limits import Limits
from hearth.security.authority import Authority
from hearth.security.capability import rest_security
from hearth.security.policy import SmartPolicy
from hearth.server.settings import Settings
from hearth.storage import open_store, security_records
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
        store = open_store(settings.storage, synchronous=settings.sqlite_synchronous,
                           search_timeout=settings.search_timeout)
    if hasattr(store, "open"):
        await store.open()
    ctx = Context(store, settings.public_base_url, settings.default_count, settings.max_count,
                  Limits.from_settings(settings), settings.conditional_delete_multiple, hooks=[Definitions()])
    ctx.policy = SmartPolicy(ctx, settings.auth_required)
    ctx.capability_extras["security"] = rest_security(ctx.base_url, settings.auth_required)
    await load(ctx)
    subscriptions = subscriptions or SubscriptionService(SubscriptionConfig.from_settings(settings))
    subscriptions.install(ctx)
    return ctx, subscriptions


async def open_authority(ctx: Context) -> Authority:
    """The authorization server's records and keys in the context's database (made on first use)."""
    authority = Authority(security_records(ctx.store), ctx.base_url)
    await authority.open()
    return authority


async def close_context(ctx: Context, subscriptions: SubscriptionService) -> None:
    await subscriptions.stop()
    await ctx.store.close()
