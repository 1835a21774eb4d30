"""`$expunge` on SQLite (storage/base.py `Store.expunge`): jobs run in the writer process (`SqliteStore.run_write`),
each in one transaction, so a version leaves its history row, its change-log row and (with a resource's last one)
the resource's row and index entries together."""

from __future__ import annotations

import sqlite3

from hearth.storage.sqlite import index


def expunge(conn: sqlite3.Connection, resource_type: str | None, resource_id: str | None, deleted: bool,
            previous: bool, limit: int) -> int:
    """Remove up to `limit` versions in scope: older than the current one (`previous`), or of a deleted resource
    (`deleted`). History is walked in key order (type, id, version), so a deleted resource loses its tombstone, and
    with it its row, only after its older versions: a call stopped at `limit` leaves every resource readable as
    before."""
    wanted = [*(["h.version_id < r.version_id"] if previous else []), *(["r.deleted"] if deleted else [])]
    if not wanted or limit <= 0:
        return 0
    scope, args = ["(" + " OR ".join(wanted) + ")"], []
    for column, value in (("type", resource_type), ("id", resource_id)):
        if value is not None:
            scope.append(f"h.{column} = ?")
            args.append(value)
    rows = conn.execute(
        "SELECT h.type, h.id, h.version_id, h.seq, r.rid, r.version_id FROM history h JOIN resources r "
        f"ON r.type = h.type AND r.id = h.id WHERE {' AND '.join(scope)} LIMIT ?", (*args, limit)).fetchall()
    for type_, id_, version_id, seq, rid, current in rows:
        conn.execute("DELETE FROM history WHERE type = ? AND id = ? AND version_id = ?", (type_, id_, version_id))
        conn.execute("DELETE FROM changes WHERE seq = ?", (seq,))
        if version_id == current:  # a deleted resource's tombstone: the resource is gone
            conn.execute("DELETE FROM resources WHERE rid = ?", (rid,))
            index.replace_entries(conn, rid, type_, {}, existed=True)
    return len(rows)


def expunge_everything(conn: sqlite3.Connection) -> int:
    """Remove every resource, version, index entry and change-log row; how many versions. The change log's
    AUTOINCREMENT counter stays, so sequence numbers are never reused."""
    removed = conn.execute("SELECT count(*) FROM history").fetchone()[0]
    for table in ("history", "changes", "resources", *index.TABLES):
        conn.execute(f"DELETE FROM {table}")
    return removed
