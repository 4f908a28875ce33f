"""The in-memory mirror of one kind of store record, kept by the service that owns the kind.

Both services (deployments, batches) answer from memory and write through the store with a
compare-and-swap on the record's version: ``mutate`` applies a change to the freshest record and
writes it; on a conflict (another Jupyter server of the user wrote first) it re-reads the record
and applies the change again. ``refresh`` brings in what other servers wrote and drops what they
removed. Every write runs under the fence of the work under way (``store.FENCE``), checked in
the store's write transaction. Store work runs in worker threads: a stalled shared file system
never freezes the Jupyter server.
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from typing import (
    Any,
    Awaitable,
    Callable,
    Generic,
    Hashable,
    Optional,
    Protocol,
    TypeVar,
)

from ..errors import Conflict
from .store import NOUNS, Check, Record, Store

ATTEMPTS = 20   # compare-and-swap rounds before a write gives up (another server keeps winning)


class Versioned(Protocol):
    """A record as a service keeps it: a frozen dataclass with an id and the store's version."""

    @property
    def id(self) -> str: ...

    @property
    def version(self) -> int: ...


T = TypeVar("T", bound=Versioned)


class RecordMirror(Generic[T]):
    """Records of one ``kind`` by id. ``encode``/``decode`` turn them into store documents and
    back; ``prepare`` completes a changed record before it is written (derived fields);
    ``on_write(old, new)`` runs after each write; ``on_adopt``/``on_drop`` keep what the owner
    holds beside a record (keys) in step with it."""

    def __init__(self, store: Store, kind: str, *, encode: Callable[[T], dict[str, Any]],
                 decode: Callable[[dict[str, Any], int], T],
                 created: Callable[[T], float],
                 prepare: Callable[[T], T] = lambda item: item,
                 on_write: Optional[Callable[[T, T], Awaitable[None]]] = None,
                 on_adopt: Optional[Callable[[T], None]] = None,
                 on_drop: Optional[Callable[[str], None]] = None) -> None:
        self.store, self.kind, self.noun = store, kind, NOUNS[kind]
        self._encode, self._decode, self._created = encode, decode, created
        self._prepare, self._on_write = prepare, on_write
        self._on_adopt, self._on_drop = on_adopt, on_drop
        self.items: dict[str, T] = {}
        self.submitting: set[str] = set()   # ids this server is submitting jobs for right now
        self._lock: Optional[asyncio.Lock] = None

    def load_now(self) -> list[T]:
        """Every readable record of the kind, from the store (blocking: at start-up)."""
        return [item for item in map(self.read, self.store.load(self.kind)) if item is not None]

    def adopt(self, item: T) -> None:
        """Take a record into memory."""
        self.items[item.id] = item
        if self._on_adopt is not None:
            self._on_adopt(item)

    def drop(self, record_id: str) -> None:
        """Forget a record here (not in the store)."""
        self.items.pop(record_id, None)
        if self._on_drop is not None:
            self._on_drop(record_id)

    async def insert(self, item: T, check: Optional[Check] = None) -> T:
        """Persist a new record as version 1 (``check`` as for ``mutate``)."""
        new = replace(self._prepare(item), version=1)   # type: ignore[type-var]
        if not await asyncio.to_thread(self.store.insert, self.kind, new.id,
                                       self._created(new), self._encode(new), check):
            raise Conflict(f"{self.noun} {new.id} exists already")
        self.items[new.id] = new
        return new

    async def mutate(self, record_id: str, change: Callable[[T], T],
                     check: Optional[Check] = None) -> Optional[T]:
        """Apply ``change`` to the freshest record and write it; on a conflict re-read and apply
        again. None when the record is gone (or can no longer be read). ``check`` sees what else
        the user holds, in the write transaction, and raises to refuse."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            for _ in range(ATTEMPTS):
                current = self.items.get(record_id)
                if current is None:
                    return None
                proposed = change(current)
                if proposed == current:
                    return current
                new = replace(self._prepare(proposed),   # type: ignore[type-var]
                              version=current.version + 1)
                if await asyncio.to_thread(self.store.save, self.kind, record_id,
                                           self._encode(new), current.version, check):
                    self.items[record_id] = new
                    if self._on_write is not None:
                        await self._on_write(current, new)
                    return new
                fresh = await asyncio.to_thread(self.store.load, self.kind, [record_id])
                found = self.read(fresh[0]) if fresh else None
                if found is None:
                    self.drop(record_id)
                    return None
                self.items[record_id] = found
        raise Conflict(f"{self.noun} {record_id} is being changed by another server; try again")

    async def refresh(self) -> None:
        """Bring in what other servers wrote (one cheap query when nothing changed) and drop
        what they removed (but what this server is submitting)."""
        versions = await asyncio.to_thread(self.store.versions, self.kind)
        for gone in set(self.items) - set(versions):
            if gone not in self.submitting:
                self.drop(gone)
        changed = [i for i, v in versions.items()
                   if i not in self.items or self.items[i].version != v]
        if changed:
            fresh = await asyncio.to_thread(self.store.load, self.kind, changed)
            await asyncio.to_thread(self._adopt_all, fresh)

    def forget_now(self, record_id: str) -> None:
        """Forget a record here and in the store (blocking)."""
        self.drop(record_id)
        self.store.delete(self.kind, record_id)

    def oldest_ended(self, live: Callable[[T], bool], ended_at: Callable[[T], float],
                     keep: int) -> list[str]:
        """Ended records past the newest ``keep``: the ones to reap."""
        ended = sorted((i for i in self.items.values() if not live(i)), key=ended_at,
                       reverse=True)
        return [i.id for i in ended[keep:]]

    def abandoned(self, record_id: str, launched_by: Optional[str],
                  alive: Callable[[str], bool]) -> bool:
        """Whether the submission of a record's job was left unfinished: not by this server
        (still submitting) nor by a server that is alive."""
        return record_id not in self.submitting and not (launched_by and alive(launched_by))

    def _adopt_all(self, records: list[Record]) -> None:
        for item in map(self.read, records):
            if item is not None:
                self.adopt(item)

    def read(self, record: Record) -> Optional[T]:
        try:
            return self._decode(record.doc, record.version)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            self.store.report(f"{self.noun} {record.id}: unreadable record skipped ({exc})")
            return None


class KeepsRecords(Generic[T]):
    """A service whose records live in a ``RecordMirror``: its state file is the mirror's, so
    replacing one replaces the other."""

    records: RecordMirror[T]

    @property
    def store(self) -> Store:
        return self.records.store

    @store.setter
    def store(self, store: Store) -> None:
        self.records.store = store


class CancelRetry:
    """When each job was last asked to end, so that a cancel is sent again every ``every``
    seconds until the scheduler says the job ended (a cancel may fail, or be lost)."""

    def __init__(self, every: float, clock: Callable[[], float] = time.time) -> None:
        self.every, self.clock = every, clock
        self._sent: dict[Hashable, float] = {}

    def due(self, key: Hashable, now: Optional[float] = None) -> bool:
        return (self.clock() if now is None else now) - self._sent.get(key, 0.0) >= self.every

    def sent(self, key: Hashable) -> None:
        self._sent[key] = self.clock()

    def failed(self, key: Hashable) -> None:
        """Send it again at the next chance."""
        self._sent[key] = 0.0
