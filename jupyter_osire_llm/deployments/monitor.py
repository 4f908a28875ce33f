"""The one watch loop: the only writer of observed state.

It watches services through a small protocol (``core.watched.Watched``): deployments and batches
each say which jobs they have live, take the scheduler's word on each, and do their own cheap
local work each cycle (endpoint files and engine health: ``probes.py``; batch progress). The loop
itself holds no record type and no state name.

Each tick (``tick`` seconds, or at once when a service signals a change) it asks the scheduler, in
ONE call for all jobs, only when that is due: every ``fast_interval`` seconds for a short while
after a change (a launch, a stop, a state seen to move), then less and less often, up to
``slow_interval``, while jobs merely wait in the queue or run. A failing scheduler keeps the last
known state.

Two Jupyter servers of one user share the state file: one of them (the holder of the
``monitor:<backend>:<cluster>`` lease in the store) watches the scheduler and writes what it
observes; the other reads the shared state each tick. Each server also keeps a heartbeat lease,
so that the watcher knows whether a launch left half-done belongs to a server that is still
submitting it. A server on another backend or cluster (no ``sbatch`` on its login node, a second
cluster sharing ``$HOME``) holds its own lease and watches only its own scheduler's jobs.

The watcher acts under a fence (``store.FENCE``): every write and scheduler action of its cycle
first checks that its lease is still held, in the same epoch, with ``lease_renew`` seconds to
spare. A cycle that outlived its lease (a slow ``squeue``, a slow state file) stops there, and
what it observed is dropped, before another server that took over can be contradicted.

Each cycle ends with the lifecycle policies (``policies.py``): every server records its inference
activity; the watcher acts (restarts, renewals, drains, idle shutdown).
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Hashable, Sequence
from typing import Callable, Optional

from ..core.store import FENCE, Fence, Store
from ..core.watched import Watched, WatchedJob
from ..errors import LeaseLost, OsireError, SchedulerError
from ..schedulers.base import JobOwner, Scheduler
from .policies import Policies

log = logging.getLogger(__name__)
MONITOR_LEASE = "monitor"
LEASE_TTL = 20.0        # seconds a lease holds without renewal
LEASE_RENEW = 5.0       # seconds between renewals


def query_interval(since_change: float, fast: float, slow: float) -> float:
    """Seconds until the next scheduler query, ``since_change`` seconds after the last change:
    fast at first, then a quarter of the time things have been quiet, at most ``slow``."""
    return max(fast, min(slow, since_change / 4))


class Monitor:
    def __init__(self, scheduler: Scheduler, store: Store, watched: Sequence[Watched], *,
                 server_id: str, owner: JobOwner, changed: asyncio.Event,
                 policies: Optional[Policies] = None,
                 fast_interval: float = 0.5, slow_interval: float = 30.0, tick: float = 0.5,
                 lease_ttl: float = LEASE_TTL, lease_renew: Optional[float] = None,
                 clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time) -> None:
        self.scheduler, self.store, self.watched = scheduler, store, tuple(watched)
        self.server_id, self.changed, self.policies = server_id, changed, policies
        self.fast_interval, self.slow_interval, self.tick = fast_interval, slow_interval, tick
        self.clock, self.wall_clock = clock, wall_clock
        self.leader = False
        self.lease_ttl = lease_ttl
        self.lease_renew = lease_renew if lease_renew is not None else \
            min(LEASE_RENEW, lease_ttl / 4)
        self.lease_name = f"{MONITOR_LEASE}:{owner.key}"
        self._fence: Optional[Fence] = None
        self._leases_renewed = -1e9
        self.last_error: Optional[str] = None
        self.last_cycle: Optional[float] = None
        self.cycles = 0
        self.queries = 0
        self._task: Optional[asyncio.Task[None]] = None
        self._stopping = False
        self._last_change = clock()
        self._next_query = 0.0
        self._signature: Hashable = ()

    def start(self) -> None:
        if self._task is None:
            self._stopping = False
            self._task = asyncio.get_running_loop().create_task(self.run())

    async def stop(self) -> None:
        self._stopping = True      # ends the loop even if a cancellation is lost on the way
        if self._task:
            self._task.cancel()
            await asyncio.wait({self._task})
            self._task = None
        for watched in self.watched:
            await watched.close()
        try:   # let another server of this user take over at once
            await asyncio.to_thread(self._release_leases)
        except OsireError:
            pass
        self.leader = False

    def _release_leases(self) -> None:
        store, me = self.store, self.server_id
        store.release(self.lease_name, me)
        store.release(f"server:{me}", me)

    async def run(self) -> None:
        while not self._stopping:
            try:
                await self.cycle()
            except asyncio.CancelledError:
                raise
            except Exception:  # never let one bad cycle end monitoring
                log.exception("monitor cycle failed")
            await self._pause()

    async def _pause(self) -> None:
        """Until the next tick or a change the service signals. Not ``asyncio.wait_for``: on
        Python < 3.12 it can swallow a cancellation that comes as the wait ends, and the loop
        would outlive the server's shutdown (seen as a hung test teardown)."""
        waiter = asyncio.ensure_future(self.changed.wait())
        try:
            await asyncio.wait({waiter}, timeout=self.tick)
        finally:
            waiter.cancel()

    def next_query_in(self) -> float:
        return max(0.0, self._next_query - self.clock())

    async def cycle(self) -> None:
        now = self.clock()
        await self._renew_leases(now)
        for watched in self.watched:
            await watched.refresh()
        if self.changed.is_set():
            self.changed.clear()
            self._changed(now)
        if not self.leader:   # another server of this user watches; we read what it writes
            if self.policies is not None:
                await self.policies.cycle(leader=False)
        else:
            token = FENCE.set(self._fence)
            try:
                await self._watch(now)
            except LeaseLost as exc:
                self._lost_lease(exc)
            finally:
                FENCE.reset(token)
        self.last_cycle = time.time()
        self.cycles += 1

    def _lost_lease(self, exc: LeaseLost) -> None:
        log.warning("stopped acting in the middle of a watch cycle: %s", exc.message)
        self.leader, self._fence = False, None
        self._leases_renewed = -1e9     # ask again next cycle

    async def _watch(self, now: float) -> None:
        """The watcher's part of a cycle, under its fence."""
        await self._reap_interrupted()
        if now >= self._next_query and self._jobs():
            await self._query()
            now = self.clock()
            self._next_query = now + query_interval(now - self._last_change,
                                                    self.fast_interval, self.slow_interval)
        for watched in self.watched:
            await watched.housekeeping()
        if self.policies is not None:
            await self.policies.cycle(leader=True)
        signature = tuple(watched.signature() for watched in self.watched)
        if signature != self._signature:
            self._signature = signature
            self._changed(self.clock())

    async def _renew_leases(self, now: float) -> None:
        """Every ``lease_renew`` s: this server's heartbeat, and the watcher's lease (taken over
        when its holder has not renewed it for ``lease_ttl`` s)."""
        if now - self._leases_renewed < self.lease_renew:
            return
        store, me, wall = self.store, self.server_id, self.wall_clock()
        epoch = await asyncio.to_thread(lambda: (
            store.claim(f"server:{me}", me, wall, self.lease_ttl),
            store.claim_epoch(self.lease_name, me, wall, self.lease_ttl))[1])
        leader = epoch is not None
        self._fence = Fence(self.lease_name, me, epoch, self.lease_renew, self.wall_clock) \
            if epoch is not None else None
        if leader and not self.leader:
            log.info("watching the scheduler for this user's deployments (server %s)", me)
            self._next_query = 0.0
        elif self.leader and not leader:
            log.warning("another Jupyter server of this user now watches the scheduler")
        self.leader = leader
        self._leases_renewed = now

    def _alive(self, server_id: str) -> bool:
        return server_id == self.server_id or \
            self.store.holder(f"server:{server_id}", self.wall_clock()) == server_id

    def _changed(self, now: float) -> None:
        """Something moved: poll fast again (the next query at once)."""
        self._last_change = now
        self._next_query = min(self._next_query, now)

    def _jobs(self) -> list[WatchedJob]:
        return [job for watched in self.watched for job in watched.watched_jobs()]

    async def _query(self) -> None:
        """One scheduler call for every job of every watched service."""
        jobs = self._jobs()
        self.queries += 1
        try:
            infos = await asyncio.to_thread(self.scheduler.query, [w.job for w in jobs])
        except SchedulerError as exc:
            if self.last_error != exc.message:
                log.warning("scheduler query failed, keeping last known states: %s", exc.message)
            self.last_error = exc.message
            return
        self.last_error = None
        # The answer may have taken longer than the lease: act on it only if it still holds.
        await asyncio.to_thread(self.store.check_fence, FENCE.get())
        for watched_job in jobs:
            if watched_job.job.id in infos:
                await watched_job.observe(infos[watched_job.job.id])
        for watched in self.watched:   # the controller answers: a good time to retry
            await watched.after_query()

    async def _reap_interrupted(self) -> None:
        """Launches cut off by a server that died: their jobs may exist under a known name."""
        for watched in self.watched:
            cut_off = watched.unsubmitted_by()
            alive: dict[str, bool] = {}
            if cut_off:
                alive = await asyncio.to_thread(lambda: {s: self._alive(s) for s in cut_off})
            await watched.reap_interrupted(lambda server: alive.get(server, False))
