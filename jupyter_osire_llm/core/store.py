"""The user's records: one SQLite file that every Jupyter server of the user shares.

Every record (a deployment, a batch, an uploaded file) is one row of ``records``: its kind, its
id, a JSON document and a ``version`` that each write bumps. Writers compare-and-swap on it
(``save(..., expected=version)``), so two servers of one user (a JupyterHub server and an Open
OnDemand session on the same home folder) never overwrite each other's changes: the loser
re-reads the record and applies its change again (``records.RecordMirror``).

The default location is the home folder, usually NFS, where SQLite's WAL mode does not work
(it needs shared memory between the processes): the file uses the rollback journal
(``journal_mode=DELETE``) and POSIX locks, which SQLite supports on network file systems, and
every transaction is short. ``leases`` says which server watches the scheduler and which servers
are alive, so that none of them cancels what another is still submitting. A lease has an epoch,
bumped whenever another server takes it over: writes made under a ``Fence`` (the watcher's cycle
sets ``FENCE``) check in their own transaction that the lease is still held, in the same epoch,
for at least the fence's margin, so a cycle that outlived its lease never writes what it saw.

The schema's version is ``PRAGMA user_version``; a file of an older schema is migrated when it
is opened (``state_schema.py``). A record that cannot be read (corrupt, or from a future version
that changed its shape) is skipped and reported in ``problems``; it never disables the
extension. Nor does a damaged file (not SQLite at all, or failing ``PRAGMA quick_check``): it is
moved aside and a new one started with the rows that can still be read (``state_recovery.py``),
and that is reported in ``problems``.
"""
from __future__ import annotations

import json
import sqlite3
import threading
import time
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, NamedTuple, Optional

from ..errors import LeaseLost, StoreError
from .state_recovery import recover
from .state_schema import SCHEMA, migrate

#: Every record of the user but the one being written, by kind: what a ``Check`` sees.
Others = Mapping[str, list[dict[str, Any]]]
#: Sees what else the user holds inside the write transaction; raises to refuse the write.
Check = Callable[[Others], None]
#: What a record of each kind is called in the problems reported.
NOUNS = {"deployments": "deployment", "batches": "batch", "files": "file",
         "usage": "usage record"}
#: The kinds a ``Check`` sees (usage records count against no limit).
CHECKED = ("deployments", "batches", "files")


class Record(NamedTuple):
    id: str
    version: int
    doc: dict[str, Any]


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
            migrate(self._db)
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

    # -- records -------------------------------------------------------------------------------

    def insert(self, kind: str, record_id: str, created: float, doc: dict[str, Any],
               check: Optional[Check] = None) -> bool:
        """Insert a new record as version 1 after ``check`` (which raises to refuse) has seen
        what else the user holds, in one write transaction: two servers adding at the same
        moment cannot both slip under a limit. False when the id is taken."""
        text = json.dumps(doc)
        with self._locked() as db, _Transaction(db):
            if check is not None:
                check(self._others(db, kind, record_id))
            cursor = db.execute("INSERT OR IGNORE INTO records (kind, id, created, version, doc) "
                                "VALUES (?, ?, ?, 1, ?)", (_kind(kind), record_id, created, text))
            return cursor.rowcount == 1

    def save(self, kind: str, record_id: str, doc: dict[str, Any], expected: int,
             check: Optional[Check] = None) -> bool:
        """Write a record as version ``expected + 1``, under the fence of the work under way
        (``FENCE``) and after ``check`` (as for ``insert``); False when another writer got
        there first (or it is gone)."""
        text = json.dumps(doc)
        with self._locked() as db, _Transaction(db):
            _check_fence(db, FENCE.get())
            if check is not None:
                check(self._others(db, kind, record_id))
            cursor = db.execute("UPDATE records SET doc = ?, version = ? "
                                "WHERE kind = ? AND id = ? AND version = ?",
                                (text, expected + 1, _kind(kind), record_id, expected))
            return cursor.rowcount == 1

    def load(self, kind: str, ids: Optional[list[str]] = None) -> list[Record]:
        """Records of ``kind`` (all, or those of ``ids``), oldest first; unreadable ones are
        skipped and reported."""
        query = "SELECT id, version, doc FROM records WHERE kind = ?"
        with self._locked() as db:
            if ids is None:
                rows = db.execute(query + " ORDER BY created", (_kind(kind),)).fetchall()
            else:
                rows = [row for i in ids
                        for row in db.execute(query + " AND id = ?", (_kind(kind), i))]
        loaded = (Record(i, version, self._parse(kind, i, text)) for i, version, text in rows)
        return [record for record in loaded if record.doc is not None]

    def versions(self, kind: str) -> dict[str, int]:
        """Every record's version: what changed since the last look, in one cheap query."""
        with self._locked() as db:
            return dict(db.execute("SELECT id, version FROM records WHERE kind = ?",
                                   (_kind(kind),)).fetchall())

    def delete(self, kind: str, record_id: str, expected: Optional[int] = None) -> bool:
        """Remove a record (only at version ``expected``, if given); False when it had moved on
        or was gone."""
        query = "DELETE FROM records WHERE kind = ? AND id = ?"
        args: tuple[object, ...] = (_kind(kind), record_id)
        if expected is not None:
            query, args = query + " AND version = ?", args + (expected,)
        with self._locked() as db:
            return db.execute(query, args).rowcount == 1

    def report(self, problem: str) -> None:
        """Say once that something recorded could not be used (shown by health)."""
        if problem not in self.problems:
            self.problems.append(problem)

    def _others(self, db: sqlite3.Connection, kind: str, record_id: str) -> Others:
        """Every readable record but the one being written, seen in its transaction."""
        others: dict[str, list[dict[str, Any]]] = {k: [] for k in CHECKED}
        for k, i, text in db.execute("SELECT kind, id, doc FROM records WHERE kind IN "
                                     f"({', '.join('?' * len(CHECKED))}) ORDER BY created",
                                     CHECKED):
            if (k, i) != (kind, record_id) and k in others:
                doc = self._parse(k, i, text)
                if doc is not None:
                    others[k].append(doc)
        return others

    def _parse(self, kind: str, record_id: str, text: str) -> Any:
        try:
            doc = json.loads(text)
            if not isinstance(doc, dict):
                raise ValueError("not an object")
            return doc
        except ValueError as exc:
            self.report(f"{NOUNS.get(kind, kind)} {record_id}: unreadable record skipped ({exc})")
            return None

    # -- leases --------------------------------------------------------------------------------

    def claim(self, name: str, owner: str, now: float, ttl: float) -> bool:
        """Take or renew lease ``name`` for ``owner`` until ``now + ttl``; False when another
        owner holds it and it has not expired."""
        return self.claim_epoch(name, owner, now, ttl) is not None

    def claim_epoch(self, name: str, owner: str, now: float, ttl: float) -> Optional[int]:
        """``claim``, answering the lease's epoch (None: not ours). Renewing keeps the epoch;
        taking the lease over from another owner (or after a release) bumps it."""
        with self._locked() as db, _Transaction(db):
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


def _kind(kind: str) -> str:
    if kind not in NOUNS:
        raise ValueError(f"no kind of record {kind!r}")
    return kind
