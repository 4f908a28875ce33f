"""What the user used, per model and day: the tokens the proxy counted, and what each job of a
deployment or batch used (wall time, GPU hours, billing), kept in the shared state file.

Records of kind ``usage`` in the store (``core/store.py``), so that usage survives restarts and
covers every Jupyter server of the user (they share the file):

- ``tokens:<day>:<server>:<model>``: requests and tokens one server counted that UTC day. Each
  server adds what its proxy counted (``proxy/usage.py``, in memory) every ``flush_interval``
  seconds and when it stops, with a compare-and-swap on the record's version.
- ``job:<scheduler>:<job id>``: one per job (each replica, each restart, each batch run). The
  monitor, the only writer of what it observes, records it when it sees the job end: at once
  with the times it saw and the GPUs the job asked for (``pending``), then settled with the
  scheduler's own figures (``Scheduler.job_usage``: Slurm's accounting, which may take a while
  to have the record), asked again on later cycles for at most ``settle_within`` seconds.
  Inserting by job id makes the record once, whichever server sees the end.

``summary`` sums them per model and UTC day; a job's GPU hours and billing fall on the days it
ran, in proportion.
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Optional

from ..errors import StoreError
from ..proxy.usage import Counts, Key, TokenTally, utc_day
from ..schedulers.base import Job, JobUsage, Scheduler
from .store import FENCE, Store
from .watched import WatchedJob

KIND = "usage"
ATTEMPTS = 20                  # compare-and-swap rounds per record
RETRY_AFTER = (2.0, 5.0, 10.0, 30.0, 60.0)   # seconds between questions to the scheduler
RELOAD_EVERY = 600.0           # seconds between looks for jobs other servers left unsettled


@dataclass(frozen=True)
class EndedJob:
    """A job the monitor saw end, and whose it was."""

    job_id: str
    folder: str
    owner: Optional[str]       # JobOwner.key of the scheduler that ran it
    model: str
    of: str                    # "deployment" or "batch"
    record: str                # the deployment's or batch's id
    gpus: int                  # GPUs it asked for, all nodes
    start: Optional[float]
    end: Optional[float]

    @property
    def record_id(self) -> str:
        return f"job:{self.owner or ''}:{self.job_id}"


def requested_gpus(resources: dict[str, Any]) -> int:
    """GPUs one job asks for (per node times nodes), from the resources as stored."""
    try:
        return int(resources.get("gpus") or 0) * int(resources.get("nodes") or 1)
    except (TypeError, ValueError):
        return 0


@dataclass
class _Pending:
    doc: dict[str, Any]
    version: int
    tries: int = 0
    next_try: float = 0.0


@dataclass
class _Row:
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    gpu_hours: float = 0.0
    billing: Optional[float] = None

    def json(self) -> dict[str, Any]:
        return {"requests": self.requests, "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens,
                "gpu_hours": round(self.gpu_hours, 6),
                "billing": None if self.billing is None else round(self.billing, 6)}


class UsageLog:
    """The user's usage in the store: token counts flushed from memory, job usage settled."""

    def __init__(self, store_of: Callable[[], Store], tally: TokenTally, server_id: str,
                 scheduler: Scheduler, *, flush_interval: float = 15.0,
                 settle_within: float = 900.0, clock: Callable[[], float] = time.time) -> None:
        self._store_of, self.tally, self.server_id = store_of, tally, server_id
        self.scheduler, self.clock = scheduler, clock
        self.flush_interval, self.settle_within = flush_interval, settle_within
        self._pending: dict[str, _Pending] = {}
        self._loaded_at: Optional[float] = None
        self._last_flush = clock()
        self._lock: Optional[asyncio.Lock] = None

    @property
    def store(self) -> Store:
        return self._store_of()

    def _flush_lock(self) -> asyncio.Lock:
        if self._lock is None:
            self._lock = asyncio.Lock()
        return self._lock

    # -- tokens ------------------------------------------------------------------------------

    async def maybe_flush(self) -> None:
        """Write the counts when ``flush_interval`` has passed since the last write."""
        if self.tally and self.clock() - self._last_flush >= self.flush_interval:
            await self.flush()

    async def flush(self) -> None:
        """Add what the proxy counted since the last flush to this server's records."""
        async with self._flush_lock():
            self._last_flush = self.clock()
            taken = self.tally.take()
            if not taken:
                return
            try:
                left = await asyncio.to_thread(self._write_tokens, taken)
            except BaseException:
                self.tally.give_back(taken)    # kept for the next flush
                raise
            self.tally.give_back(left)

    def _write_tokens(self, taken: dict[Key, Counts]) -> dict[Key, Counts]:
        """Blocking: each (day, model) added to its record; answers what could not be."""
        FENCE.set(None)   # this server's own records: no watcher's lease involved
        left = dict(taken)
        for (day, model), counts in taken.items():
            if self._add_tokens(day, model, counts):
                del left[(day, model)]
        return left

    def _add_tokens(self, day: str, model: str, counts: Counts) -> bool:
        store, record_id = self.store, f"tokens:{day}:{self.server_id}:{model}"
        for _ in range(ATTEMPTS):
            found = store.load(KIND, [record_id])
            if not found:
                doc = {"type": "tokens", "day": day, "model": model, "server": self.server_id,
                       "requests": counts.requests, "prompt_tokens": counts.prompt_tokens,
                       "completion_tokens": counts.completion_tokens}
                if store.insert(KIND, record_id, self.clock(), doc):
                    return True
                continue
            old = found[0].doc
            doc = {**old, **{name: int(old.get(name) or 0) + getattr(counts, name)
                             for name in ("requests", "prompt_tokens", "completion_tokens")}}
            if store.save(KIND, record_id, doc, found[0].version):
                return True
        return False

    # -- jobs --------------------------------------------------------------------------------

    async def job_ended(self, ended: EndedJob) -> None:
        """The monitor saw a job end: record it now with what it saw (pending), to be settled
        with the scheduler's figures. A job recorded already (another server, an earlier
        cycle) is left as it is."""
        now = self.clock()
        end = ended.end or now
        start = ended.start if ended.start is not None and ended.start <= end else None
        elapsed = end - start if start is not None else 0.0
        doc = {"type": "job", "of": ended.of, "record": ended.record, "model": ended.model,
               "job_id": ended.job_id, "owner": ended.owner, "folder": ended.folder,
               "start": start, "end": end, "elapsed": elapsed, "gpus": ended.gpus,
               "gpu_hours": ended.gpus * elapsed / 3600, "billing": None, "billing_units": None,
               "source": "observed", "pending": True}
        record_id = ended.record_id
        if await asyncio.to_thread(self.store.insert, KIND, record_id, now, doc):
            self._pending[record_id] = _Pending(doc, 1, next_try=now)

    async def settle(self) -> None:
        """The watcher's cycle: ask the scheduler what the pending jobs used; record it, or,
        ``settle_within`` seconds after a job ended, keep what was observed."""
        now = self.clock()
        if self._loaded_at is None or now - self._loaded_at >= RELOAD_EVERY:
            self._loaded_at = now
            await self._load_pending()
        for record_id, pending in list(self._pending.items()):
            if pending.next_try > now:
                continue
            doc = pending.doc
            usage = await asyncio.to_thread(self.scheduler.job_usage,
                                            Job(doc["job_id"], Path(doc["folder"] or ".")))
            if usage is None and now - float(doc["end"] or now) < self.settle_within:
                pending.next_try = now + RETRY_AFTER[min(pending.tries, len(RETRY_AFTER) - 1)]
                pending.tries += 1
                continue
            await self._settle_one(record_id, pending, usage)

    async def _settle_one(self, record_id: str, pending: _Pending,
                          usage: Optional[JobUsage]) -> None:
        doc = settled(pending.doc, usage)
        store = self.store
        if doc["elapsed"] <= 0:   # never ran: nothing used
            await asyncio.to_thread(store.delete, KIND, record_id, pending.version)
            self._pending.pop(record_id, None)
            return
        if await asyncio.to_thread(store.save, KIND, record_id, doc, pending.version):
            self._pending.pop(record_id, None)
            return
        fresh = await asyncio.to_thread(store.load, KIND, [record_id])
        if fresh and fresh[0].doc.get("pending"):   # changed meanwhile, still pending
            pending.doc, pending.version = fresh[0].doc, fresh[0].version
        else:                                       # settled elsewhere, or gone
            self._pending.pop(record_id, None)

    async def _load_pending(self) -> None:
        """Pending job records of this server's scheduler (left by a server that stopped)."""
        owner = self.scheduler.owner()
        records = await asyncio.to_thread(self.store.load, KIND)
        for record in records:
            doc = record.doc
            if doc.get("type") == "job" and doc.get("pending") and \
                    record.id not in self._pending and owner.owns(doc.get("owner")):
                self._pending[record.id] = _Pending(doc, record.version)

    def pending_jobs(self) -> int:
        return len(self._pending)

    # -- the summary -------------------------------------------------------------------------

    async def summary(self, since: date) -> dict[str, Any]:
        """Per model and UTC day from ``since`` on, this server's latest counts included."""
        await self.flush()
        records = await asyncio.to_thread(self.store.load, KIND)
        return summarize([r.doc for r in records], since)


