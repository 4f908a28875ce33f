"""A damaged state file never switches the extension off (used by ``store.Store`` when it opens).

What "damaged" means, and what is done about it:
- not an SQLite database at all (overwritten, a half-copied file, another program's file):
  SQLite says "file is not a database". Nothing can be read from it.
- an SQLite database that fails ``PRAGMA quick_check`` or cannot be read ("database disk image
  is malformed": a truncated file, a page overwritten by a crash or a faulty file system).
  Rows on intact pages can still be read.

Either way the file (and its rollback journal, if any) is moved aside to
``<name>.corrupt-<UTC time>`` and kept for the administrator, a new one is started, and every
row that can still be read is copied into it, so that the deployments it lists (and their
running jobs) are watched again. The caller reports what happened (health, the sidebar). A
database that is only busy (locked by another server) is not damaged and is left alone.

A row whose JSON cannot be read is a different, smaller matter: the store skips it and says so
(``Store.problems``).
"""
from __future__ import annotations

import os
import shutil
import sqlite3
import time
from pathlib import Path
from typing import Any, Optional

#: The kinds of record, in the order they are reported. Every table is copied into the new file
#: but ``leases`` (every server claims its leases again).
KINDS = ("deployments", "batches", "files", "records")
PROBE_LIMIT = 10_000   # row ids tried one by one past a damaged page when the top is unknown
_DAMAGE = ("not a database", "malformed", "corrupt", "disk image")


def recover(path: Path, schema: str) -> list[str]:
    """Check the state file at ``path``; when it is damaged, move it aside, start a new one with
    ``schema`` and the rows that can still be read. What happened, for the user (empty: the file
    was sound, or there was none)."""
    if not path.exists() or path.stat().st_size == 0:
        return []
    damage = _damage(path)
    if damage is None:
        return []
    aside = _move_aside(path)
    kept = f"it was moved aside to {aside} (kept for the administrator)"
    if "not a database" in damage:
        _new_file(path, schema).close()
        return [f"the state file {path} is not an SQLite database ({damage}); {kept} and a new "
                "one was started: the deployments, batches and files recorded in it are no "
                "longer listed, and their jobs are not watched (scancel them by hand if any "
                "still run)"]
    copied, partial = _salvage(aside, path, schema)
    found = ", ".join(f"{table}: {n} row(s)" for table, n in copied.items()) or "nothing"
    lost = (f"rows of {', '.join(partial)} on damaged pages could not be read" if partial
            else "no readable row was lost")
    return [f"the state file {path} is damaged ({damage}); {kept} and a new one was started "
            f"with what could still be read: {found} ({lost})"]


def _damage(path: Path) -> Optional[str]:
    """Why the file is damaged, or None when it is sound (or merely busy)."""
    try:
        db = sqlite3.connect(str(path), timeout=30)
    except sqlite3.Error as exc:
        return _damaged(exc)
    try:
        rows = [row[0] for row in db.execute("PRAGMA quick_check(5)")]
    except sqlite3.Error as exc:
        return _damaged(exc)
    finally:
        db.close()
    if rows == ["ok"]:
        return None
    return "PRAGMA quick_check: " + "; ".join(" ".join(str(r).split()) for r in rows)


def _damaged(exc: sqlite3.Error) -> Optional[str]:
    message = str(exc)
    if any(word in message.lower() for word in _DAMAGE):
        return message
    raise exc   # locked, no permission, a full disk: not damage; the store reports it


def _move_aside(path: Path) -> Path:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    aside = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while aside.exists():
        n += 1
        aside = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
    os.replace(path, aside)
    journal = path.with_name(path.name + "-journal")
    if journal.exists():   # a hot journal belongs with its database
        os.replace(journal, aside.with_name(aside.name + "-journal"))
    return aside


def _new_file(path: Path, schema: str) -> sqlite3.Connection:
    db = sqlite3.connect(str(path), isolation_level=None)
    db.execute("PRAGMA journal_mode=DELETE")
    db.executescript(schema)
    path.chmod(0o600)
    return db


def _salvage(old: Path, new: Path, schema: str) -> tuple[dict[str, int], list[str]]:
    """Copy each table's readable rows from ``old`` into a new file at ``new``, in the tables
    (and schema version) ``old`` had, for the store to migrate as it would any file of that
    version: the number of records copied per kind, and the tables where some could not be
    read."""
    copied: dict[str, int] = {}
    partial: list[str] = []
    target = _new_file(new, schema)
    readable = _full_length(old)
    try:
        source = sqlite3.connect(f"file:{readable}?mode=ro", uri=True)
    except sqlite3.Error:
        target.close()
        _remove_copy(readable, old)
        return copied, ["every table"]
    try:
        tables = _tables_like(source, target)
        if tables is None:
            return copied, ["every table"]
        for table in tables:
            if not _copy_table(source, target, table, copied):
                partial.append(table)
    finally:
        source.close()
        target.close()
        _remove_copy(readable, old)
    return dict(sorted(copied.items(), key=lambda item: _order(item[0]))), partial


