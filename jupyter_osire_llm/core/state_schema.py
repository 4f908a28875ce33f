"""The state file's schema, versioned in ``PRAGMA user_version``, and its migrations.

Version 0 (every file written before versions were kept) had a typed ``deployments`` table
(model and state in columns, the version column added later) beside ``batches`` and ``files``
document tables. Version 1 keeps every kind in one ``records`` table of versioned documents.
A file of an older version is migrated when a server opens it, in one transaction that re-reads
the version first, so that two servers opening it at once migrate it once.
"""
from __future__ import annotations

import sqlite3

SCHEMA_VERSION = 1
SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    kind    TEXT NOT NULL,
    id      TEXT NOT NULL,
    created REAL NOT NULL,
    version INTEGER NOT NULL,
    doc     TEXT NOT NULL,
    PRIMARY KEY (kind, id)
);
CREATE TABLE IF NOT EXISTS leases (
    name    TEXT PRIMARY KEY,
    owner   TEXT NOT NULL,
    expires REAL NOT NULL,
    epoch   INTEGER NOT NULL DEFAULT 1
);
"""
#: The record tables of version 0, by the kind their rows become.
OLD_TABLES = ("deployments", "batches", "files")


def migrate(db: sqlite3.Connection) -> None:
    """Bring the file at ``db`` (autocommit mode) to ``SCHEMA_VERSION``. A file of a newer
    version is left as it is: its records are read as far as they can be."""
    if _version(db) >= SCHEMA_VERSION:
        return
    db.execute("BEGIN IMMEDIATE")
    try:
        if _version(db) < SCHEMA_VERSION:   # not migrated meanwhile by another server
            _from_version_0(db)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


def _version(db: sqlite3.Connection) -> int:
    return int(db.execute("PRAGMA user_version").fetchone()[0])


def _from_version_0(db: sqlite3.Connection) -> None:
    """Create the tables (a new file starts here too) and move the old tables' rows in."""
    for statement in SCHEMA.split(";"):
        if statement.strip():
            db.execute(statement)   # executescript would commit the transaction
    if "epoch" not in _columns(db, "leases"):
        db.execute("ALTER TABLE leases ADD COLUMN epoch INTEGER NOT NULL DEFAULT 1")
    for table in OLD_TABLES:
        columns = _columns(db, table)
        if not columns:
            continue
        version = "version" if "version" in columns else "0"   # before versions were kept
        db.execute(f"INSERT OR IGNORE INTO records (kind, id, created, version, doc) "
                   f"SELECT '{table}', id, created, {version}, doc FROM {table}")
        db.execute(f"DROP TABLE {table}")


def _columns(db: sqlite3.Connection, table: str) -> set[str]:
    return {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
