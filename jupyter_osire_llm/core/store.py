"""Persisted deployments: one SQLite file that every Jupyter server of the user shares.

One row per deployment, its replicas inside as JSON, and a ``version`` that each write bumps.
Writers compare-and-swap on it (``save(..., expected=version)``), so two servers of one user (a
JupyterHub server and an Open OnDemand session on the same home folder) never overwrite each
other's changes: the loser re-reads the row and applies its change again.

The default location is the home folder, usually NFS, where SQLite's WAL mode does not work
(it needs shared memory between the processes): the file uses the rollback journal
(``journal_mode=DELETE``) and POSIX locks, which SQLite supports on network file systems, and
every transaction is short. ``leases`` says which server watches the scheduler and which servers
are alive, so that none of them cancels what another is still submitting. A lease has an epoch,
bumped whenever another server takes it over: writes made under a ``Fence`` (the watcher's cycle
sets ``FENCE``) check in their own transaction that the lease is still held, in the same epoch,
for at least the fence's margin, so a cycle that outlived its lease never writes what it saw.

A row that cannot be read (corrupt, or from a future version that changed its shape) is skipped
and reported in ``problems``; it never disables the extension. Nor does a damaged file (not
SQLite at all, or failing ``PRAGMA quick_check``): it is moved aside and a new one started with
the rows that can still be read (``state_recovery.py``), and that is reported in ``problems``.
"""
from __future__ import annotations

import json
import sqlite3
import threading
import time
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Callable, Iterator, Optional

from ..deployments.states import Deployment, Replica
from ..errors import LeaseLost, StoreError
from .state_recovery import recover

SCHEMA = """
CREATE TABLE IF NOT EXISTS deployments (
    id      TEXT PRIMARY KEY,
    model   TEXT NOT NULL,
    state   TEXT NOT NULL,
    created REAL NOT NULL,
    doc     TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS deployments_state ON deployments(state);
CREATE TABLE IF NOT EXISTS batches (
    id      TEXT PRIMARY KEY,
    created REAL NOT NULL,
    version INTEGER NOT NULL,
    doc     TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS files (
    id      TEXT PRIMARY KEY,
    created REAL NOT NULL,
    version INTEGER NOT NULL,
    doc     TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS leases (
    name    TEXT PRIMARY KEY,
    owner   TEXT NOT NULL,
    expires REAL NOT NULL,
    epoch   INTEGER NOT NULL DEFAULT 1
);
"""


