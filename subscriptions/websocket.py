"""The websocket channel: clients connect to `[base]/$subscription-ws` and bind to subscriptions.

R4: the client sends `bind <id>`; Hearth answers `bound <id>` and then sends `ping <id>` whenever the
subscription has new events (the client then searches or calls `$events`). Backport subscriptions
(websocket channel) get the notification Bundles themselves instead: a handshake on bind, then one
Bundle per event and heartbeats when idle. Backport clients bind with `bind-with-token <token>`, the
token from `Subscription/[id]/$get-ws-binding-token` (signed with a key kept in the database, so any
Hearth process on it accepts it; valid for an hour). Events come from the durable queue by event number, so a
socket sees everything recorded after it bound, whichever process recorded it.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from typing import Sequence

from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect

from hearth.interactions.context import Context
from hearth.subscriptions import notifications
from hearth.subscriptions.model import Subscription
from hearth.subscriptions.queue import Event, NotificationQueue
from hearth.subscriptions.registry import Registry
from hearth.subscriptions.wake import sleep_until_set

PATH = "$subscription-ws"
_POLL = 1.0  # seconds: also notice events another process recorded
_REGISTRY_WAITS = 50
TOKEN_SECONDS = 3600


class WebSocketHub:
    def __init__(self, ctx: Context, queue: NotificationQueue, registry: Registry) -> None:
        self.ctx, self.queue, self.registry = ctx, queue, registry
        self._news = asyncio.Event()
        self._secret: bytes | None = None

    def websocket_url(self) -> str:
        return "ws" + self.ctx.base_url.removeprefix("http") + "/" + PATH

    async def binding_token(self, subscription_id: str) -> tuple[str, int]:
        """A token binding a socket to this subscription, and when it expires (epoch seconds)."""
        expires = int(time.time()) + TOKEN_SECONDS
        message = f"{subscription_id}.{expires}"
        return f"{message}.{await self._sign(message)}", expires

    async def _token_subscription(self, token: str) -> str | None:
        """The subscription id a valid, unexpired token names."""
        parts = token.rsplit(".", 2)
        if len(parts) != 3 or not parts[1].isdigit() or int(parts[1]) < time.time():
            return None
        expected = await self._sign(f"{parts[0]}.{parts[1]}")
        return parts[0] if hmac.compare_digest(expected, parts[2]) else None

    async def _sign(self, message: str) -> str:
        if self._secret is None:
            self._secret = await self.queue.secret()
        return hmac.new(self._secret, message.encode(), hashlib.sha256).hexdigest()

    def notify(self) -> None:
        """New events were recorded: every socket looks."""
        self._news.set()
        self._news = asyncio.Event()

    async def serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        socket = WebSocket(scope, receive, send)
        await socket.accept()
        bound: dict[str, int] = {}  # subscription id -> last event number sent
        pump = asyncio.create_task(self._pump(socket, bound))
        try:
            while True:
                command, _, argument = (await socket.receive_text()).strip().partition(" ")
                argument = argument.strip()
                if command == "bind":
                    await self._bind(socket, bound, argument, say_bound=True)
                elif command == "bind-with-token":
                    subscription_id = await self._token_subscription(argument)
                    if subscription_id is None:
                        await socket.send_text("error invalid or expired token")
                    else:
                        await self._bind(socket, bound, subscription_id, say_bound=False)
                else:
                    await socket.send_text(f"error unknown command '{command}' (use: bind <id>, "
                                           "bind-with-token <token>)")
        except WebSocketDisconnect:
            pass
        finally:
            pump.cancel()
            await asyncio.gather(pump, return_exceptions=True)

    async def _bind(self, socket: WebSocket, bound: dict[str, int], subscription_id: str, say_bound: bool) -> None:
        """Start sending the subscription's new events (R4: after `bound <id>`; backport: a handshake)."""
        subscription = self.registry.get(subscription_id)
        for _ in range(_REGISTRY_WAITS):  # a subscription just created reaches the registry a moment later
            if subscription is not None:
                break
            await asyncio.sleep(0.02)
            subscription = self.registry.get(subscription_id)
        if subscription is None or subscription.channel.type != "websocket" or subscription.status == "off":
            await socket.send_text(f"error {subscription_id} is not an active websocket subscription")
            return
        count = await self.queue.event_count(subscription_id)
        bound[subscription_id] = count
        if say_bound:
            await socket.send_text(f"bound {subscription_id}")
        if subscription.backport:
            await self._send(socket, subscription, "handshake", count)

    async def _pump(self, socket: WebSocket, bound: dict[str, int]) -> None:
        last_sent: dict[str, float] = {}
        while True:
            news = self._news
            for subscription_id, last in list(bound.items()):
                subscription = self.registry.get(subscription_id)
                if subscription is None:
                    continue
                events = await self.queue.events(subscription_id, last + 1, None, 100)
                now = time.monotonic()
                if events:
                    bound[subscription_id] = events[-1].number
                    last_sent[subscription_id] = now
                    if not subscription.backport:
                        await socket.send_text(f"ping {subscription_id}")
                        continue
                    for event in events:
                        await self._send(socket, subscription, "event-notification", event.number, [event])
                elif subscription.backport and subscription.heartbeat and \
                        now - last_sent.setdefault(subscription_id, now) >= subscription.heartbeat:
                    last_sent[subscription_id] = now
                    await self._send(socket, subscription, "heartbeat", last)
            await sleep_until_set(news, _POLL)

    async def _send(self, socket: WebSocket, subscription: Subscription, kind: str, count: int,
                    events: Sequence[Event] = ()) -> None:
        body = await notifications.status_bundle(self.ctx, subscription, kind, count, events)
        await socket.send_text(body.decode())
