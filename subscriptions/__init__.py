"""Subscriptions: R4 criteria subscriptions and topic-based ones (Subscriptions R5 Backport IG on R4).

How a notification travels, and why nothing is lost:

1. A client writes a Subscription like any resource, by any path (REST, a Bundle entry, a PATCH, `hearth
   import`): the acceptance write hook (`acceptance.py`) checks it where its version is built: criteria (`criteria.py`, the search parser under strict handling), topic
   and filters (`topics.py`, `model.py`), channel (`channels.py`: rest-hook http(s) endpoint that the
   egress policy allows (`egress.py`: no loopback, private, link-local … address unless a setting allows
   its network, never Hearth itself; names resolved then too), headers, payload; or websocket). A bad one is
   a 422 OperationOutcome, nothing stored. R4 subscriptions are stored `active`; backport rest-hook ones
   `requested` until their handshake. A stored subscription this process cannot accept (imported, or
   accepted before a limit) goes to `error` at start-up, saying why.
2. Every committed version has a change-log row (storage). The `dispatcher.py` loop tails the change
   log, keeps this process's `registry.py` up to date from Subscription changes, matches the other
   changes against the registry (by resource type, then an index on one token or reference clause of
   each criteria, then the compiled in-memory matcher; chains and `_has` read the store within a budget,
   HEARTH_SUBSCRIPTION_MATCH_TIMEOUT: a subscription that fails or overruns it goes to `error` and out of
   matching, the others go on), and records the events (numbered per
   subscription) together with the checkpoint in one storage operation (`queue.py`; SQLite tables or
   MongoDB collections next to the data). A crash before that leaves the checkpoint behind, so the
   changes are matched again on the next start.
3. `delivery.py` claims due rest-hook work with a lease (a successor on the same machine takes over a dead
   process's claims at once: `owners.py`), builds the notification (`notifications.py`:
   R4 empty POST or PUT of the resource; backport `history` Bundle led by a SubscriptionStatus
   Parameters), sends it only to addresses the egress policy allows (checked on the address connected to;
   no redirects), and only forgets it after a 2xx: at least once. Failures back off exponentially with
   jitter, a circuit breaker per endpoint stops hammering a dead receiver, and after the retry horizon
   the subscription goes to `error` with `Subscription.error` set. Events stay in the queue's event
   table, so `$events` (`operations.py`) returns what was missed; `$status` reports the counts.
4. Websocket clients (`websocket.py`) bind to subscriptions and are told about events read from the
   same event table, so a socket on any process sees events recorded by any process.

What leaves towards a receiver or a client goes through the dispatcher: every notification's focus is read on the
subscription's behalf (so the policy decides what it may see), the operations are dispatched, and Hearth's own
status changes are updates by the system caller. The dispatcher's bookkeeping (tailing the change log, the store
lookups of chain and `_has` criteria, loading the registry at start-up) reads the store directly; the queue is the
one piece of storage of their own (storage/*/notification_queue.py).
"""
