"""Storage backends behind one Store protocol (storage/base.py)."""

from __future__ import annotations

from importlib import import_module
from typing import Any

from hearth.storage.base import ExportJobs, Hl7Inbox, Leases, Records, Store


def open_store(url: str, **options: object) -> Store:
    """A Store for `url`: `mongodb://…` / `mongodb+srv://…` for MongoDB, anything else a SQLite file path
    (`sqlite:///relative.db`, `sqlite:////absolute.db` or a plain path). Options: `synchronous` (SQLite),
    `search_timeout` (seconds a search may run; 0: no limit), `writer` (SQLite: the shared writer process's Unix
    socket, in a `hearth serve --workers N` group)."""
    path = sqlite_path(url)
    if path is None:
        from hearth.storage.mongo.store import MongoStore
        return MongoStore.from_url(url, **options)
    from hearth.storage.sqlite.store import SqliteStore
    return SqliteStore(path, synchronous=str(options.get("synchronous", "NORMAL")),
                       search_timeout=float(options.get("search_timeout", 10.0)),
                       writer=str(options.get("writer", "")))


def sqlite_path(url: str) -> str | None:
    """The SQLite file `url` names (`sqlite:///rel.db` is relative, `sqlite:////abs.db` absolute); None for MongoDB."""
    return None if url.startswith(("mongodb://", "mongodb+srv://")) else url.removeprefix("sqlite:///")


def notification_queue(store: Store) -> Any:
    """The durable notification queue (its protocol: subscriptions/queue.py) in `store`'s own database."""
    return _backend_part(store, "notification_queue", "NotificationQueue")


def security_records(store: Store) -> Records:
    """The authorization server's records (security/authority.py) in `store`'s own database."""
    return _backend_part(store, "records", "Records", "security_records")


def connector_records(store: Store) -> Records:
    """The inbound connectors' records (connectors/state.py) in `store`'s own database."""
    return _backend_part(store, "records", "Records", "connector_records")


def job_records(store: Store) -> Records:
    """The background jobs' records (the SearchParameter re-index, interactions/reindex_jobs.py) in `store`'s own
    database."""
    return _backend_part(store, "records", "Records", "job_records")


def audit_log(store: Store) -> Any:
    """The append-only audit log (security/audit.py) in `store`'s own database."""
    return _backend_part(store, "audit_log", "AuditLog")


def hl7_inbox(store: Store) -> Hl7Inbox:
    """The HL7 v2 connectors' inbox of received messages (connectors/hl7v2) in `store`'s own database."""
    return _backend_part(store, "hl7_inbox", "Hl7Inbox")


def export_jobs(store: Store) -> ExportJobs:
    """The Bulk Data export jobs (interactions/export) in `store`'s own database."""
    return _backend_part(store, "export_jobs", "ExportJobs")


def leases(store: Store) -> Leases:
    """Named leases with fencing tokens, judged by the store's clock, in `store`'s own database."""
    return _backend_part(store, "leases", "Leases")


def _backend_part(store: Store, module: str, kind: str, *args: Any) -> Any:
    """`storage/<backend>/<module>.py`'s `<Backend><kind>` on `store` (SqliteNotificationQueue, …)."""
    backend = {"sqlite": ("sqlite", "Sqlite"), "mongodb": ("mongo", "Mongo")}.get(store.name)
    if backend is None:
        raise ValueError(f"no {module.replace('_', ' ')} for storage '{store.name}'")
    folder, prefix = backend
    return getattr(import_module(f"hearth.storage.{folder}.{module}"), prefix + kind)(store, *args)
