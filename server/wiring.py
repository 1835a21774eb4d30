"""One wiring for every entry point (the server, `hearth import`, the benchmarks, connectors): the store, the
context every interaction gets, the definitions stored in the database, and the subscription service's hooks."""

from __future__ import annotations

from hearth.interactions.context import Context
from hearth.interactions.definitions import Definitions, load
from hearth.interactions.limits import Limits
from hearth.server.settings import Settings
from hearth.storage import open_store
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
    await load(ctx)
    subscriptions = subscriptions or SubscriptionService(SubscriptionConfig.from_settings(settings))
    subscriptions.install(ctx)
    return ctx, subscriptions


async def close_context(ctx: Context, subscriptions: SubscriptionService) -> None:
    await subscriptions.stop()
    await ctx.store.close()