def _tables_like(source: sqlite3.Connection, target: sqlite3.Connection) -> Optional[list[str]]:
    """The record tables of ``source``, made in ``target`` as they are there (with its schema
    version); None when its schema cannot be read."""
    try:
        found = source.execute("SELECT name, sql FROM sqlite_master WHERE type = 'table'"
                               ).fetchall()
        version = source.execute("PRAGMA user_version").fetchone()[0]
    except sqlite3.Error:
        return None
    have = {row[0] for row in target.execute("SELECT name FROM sqlite_master")}
    tables = [name for name, sql in found if name != "leases" and not name.startswith("sqlite_")]
    for name, sql in found:
        if name in tables and name not in have:
            target.execute(sql)
    target.execute(f"PRAGMA user_version = {int(version)}")
    return sorted(tables, key=_order)


def _copy_table(source: sqlite3.Connection, target: sqlite3.Connection, table: str,
                copied: dict[str, int]) -> bool:
    """Copy ``table``'s readable rows, counted in ``copied`` by kind (a table of the old
    schema: its name); whether every row could be read."""
    columns = _common_columns(source, target, table)
    if columns is None:
        return False
    rows, whole = _readable_rows(source, table, columns)
    names = ", ".join(columns)
    marks = ", ".join("?" * len(columns))
    kind_at = columns.index("kind") if "kind" in columns else None
    if kind_at is None:
        copied.setdefault(table, 0)
    for row in rows:
        try:
            target.execute(f"INSERT OR IGNORE INTO {table} ({names}) VALUES ({marks})", row)
        except sqlite3.Error:   # garbage read from a damaged page
            whole = False
            continue
        kind = table if kind_at is None else str(row[kind_at])
        copied[kind] = copied.get(kind, 0) + 1
    return whole


def _order(name: str) -> int:
    return KINDS.index(name) if name in KINDS else len(KINDS)


def _full_length(path: Path) -> Path:
    """``path``, or a copy of it padded with zeros to the length its header gives: SQLite
    refuses a truncated file as a whole, while the pages that are there can still be read."""
    with open(path, "rb") as f:
        header = f.read(100)
    if len(header) < 100:
        return path
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    length = int.from_bytes(header[28:32], "big") * page_size
    if length <= path.stat().st_size:
        return path
    copy = path.with_name(path.name + ".padded")
    shutil.copyfile(path, copy)
    with open(copy, "r+b") as f:
        f.truncate(length)
    return copy


def _remove_copy(copy: Path, original: Path) -> None:
    if copy != original:
        copy.unlink(missing_ok=True)


def _common_columns(source: sqlite3.Connection, target: sqlite3.Connection,
                    table: str) -> Optional[list[str]]:
    try:
        old = [row[1] for row in source.execute(f"PRAGMA table_info({table})")]
    except sqlite3.Error:
        return None
    new = {row[1] for row in target.execute(f"PRAGMA table_info({table})")}
    columns = [c for c in old if c in new]
    return columns or None


def _readable_rows(db: sqlite3.Connection, table: str,
                   columns: list[str]) -> tuple[list[tuple[Any, ...]], bool]:
    """Every row that can be read, and whether that was all of them: a scan in row id order,
    then, past a damaged page, row ids one by one (each a fresh descent of the tree)."""
    names = ", ".join(columns)
    rows: list[tuple[Any, ...]] = []
    last = 0
    try:
        for row in db.execute(f"SELECT rowid, {names} FROM {table} ORDER BY rowid"):
            rows.append(tuple(row[1:]))
            last = row[0]
        return rows, True
    except sqlite3.Error:
        pass
    try:
        top = db.execute(f"SELECT max(rowid) FROM {table}").fetchone()[0] or last
    except sqlite3.Error:
        top = last + PROBE_LIMIT
    for rowid in range(last + 1, top + 1):
        try:
            row = db.execute(f"SELECT {names} FROM {table} WHERE rowid = ?", (rowid,)).fetchone()
        except sqlite3.Error:
            continue
        if row is not None:
            rows.append(tuple(row))
    return rows, False