class Store:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.path = path
        self.problems: list[str] = []
        self._lock = threading.Lock()
        try:
            self.problems += recover(path, SCHEMA)   # damaged: moved aside, readable rows kept
            self._db = sqlite3.connect(str(path), check_same_thread=False,
                                       isolation_level=None, timeout=30)
            self._db.execute("PRAGMA journal_mode=DELETE")
            self._db.execute("PRAGMA busy_timeout=30000")
            self._db.executescript(SCHEMA)
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(deployments)")}
            if "version" not in columns:  # files written before versions existed
                self._db.execute("ALTER TABLE deployments ADD COLUMN version INTEGER NOT NULL "
                                 "DEFAULT 0")
            if "epoch" not in {row[1] for row in self._db.execute("PRAGMA table_info(leases)")}:
                self._db.execute("ALTER TABLE leases ADD COLUMN epoch INTEGER NOT NULL DEFAULT 1")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the state file {path}: {exc}") from exc
        path.chmod(0o600)

    @contextmanager
    def _locked(self) -> Iterator[sqlite3.Connection]:
        """The connection, one thread at a time; SQLite's errors (a full disk, a corrupt file)
        become the project's ``StoreError``."""
        with self._lock:
            try:
                yield self._db
            except sqlite3.Error as exc:
                raise StoreError(f"cannot use the state file {self.path}: {exc}") from exc

    def _transaction(self, db: sqlite3.Connection) -> "_Transaction":
        return _Transaction(db)

    def _holdings(self, db: sqlite3.Connection, deployment_id: str = "",
                  batch_id: str = "") -> "Holdings":
        """What the user holds, but the deployment or batch being written, seen in its
        transaction."""
        live = [d for d in (self._parse(i, doc, v) for i, doc, v in db.execute(
            "SELECT id, doc, version FROM deployments WHERE state NOT IN ('stopped', 'failed') "
            "AND id != ?", (deployment_id,))) if d is not None]
        batches = [d for d in (self._parse_doc("batches", i, t) for i, t in db.execute(
            "SELECT id, doc FROM batches WHERE id != ?", (batch_id,))) if d is not None]
        return Holdings(live, batches)

    # -- deployments ---------------------------------------------------------------------------

    def insert_within(self, deployment: Deployment,
                      check: Callable[["Holdings"], None]) -> None:
        """Insert a new deployment after ``check`` (which raises to refuse) has seen what the
        user holds, in one write transaction: two servers launching at the same moment cannot
        both slip under a limit."""
        doc = json.dumps(asdict(deployment))
        with self._locked() as db, self._transaction(db):
            check(self._holdings(db, deployment.id))
            db.execute("INSERT INTO deployments (id, model, state, created, doc, version) "
                       "VALUES (?, ?, ?, ?, ?, ?)", (deployment.id, deployment.model,
                                                     deployment.state, deployment.created, doc,
                                                     deployment.version))

    def save(self, deployment: Deployment, expected: Optional[int] = None) -> bool:
        """Write ``deployment`` as version ``expected + 1``; False when the row has moved on
        (another server wrote it) or is gone. ``expected=None`` inserts a new row."""
        doc = json.dumps(asdict(deployment))
        with self._locked() as db:
            if expected is None:
                try:
                    db.execute(
                        "INSERT INTO deployments (id, model, state, created, doc, version) "
                        "VALUES (?, ?, ?, ?, ?, ?)", (deployment.id, deployment.model,
                                                      deployment.state, deployment.created, doc,
                                                      deployment.version))
                except sqlite3.IntegrityError:
                    return False
                return True
            with self._transaction(db):
                _check_fence(db, FENCE.get())
                cursor = db.execute(
                    "UPDATE deployments SET state = ?, doc = ?, version = ? "
                    "WHERE id = ? AND version = ?",
                    (deployment.state, doc, deployment.version, deployment.id, expected))
            return cursor.rowcount == 1

    def save_within(self, deployment: Deployment, expected: int,
                    check: Callable[["Holdings"], None]) -> bool:
        """``save`` after ``check`` (which raises to refuse) has seen what else the user holds,
        in one write transaction (adding replicas within the site's limits)."""
        doc = json.dumps(asdict(deployment))
        with self._locked() as db, self._transaction(db):
            _check_fence(db, FENCE.get())
            check(self._holdings(db, deployment.id))
            cursor = db.execute(
                "UPDATE deployments SET state = ?, doc = ?, version = ? "
                "WHERE id = ? AND version = ?",
                (deployment.state, doc, deployment.version, deployment.id, expected))
            return cursor.rowcount == 1

    def load(self, deployment_id: str) -> Optional[Deployment]:
        with self._locked() as db:
            row = db.execute("SELECT doc, version FROM deployments WHERE id = ?",
                                   (deployment_id,)).fetchone()
        return self._parse(deployment_id, *row) if row else None

    def load_all(self) -> Iterator[Deployment]:
        with self._locked() as db:
            rows = db.execute(
                "SELECT id, doc, version FROM deployments ORDER BY created").fetchall()
        for deployment_id, doc, version in rows:
            deployment = self._parse(deployment_id, doc, version)
            if deployment is not None:
                yield deployment

    def versions(self) -> dict[str, int]:
        """Every row's version: what changed since the last look, in one cheap query."""
        with self._locked() as db:
            return dict(db.execute("SELECT id, version FROM deployments").fetchall())

    def delete(self, deployment_id: str) -> None:
        with self._locked() as db:
            db.execute("DELETE FROM deployments WHERE id = ?", (deployment_id,))

    def _parse(self, deployment_id: str, doc: str, version: int) -> Optional[Deployment]:
        try:
            return replace(_from_doc(json.loads(doc)), version=version)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            problem = f"deployment {deployment_id}: unreadable record skipped ({exc})"
            if problem not in self.problems:
                self.problems.append(problem)
            return None

    # -- batches and files: JSON documents with versions (batches.py) -----------------------

    def insert_doc(self, table: str, doc_id: str, created: float, doc: dict,
                   check: Optional[Callable[["Holdings"], None]] = None) -> None:
        """Insert a new document after ``check`` (which raises to refuse) has seen what the
        user holds, in one write transaction (limits that hold across servers)."""
        text = json.dumps(doc)
        with self._locked() as db, self._transaction(db):
            if check is not None:
                check(self._holdings(db, batch_id=doc_id))
            db.execute(f"INSERT INTO {_table(table)} (id, created, version, doc) "
                       "VALUES (?, ?, 1, ?)", (doc_id, created, text))

    def save_doc(self, table: str, doc_id: str, doc: dict, expected: int,
                 check: Optional[Callable[["Holdings"], None]] = None) -> bool:
        """Write a document as version ``expected + 1``; False when another writer got there
        first (or it is gone). ``check`` as for ``insert_doc``."""
        with self._locked() as db, self._transaction(db):
            _check_fence(db, FENCE.get())
            if check is not None:
                check(self._holdings(db, batch_id=doc_id))
            cursor = db.execute(f"UPDATE {_table(table)} SET doc = ?, version = ? "
                                "WHERE id = ? AND version = ?",
                                (json.dumps(doc), expected + 1, doc_id, expected))
            return cursor.rowcount == 1

    def load_docs(self, table: str, ids: Optional[list[str]] = None) -> list[tuple[dict, int]]:
        """Documents (all, or those of ``ids``) with their versions, oldest first."""
        query = f"SELECT id, doc, version FROM {_table(table)}"
        with self._locked() as db:
            if ids is None:
                rows = db.execute(query + " ORDER BY created").fetchall()
            else:
                rows = [row for i in ids for row in db.execute(query + " WHERE id = ?", (i,))]
        loaded = ((self._parse_doc(table, i, text), version) for i, text, version in rows)
        return [(doc, version) for doc, version in loaded if doc is not None]

    def doc_versions(self, table: str) -> dict[str, int]:
        with self._locked() as db:
            return dict(db.execute(f"SELECT id, version FROM {_table(table)}").fetchall())

    def delete_doc(self, table: str, doc_id: str, expected: Optional[int] = None) -> bool:
        """Remove a document (only at version ``expected``, if given); False when it had moved
        on or was gone."""
        query = f"DELETE FROM {_table(table)} WHERE id = ?"
        args: tuple[object, ...] = (doc_id,)
        if expected is not None:
            query, args = query + " AND version = ?", (doc_id, expected)
        with self._locked() as db:
            return db.execute(query, args).rowcount == 1

    def _parse_doc(self, table: str, doc_id: str, text: str) -> Optional[dict]:
        try:
            doc = json.loads(text)
            if not isinstance(doc, dict):
                raise ValueError("not an object")
            return doc
        except ValueError as exc:
            problem = f"{table} {doc_id}: unreadable record skipped ({exc})"
            if problem not in self.problems:
                self.problems.append(problem)
            return None

    # -- leases --------------------------------------------------------------------------------

    def claim(self, name: str, owner: str, now: float, ttl: float) -> bool:
        """Take or renew lease ``name`` for ``owner`` until ``now + ttl``; False when another
        owner holds it and it has not expired."""
        return self.claim_epoch(name, owner, now, ttl) is not None

    def claim_epoch(self, name: str, owner: str, now: float, ttl: float) -> Optional[int]:
        """``claim``, answering the lease's epoch (None: not ours). Renewing keeps the epoch;
        taking the lease over from another owner (or after a release) bumps it."""
        with self._locked() as db, self._transaction(db):
            row = db.execute("SELECT owner, expires, epoch FROM leases WHERE name = ?",
                             (name,)).fetchone()
            if row is not None and row[0] != owner and row[1] >= now:
                return None
            epoch = 1 if row is None else row[2] + (row[0] != owner or row[1] <= 0)
            db.execute("INSERT OR REPLACE INTO leases (name, owner, expires, epoch) "
                       "VALUES (?, ?, ?, ?)", (name, owner, now + ttl, epoch))
        return epoch

    def release(self, name: str, owner: str) -> None:
        """End ``owner``'s lease at once (its epoch stays, so the next holder's is newer)."""
        with self._locked() as db:
            db.execute("UPDATE leases SET expires = 0 WHERE name = ? AND owner = ?",
                       (name, owner))

    def check_fence(self, fence: Optional["Fence"]) -> None:
        """Raise ``LeaseLost`` unless ``fence``'s lease is still held as it says (None: no
        fence, nothing to check). For scheduler actions, which no transaction covers."""
        if fence is not None:
            with self._locked() as db:
                _check_fence(db, fence)

    def holder(self, name: str, now: float) -> Optional[str]:
        """Who holds lease ``name`` now (None when nobody, or it expired)."""
        with self._locked() as db:
            row = db.execute("SELECT owner, expires FROM leases WHERE name = ?",
                             (name,)).fetchone()
        return row[0] if row and row[1] >= now else None

    def close(self) -> None:
        with self._lock:
            self._db.close()


