"""The one watch loop: the only writer of observed state.

Each tick (``tick`` seconds, or at once when the service signals a change) it does the cheap,
local work: reads the endpoint files of queued and starting replicas (an engine that started is
noticed from its own file, not by asking the scheduler faster) and checks the health of starting
and ready engines, pinned to each run's TLS certificate. It asks the scheduler, in ONE call for
all jobs, only when that is due: every ``fast_interval`` seconds for a short while after a change
(a launch, a stop, a state seen to move), then less and less often, up to ``slow_interval``,
while jobs merely wait in the queue or run. A failing scheduler keeps the last known state.
File-system work runs off the event loop: a stalled shared file system never freezes the server.

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

A starting replica is ready only when its engine answers a real one-token completion (with the
replica's key, over the pinned TLS), not merely ``/health``: engines can answer health and hang on
the first request. Engines marked ``readiness: health`` in the catalog skip it. These probes run
beside the cycle, so a hanging engine never holds the loop up. Each cycle ends with the
lifecycle policies (``policies.py``): every server records its inference activity; the watcher
acts (restarts, renewals, drains, idle shutdown).
"""
from __future__ import annotations

import asyncio
import logging
import time
from functools import partial
from pathlib import Path
from typing import Any, Callable, Optional

import aiohttp

from ..core.store import FENCE, Fence
from ..errors import LeaseLost, OsireError, SchedulerError
from ..proxy.endpoints import EngineEndpoint, parse_endpoint_file
from ..proxy.upstream import pinned_tls
from ..schedulers.base import Scheduler
from .service import ENDPOINT_FILE, DeploymentService
from .states import QUEUED, READY, STARTING

log = logging.getLogger(__name__)
MONITOR_LEASE = "monitor"
LEASE_TTL = 20.0        # seconds a lease holds without renewal
LEASE_RENEW = 5.0       # seconds between renewals


def query_interval(since_change: float, fast: float, slow: float) -> float:
    """Seconds until the next scheduler query, ``since_change`` seconds after the last change:
    fast at first, then a quarter of the time things have been quiet, at most ``slow``."""
    return max(fast, min(slow, since_change / 4))