def settled(doc: dict[str, Any], usage: Optional[JobUsage]) -> dict[str, Any]:
    """A pending job record with the scheduler's figures (None: what was observed)."""
    if usage is None:
        return {**doc, "pending": False}
    gpus = usage.gpus if usage.gpus is not None else int(doc.get("gpus") or 0)
    end = float(doc.get("end") or 0)
    return {**doc, "pending": False, "source": "scheduler", "elapsed": usage.elapsed,
            "start": end - usage.elapsed if end else doc.get("start"), "gpus": gpus,
            "gpu_hours": gpus * usage.elapsed / 3600, "billing_units": usage.billing,
            "billing": usage.billing_hours}


def summarize(docs: list[dict[str, Any]], since: date) -> dict[str, Any]:
    """Rows per (model, day) from ``since`` on, with totals (days in UTC, ISO dates)."""
    first = since.isoformat()
    rows: dict[tuple[str, str], _Row] = {}

    def row(day: str, model: str) -> _Row:
        return rows.setdefault((day, model), _Row())

    for doc in docs:
        try:
            if doc.get("type") == "tokens" and str(doc["day"]) >= first:
                r = row(str(doc["day"]), str(doc["model"]))
                r.requests += int(doc.get("requests") or 0)
                r.prompt_tokens += int(doc.get("prompt_tokens") or 0)
                r.completion_tokens += int(doc.get("completion_tokens") or 0)
            elif doc.get("type") == "job":
                billing = doc.get("billing")
                for day, share in spread(doc.get("start"), float(doc["end"])).items():
                    if day < first:
                        continue
                    r = row(day, str(doc["model"]))
                    r.gpu_hours += float(doc.get("gpu_hours") or 0) * share
                    if billing is not None:
                        r.billing = (r.billing or 0.0) + float(billing) * share
        except (KeyError, TypeError, ValueError):   # a record of another shape: not counted
            continue
    total = _Row()
    usage = []
    for (day, model), r in sorted(rows.items()):
        usage.append({"model": model, "day": day, **r.json()})
        total.requests += r.requests
        total.prompt_tokens += r.prompt_tokens
        total.completion_tokens += r.completion_tokens
        total.gpu_hours += r.gpu_hours
        if r.billing is not None:
            total.billing = (total.billing or 0.0) + r.billing
    return {"since": first, "usage": usage, "totals": total.json()}