@dataclass(frozen=True)
class Fence:
    """A lease as its holder saw it when its cycle began: what that cycle writes needs the lease
    still held by ``owner`` in ``epoch``, for at least ``margin`` more seconds."""

    name: str
    owner: str
    epoch: int
    margin: float
    clock: Callable[[], float] = time.time


#: The fence of the work under way (set by the watcher for its cycle; copied into the worker
#: threads of ``asyncio.to_thread``). Every update of a deployment, batch or file checks it.
FENCE: ContextVar[Optional[Fence]] = ContextVar("osire_fence", default=None)


def _check_fence(db: sqlite3.Connection, fence: Optional[Fence]) -> None:
    if fence is None:
        return
    row = db.execute("SELECT owner, expires, epoch FROM leases WHERE name = ?",
                     (fence.name,)).fetchone()
    now = fence.clock()
    if row is None or row[0] != fence.owner or row[2] != fence.epoch:
        holder = f"server {row[0]}" if row is not None and row[1] >= now else "nobody"
        raise LeaseLost(f"lease {fence.name!r} was taken over ({holder} holds it now): what "
                        "this cycle observed is not acted on")
    if row[1] < now + fence.margin:
        raise LeaseLost(f"lease {fence.name!r} runs out in {row[1] - now:.1f} s, under the "
                        f"{fence.margin:g} s margin: this cycle took too long to act on")


@dataclass(frozen=True)
class Holdings:
    """What one user holds, read inside the write transaction that would add to it."""

    deployments: list[Deployment]   # the live ones
    batches: list[dict]             # every batch's document, live or not


class _Transaction:
    """BEGIN IMMEDIATE (the write lock at once) ... COMMIT, or ROLLBACK on any error."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind, value, tb) -> None:  # type: ignore[no-untyped-def]
        if kind is None:
            try:
                self.db.execute("COMMIT")
                return
            except sqlite3.Error:
                self.db.execute("ROLLBACK")   # a COMMIT that failed (full disk) leaves it open
                raise
        self.db.execute("ROLLBACK")


def _table(name: str) -> str:
    if name not in ("batches", "files"):   # table names cannot be bound parameters
        raise ValueError(f"no document table {name!r}")
    return name


def _from_doc(doc: dict) -> Deployment:
    """Rows written by other versions load too: unknown fields are dropped, missing ones default."""
    replicas = tuple(Replica(**_known(Replica, r)) for r in doc.pop("replicas"))
    return Deployment(replicas=replicas, **_known(Deployment, doc))


def _known(cls: type, doc: dict) -> dict:
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in doc.items() if k in names}