class Monitor:
    def __init__(self, service: DeploymentService, scheduler: Scheduler, *,
                 fast_interval: float = 0.5, slow_interval: float = 30.0, tick: float = 0.5,
                 health_interval: float = 10.0, health_timeout: float = 2.0,
                 readiness_timeout: float = 30.0, lease_ttl: float = LEASE_TTL,
                 lease_renew: Optional[float] = None,
                 clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time) -> None:
        self.service, self.scheduler = service, scheduler
        self.fast_interval, self.slow_interval, self.tick = fast_interval, slow_interval, tick
        self.health_interval, self.health_timeout = health_interval, health_timeout
        self.readiness_timeout = readiness_timeout
        self.policies: Any = None                 # policies.Policies, set by the extension
        self.batches: Any = None                  # batches.BatchService, set by the extension
        self._probes: dict[tuple[str, int], asyncio.Task] = {}
        self.clock, self.wall_clock = clock, wall_clock
        self.leader = False
        self.lease_ttl = lease_ttl
        self.lease_renew = lease_renew if lease_renew is not None else \
            min(LEASE_RENEW, lease_ttl / 4)
        self.lease_name = f"{MONITOR_LEASE}:{service.owner.key}"
        self._fence: Optional[Fence] = None
        self._leases_renewed = -1e9
        self.last_error: Optional[str] = None
        self.last_cycle: Optional[float] = None
        self.cycles = 0
        self.queries = 0
        self._task: Optional[asyncio.Task] = None
        self._stopping = False
        self._session: Optional[aiohttp.ClientSession] = None
        self._last_health: dict[tuple[str, int], float] = {}
        self._last_change = clock()
        self._next_query = 0.0
        self._signature: tuple = ()

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
        for probe in list(self._probes.values()):
            probe.cancel()
        await asyncio.gather(*self._probes.values(), return_exceptions=True)
        self._probes.clear()
        if self._session:
            await self._session.close()
            self._session = None
        try:   # let another server of this user take over at once
            await asyncio.to_thread(self._release_leases)
        except OsireError:
            pass
        self.leader = False

    def _release_leases(self) -> None:
        store, me = self.service.store, self.service.server_id
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
        waiter = asyncio.ensure_future(self.service.changed.wait())
        try:
            await asyncio.wait({waiter}, timeout=self.tick)
        finally:
            waiter.cancel()

    def next_query_in(self) -> float:
        return max(0.0, self._next_query - self.clock())

    async def cycle(self) -> None:
        now = self.clock()
        await self._renew_leases(now)
        await self.service.refresh()
        if self.batches is not None:
            await self.batches.refresh()
        if self.service.changed.is_set():
            self.service.changed.clear()
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
        if now >= self._next_query and (self.service.live_jobs() or self._batch_jobs()):
            await self._query()
            now = self.clock()
            self._next_query = now + query_interval(now - self._last_change,
                                                    self.fast_interval, self.slow_interval)
        await self._check_replicas()
        if self.batches is not None:
            await self.batches.observe_progress()
        if self.policies is not None:
            await self.policies.cycle(leader=True)
        signature = tuple((d.id, d.state, tuple(r.state for r in d.replicas))
                          for d in self.service.all()) + tuple(
            (b.id, b.status) for b in (self.batches.all() if self.batches else ()))
        if signature != self._signature:
            self._signature = signature
            self._changed(self.clock())

    async def _renew_leases(self, now: float) -> None:
        """Every ``lease_renew`` s: this server's heartbeat, and the watcher's lease (taken over
        when its holder has not renewed it for ``lease_ttl`` s)."""
        if now - self._leases_renewed < self.lease_renew:
            return
        store, me, wall = self.service.store, self.service.server_id, self.wall_clock()
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
        return server_id == self.service.server_id or \
            self.service.store.holder(f"server:{server_id}", self.wall_clock()) == server_id

    def _changed(self, now: float) -> None:
        """Something moved: poll fast again (the next query at once)."""
        self._last_change = now
        self._next_query = min(self._next_query, now)

    def _batch_jobs(self) -> list:
        return self.batches.live_jobs() if self.batches is not None else []

    async def _query(self) -> None:
        """One scheduler call for every engine job and every batch job."""
        live, batches = self.service.live_jobs(), self._batch_jobs()
        self.queries += 1
        try:
            infos = await asyncio.to_thread(self.scheduler.query, [j for _, _, j in live] +
                                            [j for _, j in batches])
        except SchedulerError as exc:
            if self.last_error != exc.message:
                log.warning("scheduler query failed, keeping last known states: %s", exc.message)
            self.last_error = exc.message
            return
        self.last_error = None
        # The answer may have taken longer than the lease: act on it only if it still holds.
        await asyncio.to_thread(self.service.store.check_fence, FENCE.get())
        for deployment_id, replica, job in live:
            if job.id in infos:
                await self.service.observe_job(deployment_id, replica.index, infos[job.id])
        for batch_id, job in batches:
            if job.id in infos:
                await self.batches.observe_job(batch_id, infos[job.id])
        await self.service.retry_cancels()   # the controller answers: a good time to retry

    async def _reap_interrupted(self) -> None:
        """Launches cut off by a server that died: their jobs may exist under a known name."""
        unsubmitted = [d for d in self.service.all()
                       if any(r.live and not r.job_id for r in d.replicas)]
        if unsubmitted:
            alive = await asyncio.to_thread(
                lambda: {d.launched_by: self._alive(d.launched_by) for d in unsubmitted
                         if d.launched_by})
            await self.service.reap_interrupted(lambda server: alive.get(server, False))
        await self.service.cancel_interrupted()
        if self.batches is not None:
            cut_off = {b.launched_by for b in self.batches.all() if b.live and not b.job_id}
            if cut_off:
                alive = await asyncio.to_thread(lambda: {s: self._alive(s) for s in cut_off})
                await self.batches.reap_interrupted(lambda server: alive.get(server, False))

    async def _check_replicas(self) -> None:
        now = self.clock()
        live = {(d.id, r.index) for d in self.service.all() for r in d.replicas if r.live}
        self._last_health = {k: v for k, v in self._last_health.items() if k in live}
        watched = [(d.id, r.index, Path(r.folder)) for d in self.service.all()
                   for r in d.replicas
                   if r.state in (QUEUED, STARTING) and r.job_id and self.service.ours(r)]
        if watched:
            found = await asyncio.to_thread(_read_endpoints, watched)
            for (deployment_id, index, _), endpoint in zip(watched, found):
                if endpoint is not None:
                    await self.service.observe_endpoint(deployment_id, index, endpoint)
        checks = []
        for deployment in self.service.all():
            for r in deployment.replicas:
                slot = (deployment.id, r.index)
                if not self.service.ours(r):
                    continue
                if r.state == STARTING and r.url and slot not in self._probes:
                    self._probes[slot] = task = asyncio.get_running_loop().create_task(
                        self._probe_starting(deployment.id, deployment.model, r.index, r.url,
                                             r.fingerprint))
                    task.add_done_callback(partial(self._probe_done, slot))
                elif r.state == READY and r.url and \
                        now - self._last_health.get(slot, -1e9) >= self.health_interval:
                    self._last_health[slot] = now
                    checks.append(self._health(deployment.id, r.index, r.url, r.fingerprint))
        if checks:
            await asyncio.gather(*checks)

    async def _health(self, deployment_id: str, index: int, url: str,
                      fingerprint: Optional[str]) -> None:
        await self.service.observe_health(deployment_id, index,
                                          await self._healthy(url, fingerprint))

    async def _healthy(self, url: str, fingerprint: Optional[str]) -> bool:
        """``/health`` with no key, over TLS pinned to the run's certificate: an impostor on the
        port fails the handshake check and never makes the replica ready."""
        return await self._request("GET", f"{url}/health", fingerprint, self.health_timeout)

    def _probe_done(self, slot: tuple[str, int], _: asyncio.Task) -> None:
        self._probes.pop(slot, None)

    async def _probe_starting(self, deployment_id: str, model: str, index: int, url: str,
                              fingerprint: Optional[str]) -> None:
        """A starting replica: ``/health``, then (unless its engine says ``readiness: health``)
        a one-token completion with the replica's key; ready only when both pass."""
        healthy = await self._healthy(url, fingerprint)
        entry = self.service.catalog.models.get(model)
        if healthy and (entry is None or entry.engine.readiness == "completion"):
            key = self.service.replica_key(deployment_id, index)
            healthy = await self._request(
                "POST", f"{url}/v1/completions", fingerprint, self.readiness_timeout,
                json={"model": model, "prompt": "Hello", "max_tokens": 1},
                headers={"Authorization": f"Bearer {key}"} if key else {})
            if not healthy:
                log.info("deployment %s replica %d answers /health but not yet a completion",
                         deployment_id, index)
        try:
            await self.service.observe_health(deployment_id, index, healthy)
        except LeaseLost:   # begun while this server watched; another one probes it now
            pass

    async def _request(self, method: str, url: str, fingerprint: Optional[str],
                       timeout: float, **kwargs: Any) -> bool:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        try:
            async with self._session.request(method, url, ssl=pinned_tls(fingerprint),
                                             timeout=aiohttp.ClientTimeout(total=timeout),
                                             **kwargs) as resp:
                await resp.read()
                return resp.status == 200
        except aiohttp.ServerFingerprintMismatch:
            log.warning("engine at %s did not present its job's certificate: not trusted", url)
            return False
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
            return False


def _read_endpoints(watched: list[tuple[str, int, Path]]) -> list[Optional[EngineEndpoint]]:
    """The endpoint file of each replica folder (in a worker thread: it may be on NFS)."""
    return [_read_endpoint(folder) for _, _, folder in watched]


def _read_endpoint(folder: Path) -> Optional[EngineEndpoint]:
    try:
        return parse_endpoint_file((folder / ENDPOINT_FILE).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("unreadable endpoint file in %s: %s", folder, exc)
        return None
