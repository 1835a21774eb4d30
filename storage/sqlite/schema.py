"""The SQLite schema for versions, current state and the change log (index tables: storage/sqlite/index.py)."""

# the audit log: append-only (storage/sqlite/audit_log.py), in the main database (records of writes) and in one of
# its own (records of every other access)
AUDIT_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS audit_events (
        id TEXT NOT NULL UNIQUE,
        recorded TEXT NOT NULL,
        agent TEXT NOT NULL,
        outcome TEXT NOT NULL,
        patients TEXT NOT NULL,
        entities TEXT NOT NULL,
        body BLOB NOT NULL)""",
    """CREATE INDEX IF NOT EXISTS audit_events_recorded ON audit_events (recorded, id)""",
)

SCHEMA = (
    # current state: one row per resource; the body lives in `history` (stored once)
    """CREATE TABLE IF NOT EXISTS resources (
        rid INTEGER PRIMARY KEY,
        type TEXT NOT NULL,
        id TEXT NOT NULL,
        version_id INTEGER NOT NULL,
        last_updated TEXT NOT NULL,
        deleted INTEGER NOT NULL,
        UNIQUE (type, id))""",
    # one type's resources in the default order, creation (rid: SQLite indexes end with it), and by
    # _lastUpdated with ties in that order; the (type, last_updated, id) index of earlier versions goes
    """CREATE INDEX IF NOT EXISTS resources_type ON resources (type)""",
    """CREATE INDEX IF NOT EXISTS resources_type_time ON resources (type, last_updated)""",
    """DROP INDEX IF EXISTS resources_type_updated""",
    """CREATE TABLE IF NOT EXISTS history (
        type TEXT NOT NULL,
        id TEXT NOT NULL,
        version_id INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        last_updated TEXT NOT NULL,
        deleted INTEGER NOT NULL,
        body BLOB NOT NULL,
        PRIMARY KEY (type, id, version_id)) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS changes (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        type TEXT NOT NULL,
        id TEXT NOT NULL,
        version_id INTEGER NOT NULL,
        interaction TEXT NOT NULL,
        last_updated TEXT NOT NULL)""",
    """CREATE INDEX IF NOT EXISTS changes_type_seq ON changes (type, seq)""",
    *AUDIT_SCHEMA,  # the audit records of writes, committed with them (storage/sqlite/audit_log.py)
    # the database's own random secrets, made once (the paging cursors' MAC key: search/paging.py)
    "CREATE TABLE IF NOT EXISTS secrets (name TEXT PRIMARY KEY, value BLOB NOT NULL)",
    "INSERT OR IGNORE INTO secrets VALUES ('cursor', randomblob(32))",
    # named leases with fencing tokens (storage/sqlite/leases.py): checked inside other writes' transactions
    """CREATE TABLE IF NOT EXISTS leases (
        name TEXT PRIMARY KEY, owner TEXT NOT NULL, token INTEGER NOT NULL, until REAL NOT NULL) WITHOUT ROWID""",
)
