"""Who holds a lease on stored work (subscription deliveries, export jobs, the store's named leases): a process
named so that a successor on the same machine can tell it is gone (`take_lease` takes such a lease over at once).

Several Hearth processes may work from one database; each claims work with a lease under its owner id, and a
claim of a process that died is taken over when the lease expires. A restarted server should not wait that out:
an owner id is `machine:pid:start:nonce`, where `machine` stands for this host's name, boot and process-id
namespace (pids mean the same process only there) and `start` is the process's start time (a pid is reused, a
pid with its start time is not). At start-up a process releases the claims of owners of its own machine that
no longer run; owners elsewhere (other hosts, other containers) keep their leases until they expire.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import uuid
from pathlib import Path

from hearth.storage.base import Lease, Leases

log = logging.getLogger("hearth.leases")

_PROC = Path("/proc")


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def _machine() -> str:
    pid_namespace = ""
    try:
        pid_namespace = os.readlink(_PROC / "self" / "ns" / "pid")
    except OSError:
        pass
    boot = _read(_PROC / "sys" / "kernel" / "random" / "boot_id")
    digest = hashlib.sha256(f"{boot}|{pid_namespace}".encode()).hexdigest()[:12]
    return f"{socket.gethostname()}#{digest}"


def _start_time(pid: int) -> str:
    """The process's start time (clock ticks since boot, /proc/<pid>/stat field 22); "" when unknown."""
    stat = _read(_PROC / str(pid) / "stat")
    fields = stat.rpartition(")")[2].split()  # the command name, in parentheses, may hold spaces
    return fields[19] if len(fields) > 19 else ""


MACHINE = _machine()


def new_owner() -> str:
    """An owner id for a worker of this process (each call a new one)."""
    return f"{MACHINE}:{os.getpid()}:{_start_time(os.getpid())}:{uuid.uuid4().hex[:8]}"


def is_gone(owner: str) -> bool:
    """Whether `owner` was a process of this machine that no longer runs (False when that cannot be told)."""
    machine, _, rest = owner.rpartition(":")[0].partition(":")  # drop the nonce, split off the machine
    pid, _, start = rest.partition(":")
    if machine != MACHINE or not pid.isdigit():
        return False
    current = _start_time(int(pid))
    if current and start:
        return current != start
    try:  # not visible in /proc (none, or another user's): whether some process has that pid (a reused pid
        os.kill(int(pid), 0)  # keeps the claim until its lease expires: the safe side)
    except ProcessLookupError:
        return True
    except OSError:
        pass
    return False


async def take_lease(leases: Leases, name: str, owner: str, seconds: float) -> Lease | None:
    """`leases.acquire`, after releasing the lease if its holder was a process of this machine that no longer runs
    (it crashed: nobody need wait its lease out)."""
    holder = await leases.holder(name)
    if holder is not None and holder.owner != owner and is_gone(holder.owner):
        log.info("the holder of lease %r, %s, no longer runs: taking it over", name, holder.owner)
        await leases.release(holder)
    return await leases.acquire(name, owner, seconds)