def spread(start: Optional[float], end: float) -> dict[str, float]:
    """The share of ``[start, end]`` on each UTC day (all on the last day without a start)."""
    if start is None or end <= start:
        return {utc_day(end): 1.0}
    shares: dict[str, float] = {}
    at = start
    while at < end:
        moment = datetime.fromtimestamp(at, timezone.utc)
        midnight = datetime.combine(moment.date() + timedelta(days=1), datetime.min.time(),
                                    timezone.utc).timestamp()
        upto = min(end, midnight)
        shares[moment.date().isoformat()] = (upto - at) / (end - start)
        at = upto
    return shares


def default_since(now: float, days: int = 30) -> date:
    return datetime.fromtimestamp(now, timezone.utc).date() - timedelta(days=days)


class UsageWatch:
    """Usage as the monitor watches it (``core.watched.Watched``): no jobs of its own; every
    server flushes its token counts each cycle when due (and when it stops); the watcher settles
    the jobs that ended."""

    def __init__(self, log: UsageLog) -> None:
        self.log = log

    async def refresh(self) -> None:
        try:
            await self.log.maybe_flush()
        except StoreError:   # kept in memory; the next cycle tries again
            pass

    def watched_jobs(self) -> list[WatchedJob]:
        return []

    def unsubmitted_by(self) -> set[str]:
        return set()

    async def reap_interrupted(self, alive: Callable[[str], bool]) -> None:
        """Nothing is submitted here."""

    async def after_query(self) -> None:
        """Nothing waits for the controller."""

    async def housekeeping(self) -> None:
        await self.log.settle()

    def signature(self) -> tuple[()]:
        return ()

    async def close(self) -> None:
        try:
            await self.log.flush()
        except StoreError:
            pass
