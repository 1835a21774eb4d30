"""What other processes write, followed by every process: the change log is read every `interval` seconds and each
write hook is told of the changes of its types (`WriteHook.observed`), so that what a process holds in memory
(SearchParameters, ValueSets and CodeSystems, Subscriptions) follows the writes made through the others of a
`hearth serve --workers N` group or of other replicas on one database."""

from __future__ import annotations

import logging

from hearth.interactions.context import Context
from hearth.interactions.periodic import every

log = logging.getLogger("hearth.follower")

_BATCH = 1000


class Follower:
    def __init__(self, ctx: Context, interval: float) -> None:
        self.ctx, self.interval = ctx, interval
        self.after = ctx.loaded_seq  # the newest change told to the hooks: none after the definitions were loaded

    async def step(self) -> int:
        """Tell the hooks of every change after the last one told; how many there were."""
        told = 0
        while True:
            changes = await self.ctx.store.changes(self.after, _BATCH)
            for hook in self.ctx.hooks:
                concerned = [change for change in changes if hook.concerns(change.type)]
                if concerned:
                    await hook.observed(self.ctx, concerned)
            if changes:
                self.after = changes[-1].seq
            told += len(changes)
            if len(changes) < _BATCH:
                return told

    async def run(self) -> None:
        # after a failed pass the next reads on from the same place
        await every(self.interval, self.step, log, "following the change log failed")
