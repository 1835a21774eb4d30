"""Who holds an export job's lease: `host:pid:token`, so that a worker can tell a dead process's claim on its own
host (released at once, instead of waiting out the lease) from a live one anywhere."""

from __future__ import annotations

import os
import secrets
import socket


def new_owner() -> str:
    """A name for this process's worker, unique even when a restarted process gets the same pid (containers)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


def dead(owner: str, me: str) -> bool:
    """Whether `owner` is surely gone: a worker of this host whose process no longer runs, or an earlier process
    with this process's pid. A worker of another host is never judged here: its lease runs out instead."""
    host, _, rest = owner.partition(":")
    pid, _, _ = rest.partition(":")
    if host != socket.gethostname() or not pid.isdigit() or owner == me:
        return False
    if int(pid) == os.getpid():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # a live process of another user
        return False
    return False
