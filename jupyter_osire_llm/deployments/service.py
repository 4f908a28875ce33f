"""The deployment service: launch, stop, list and read logs; the owner of deployment state.

Handlers call it; it calls the catalog, the store and the scheduler. The monitor feeds it what it
observes (``observe_job``, ``observe_endpoint``, ``observe_health``). It also answers the router
(``EndpointSource``) from memory, so the proxy's hot path never touches disk or the scheduler.

Every change is a function of the current record, written with a compare-and-swap on the row's
version (``_mutate``): two Jupyter servers of one user sharing the state file never lose each
other's changes, and ``refresh`` brings in what the other one wrote. Store and file-system work
runs in worker threads: a stalled shared file system never freezes the Jupyter server.
"""
from __future__ import annotations

import asyncio
import logging
import os
import secrets
import shutil
import socket
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Optional

from ..core.catalog import Catalog
from ..core.limits import SiteLimits, job_gpus, parse_resources
from ..core.logtail import read_tail
from ..core.private_folder import private_folder
from ..core.render import ScriptContext, ScriptRenderer
from ..core.store import FENCE, Holdings, Store
from ..core.usage import deployment_gpus, gpus_in_use, resources_gpus
from ..errors import (
    ConfigError,
    Conflict,
    NotFound,
    OsireError,
    RequestError,
    SchedulerError,
    SchedulerTimeout,
    StoreError,
)
from ..proxy.endpoints import Endpoint, EngineEndpoint, ModelStatus
from ..schedulers.base import Job, JobInfo, JobOwner, JobRequest, JobState, Resources, Scheduler
from .states import (
    FAILED,
    QUEUED,
    READY,
    STARTING,
    STOPPED,
    STOPPING,
    Deployment,
    Replica,
    apply_job_info,
    deployment_state,
)

log = logging.getLogger(__name__)
KEY_FILE = "key"
ENDPOINT_FILE = "endpoint.json"
GUARD_SOURCE = Path(__file__).parents[1] / "jobside" / "engine_guard.py"
_STATE_RANK = {READY: 0, STARTING: 1, QUEUED: 2}
Change = Callable[[Deployment], Deployment]
Check = Callable[[Holdings], None]
#: The restart policy's say on a replica that just failed: (deployment, replica before, replica
#: failed) -> the replica to record (the failed one, or one waiting to be submitted again).
FailureHook = Callable[[Deployment, Replica, Replica], Replica]


class DeploymentService:
    def __init__(self, *, catalog: Catalog, limits: SiteLimits, scheduler: Scheduler,
                 store: Store, renderer: ScriptRenderer, job_root: Path,
                 advertise_host: str = "", bind_host: str = "0.0.0.0", keep_finished: int = 50,
                 lost_grace: float = 60.0, cancel_retry: float = 5.0,
                 server_id: Optional[str] = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.catalog, self.limits, self.scheduler = catalog, limits, scheduler
        self.store, self.renderer, self.job_root = store, renderer, job_root
        self.advertise_host, self.bind_host, self.clock = advertise_host, bind_host, clock
        self.keep_finished, self.lost_grace, self.cancel_retry = \
            keep_finished, lost_grace, cancel_retry
        self.server_id = server_id or f"{socket.gethostname()}:{os.getpid()}:" \
                                      f"{secrets.token_hex(3)}"
        self.changed = asyncio.Event()            # wakes the monitor early
        self._deployments: dict[str, Deployment] = {}
        self._keys: dict[tuple[str, int], str] = {}   # one key per replica
        self._key_jobs: dict[tuple[str, int], Optional[str]] = {}   # the job each key was read for
        self.on_failure: Optional[FailureHook] = None   # set by the lifecycle policies
        self._interrupted: list[str] = []        # job names whose submission may have a job
        self._launching: set[str] = set()         # deployments this server is submitting
        self._cancelled_at: dict[tuple[str, int], float] = {}   # last cancel sent, per replica
        self._lock: Optional[asyncio.Lock] = None
        self.owner: JobOwner = scheduler.owner()   # the backend and cluster our jobs run on
        for deployment in self.store.load_all():
            self._adopt(self._with_owner(deployment))
        self._prune_finished_now()

    # -- queries ---------------------------------------------------------------------------

    def all(self) -> list[Deployment]:
        return list(self._deployments.values())

    def get(self, deployment_id: str) -> Deployment:
        try:
            return self._deployments[deployment_id]
        except KeyError:
            raise NotFound(f"no deployment {deployment_id!r}", field="id") from None

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for d in self._deployments.values():
            counts[d.state] = counts.get(d.state, 0) + 1
        return counts

    async def logs(self, deployment_id: str, tail: int = 100) -> list[dict[str, Any]]:
        deployment = self.get(deployment_id)
        paths = [self.scheduler.output_path(self._job(r)) for r in deployment.replicas]
        texts = await asyncio.to_thread(lambda: [read_tail(p, tail) for p in paths])
        out = []
        for r, text in zip(deployment.replicas, texts):
            text = self._redact(deployment_id, text or r.log_tail or "")
            out.append({"index": r.index, "job_id": r.job_id, "lines": text.splitlines()[-tail:]})
        return out

    def _redact(self, deployment_id: str, text: str) -> str:
        for (owner, _), key in self._keys.items():
            if owner == deployment_id:
                text = text.replace(key, "***")
        return text

    # -- intent: launch and stop -------------------------------------------------------------

    async def launch(self, model: Any, replicas: Any = 1, resources: Any = None,
                     **policy: Any) -> Deployment:
        """Validate everything, persist, then submit; a rejected launch submits nothing.
        ``policy``: ``idle_timeout`` and ``pinned``, already checked (policies.launch_options)."""
        if not isinstance(model, str) or not model:
            raise RequestError("'model' is required and must be a string", field="model")
        if isinstance(replicas, bool) or not isinstance(replicas, int):
            raise RequestError(f"'replicas' must be an integer, got {replicas!r}",
                               field="replicas")
        entry = self.catalog.get(model)
        wanted = self.limits.apply(parse_resources(resources, base=entry.resources), replicas)
        deployment_id = secrets.token_hex(4)
        scripts = []
        for index in range(replicas):
            job_dir = self.job_root / deployment_id / f"r{index}"
            ctx = ScriptContext(deployment_id, index, job_dir, self.advertise_host,
                                self.bind_host)
            scripts.append((job_dir, self.renderer.render(entry, wanted, ctx)))
        deployment = Deployment(
            id=deployment_id, model=model, created=self.clock(), updated=self.clock(),
            resources={k: v for k, v in vars(wanted).items() if v is not None},
            replicas=tuple(Replica(index=i, folder=str(d), owner=self.owner.key)
                           for i, (d, _) in enumerate(scripts)),
            launched_by=self.server_id, **policy)
        await self._insert(deployment, job_gpus(wanted) * replicas)
        self._launching.add(deployment_id)
        try:
            for index, (job_dir, script) in enumerate(scripts):
                if not await self._submit(deployment_id, index, script, wanted):
                    break
        except (SchedulerError, StoreError, ConfigError) as exc:
            await self._abort_launch(deployment_id, exc)
            raise
        except OSError as exc:
            await self._abort_launch(deployment_id, exc)
            raise ConfigError(f"cannot prepare the job folder under {self.job_root}: "
                              f"{exc.strerror or exc} (check c.OsireLLM.job_root)") from exc
        finally:
            self._launching.discard(deployment_id)
        self.changed.set()
        return self.get(deployment_id)

    async def _submit(self, deployment_id: str, index: int, script: str,
                      wanted: Resources) -> bool:
        """Submit one replica's job with a new key; False when the deployment was stopped (or
        the replica retired) meanwhile: the job is cancelled again."""
        job_dir = Path(self.get(deployment_id).replicas[index].folder)
        key = self._keys[(deployment_id, index)] = secrets.token_urlsafe(32)
        await asyncio.to_thread(_prepare_job_dir, self.job_root, job_dir, key)
        request = JobRequest(name=_job_name(deployment_id, index), script=script,
                             folder=job_dir, resources=wanted)
        job = await asyncio.to_thread(self.scheduler.submit, request)
        self._key_jobs[(deployment_id, index)] = job.id
        token = FENCE.set(None)   # a job we submitted is recorded, even if the lease ran out
        try:
            return await self._after_submit(deployment_id, index,
                                            Replica(index, str(job_dir), job_id=job.id))
        finally:
            FENCE.reset(token)

    async def _after_submit(self, deployment_id: str, index: int, ours: Replica) -> bool:
        """Record a job just submitted; cancel it when it cannot be kept (see ``_submit``)."""
        try:
            recorded = await self._record_job(deployment_id, index, str(ours.job_id))
        except OsireError:   # the state file failed us (a full disk): no untracked job
            await self._cancel_quietly(deployment_id, ours)
            raise
        current = self.get(deployment_id)
        if not recorded:   # the replica got another job meanwhile, or ended: never two jobs
            await self._cancel_quietly(deployment_id, ours)
        elif current.stop_requested or current.replicas[index].retire:   # stopped meanwhile
            await self._cancel_quietly(deployment_id, current.replicas[index])
        else:
            return True
        if current.stop_requested or recorded:
            await self._end_unsubmitted(deployment_id, current.stop_reason or "stopped by user")
        return False

    async def _record_job(self, deployment_id: str, index: int, job_id: str) -> bool:
        """Write the replica's new job id, in a compare-and-swap that re-checks that it still
        has no job and is live; False when it has one (another server submitted) or ended."""
        recorded: list[bool] = []

        def change(d: Deployment) -> Deployment:
            r = d.replicas[index]
            recorded[:] = [r.live and r.job_id in (None, job_id)]
            if not recorded[0]:
                return d
            return _with_replica(d, replace(r, job_id=job_id, restart_at=None,
                                            owner=self.owner.key))
        await self._mutate(deployment_id, change)
        return bool(recorded and recorded[0])

    def _script(self, deployment: Deployment, index: int) -> tuple[str, Resources]:
        entry = self.catalog.get(deployment.model)
        wanted = Resources(**deployment.resources)
        ctx = ScriptContext(deployment.id, index, Path(deployment.replicas[index].folder),
                            self.advertise_host, self.bind_host)
        return self.renderer.render(entry, wanted, ctx), wanted

    # -- small steps for the lifecycle policies (policies.py decides when) -----------------------

    async def add_replicas(self, deployment_id: str, count: int, *,
                           replaces: Optional[int] = None) -> list[int]:
        """Add ``count`` replicas (next indexes, folders r<k>) and submit them, within the site's
        GPU limit counted over every server's deployments; their indexes."""
        added: list[int] = []

        def change(d: Deployment) -> Deployment:
            if not d.live or d.stop_requested:
                raise Conflict(f"deployment {deployment_id} is {d.state}: no replica can be "
                               "added", field="id")
            added[:] = range(len(d.replicas), len(d.replicas) + count)
            new = tuple(Replica(index=i, folder=str(self.job_root / d.id / f"r{i}"),
                                replaces=replaces, owner=self.owner.key) for i in added)
            return replace(d, replicas=d.replicas + new, launched_by=self.server_id, note=None)

        def check(others: Holdings) -> None:
            current = self.get(deployment_id)
            self.limits.check_total_gpus(gpus_in_use(others) + deployment_gpus(current),
                                         resources_gpus(current.resources) * count)

        self._launching.add(deployment_id)
        try:
            await self._mutate(deployment_id, change, check=check)
            for index in added:
                script, wanted = self._script(self.get(deployment_id), index)
                if not await self._submit(deployment_id, index, script, wanted):
                    break
        except (SchedulerError, StoreError, OSError) as exc:
            message = exc.message if isinstance(exc, OsireError) else str(exc)
            await self._mutate(deployment_id, lambda d: replace(d, replicas=tuple(
                replace(r, state=FAILED, reason=f"not submitted: {message}")
                if r.index in added and not r.job_id and r.live else r for r in d.replicas)))
            raise
        finally:
            self._launching.discard(deployment_id)
        self.changed.set()
        return added

    async def resubmit(self, deployment_id: str, index: int) -> None:
        """Submit again a replica waiting for its restart (its folder, a new key and run).

        The replica is claimed first, in a compare-and-swap that finds it still waiting (no job,
        not stopped): of two servers resubmitting it at once, one submits, the other does
        nothing. A submission that fails puts it back to wait."""
        self._launching.add(deployment_id)
        try:
            if not await self._claim_restart(deployment_id, index):
                return
            script, wanted = self._script(self.get(deployment_id), index)
            try:
                await self._submit(deployment_id, index, script, wanted)
            except (SchedulerError, OSError) as exc:
                await self._unclaim_restart(deployment_id, index, exc)
                raise
        finally:
            self._launching.discard(deployment_id)
        self.changed.set()

    async def _claim_restart(self, deployment_id: str, index: int) -> bool:
        claimed: list[bool] = []

        def change(d: Deployment) -> Deployment:
            r = d.replicas[index]
            claimed[:] = [not d.stop_requested and r.waiting_restart]
            if not claimed[0]:
                return d
            return _with_replica(replace(d, launched_by=self.server_id),
                                 replace(r, restart_at=None, owner=self.owner.key))
        await self._mutate(deployment_id, change)
        return bool(claimed and claimed[0])

    async def _unclaim_restart(self, deployment_id: str, index: int, exc: Exception) -> None:
        """A resubmission that failed: the replica waits again (the policies retry it)."""
        if isinstance(exc, SchedulerTimeout):   # the job may exist although sbatch never answered
            await self._cancel_named_quietly(_job_name(deployment_id, index))
        token = FENCE.set(None)
        try:
            await self._mutate(deployment_id, lambda d: _with_replica(d, replace(
                d.replicas[index], restart_at=self.clock())) if d.replicas[index].live and
                not d.replicas[index].job_id else d)
        finally:
            FENCE.reset(token)

    async def retire(self, deployment_id: str, indexes: list[int], reason: str) -> None:
        """Take replicas out of rotation for good (renewed, scaled down): no new request goes to
        them; one that has no job (waiting for a restart) ends at once. The policies cancel the
        others once drained (``cancel_replica``)."""
        now = self.clock()

        def change(d: Deployment) -> Deployment:
            return replace(d, replicas=tuple(
                (replace(r, state=STOPPED, reason=reason, retire=reason, restart_at=None)
                 if r.waiting_restart else replace(r, retire=reason, retire_at=now))
                if r.index in indexes and r.active else r for r in d.replicas))
        await self._mutate(deployment_id, change)
        self.changed.set()

    async def cancel_replica(self, deployment_id: str, index: int) -> None:
        """Cancel a retired replica's job (again every ``cancel_retry`` s until it ends)."""
        r = self.get(deployment_id).replicas[index]
        last = self._cancelled_at.get((deployment_id, index), 0.0)
        if r.job_id and r.live and r.retire and self.clock() - last >= self.cancel_retry:
            await self._cancel_quietly(deployment_id, r)
            self.changed.set()

    async def end_waiting(self, deployment_id: str, reason: str) -> None:
        """Replicas waiting for a restart of a deployment that was stopped: nothing to cancel."""
        await self._mutate(deployment_id, lambda d: replace(d, replicas=tuple(
            replace(r, state=STOPPED, reason=reason, restart_at=None) if r.waiting_restart
            else r for r in d.replicas)))

    async def touch(self, deployment_id: str, when: float) -> None:
        """Record the end of an inference request (for idle shutdown, seen by every server)."""
        await self._mutate(deployment_id, lambda d: d if (d.last_used or 0) >= when
                           else replace(d, last_used=when))

    async def set_note(self, deployment_id: str, note: Optional[str]) -> None:
        await self._mutate(deployment_id, lambda d: replace(d, note=note))

    def submitting(self, deployment_id: str) -> bool:
        """Whether this server is submitting jobs of the deployment right now."""
        return deployment_id in self._launching

    def replica_key(self, deployment_id: str, index: int) -> Optional[str]:
        return self._keys.get((deployment_id, index))

    async def _insert(self, deployment: Deployment, gpus: int) -> None:
        """Persist a new deployment, counting the limits over every server's deployments."""
        def check(holdings: Holdings) -> None:
            self.limits.check_count(len(holdings.deployments))
            self.limits.check_total_gpus(gpus_in_use(holdings), gpus)

        deployment = self._derive(deployment)
        await asyncio.to_thread(self.store.insert_within, deployment, check)
        self._deployments[deployment.id] = deployment

    async def _abort_launch(self, deployment_id: str, exc: Exception) -> None:
        """Undo a launch that failed part-way. Submitted jobs are cancelled and stay ``stopping``
        until the scheduler confirms they ended (the monitor retries a cancel that failed)."""
        deployment = self.get(deployment_id)
        submitted = [r for r in deployment.replicas if r.job_id]
        try:
            await self._undo_launch(deployment_id, submitted, exc)
        except StoreError as again:   # still failing: nothing more can be recorded now
            log.error("launch of %s could not be undone in the state file: %s", deployment_id,
                      again.message)
            self._drop(deployment_id)

    async def _undo_launch(self, deployment_id: str, submitted: list[Replica],
                           exc: Exception) -> None:
        if isinstance(exc, SchedulerTimeout):  # the job may exist although sbatch never answered
            await self._cancel_named_quietly(_job_name(deployment_id, len(submitted)))
        if not submitted:
            await self._forget(deployment_id)
            return
        message = exc.message if isinstance(exc, OsireError) else str(exc)
        await self._mutate(deployment_id, lambda d: replace(
            d, stop_requested=True, abort_reason=f"submission failed: {message}"))
        await self._end_unsubmitted(deployment_id, f"not submitted: {message}")
        for r in submitted:
            await self._cancel_quietly(deployment_id, r)

    async def _end_unsubmitted(self, deployment_id: str, reason: str) -> None:
        """Replicas that never reached the scheduler have no job that could still run."""
        await self._mutate(deployment_id, lambda d: replace(d, replicas=tuple(
            replace(r, state=STOPPED, reason=reason) if not r.job_id and r.live else r
            for r in d.replicas)))

    async def stop(self, deployment_id: str, reason: Optional[str] = None) -> Deployment:
        """Cancel every job of the deployment; stopping twice is harmless.

        The deployment is ``stopping`` until the scheduler confirms each job ended; a cancel that
        fails now is retried by the monitor (``retry_cancels``), and the error is raised.
        """
        deployment = self.get(deployment_id)
        if not deployment.live:
            return deployment
        elsewhere = self.elsewhere(deployment)
        if elsewhere:
            raise Conflict(f"deployment {deployment_id} {elsewhere}: it cannot be stopped from "
                           "here; stop it from a Jupyter server there", field="id")
        reason = reason or "stopped by user"
        deployment = await self._mutate(deployment_id, lambda d: replace(
            d, stop_requested=True, stop_reason=d.stop_reason or reason)) or deployment
        if deployment_id not in self._launching and \
                deployment.launched_by in (None, self.server_id):
            await self._end_unsubmitted(deployment_id, deployment.stop_reason or reason)
        errors = []
        for r in deployment.replicas:
            if r.job_id and r.live:
                try:
                    await self._cancel(deployment_id, r)
                except SchedulerError as exc:
                    errors.append(exc)
        self.changed.set()
        if errors:
            raise errors[0]
        return self.get(deployment_id)

    async def retry_cancels(self) -> None:
        """Cancel again, every ``cancel_retry`` seconds, each job of a stopped deployment that
        the scheduler has not yet ended (a cancel may have failed: controller down, a timeout;
        or another server's stop). Called by the monitor after a query that succeeded."""
        now = self.clock()
        for d in self.all():
            if not (d.stop_requested and d.live) or d.id in self._launching:
                continue
            for r in d.replicas:
                last = self._cancelled_at.get((d.id, r.index), 0.0)
                if r.job_id and r.live and self.ours(r) and now - last >= self.cancel_retry:
                    await self._cancel_quietly(d.id, r)
        await self.cancel_interrupted()

    async def _cancel(self, deployment_id: str, replica: Replica) -> None:
        await self._check_fence()
        self._cancelled_at[(deployment_id, replica.index)] = self.clock()
        await asyncio.to_thread(self.scheduler.cancel, self._job(replica))

    async def _cancel_quietly(self, deployment_id: str, replica: Replica) -> bool:
        try:
            await self._cancel(deployment_id, replica)
            return True
        except SchedulerError as exc:
            self._cancelled_at[(deployment_id, replica.index)] = 0.0   # retry at once
            log.warning("could not cancel job %s (will retry): %s", replica.job_id, exc.message)
            return False

    async def _cancel_named_quietly(self, name: str) -> None:
        try:
            await asyncio.to_thread(self.scheduler.cancel_named, name)
        except SchedulerError as exc:
            log.error("could not cancel jobs named %s after a timed-out submission (will "
                      "retry): %s", name, exc.message)
            self._interrupted.append(name)

    async def cancel_interrupted(self) -> None:
        """Jobs whose submission was cut off (a server that died, a timeout) may exist without
        us knowing their id: cancel them by name; a failed cancel is kept for the next try."""
        if self._interrupted:
            await self._check_fence()
        names, self._interrupted = self._interrupted, []
        for name in names:
            await self._cancel_named_quietly(name)

    async def reap_interrupted(self, alive: Callable[[str], bool]) -> None:
        """Replicas left without a job id by a server that is gone (``alive`` says whether a
        server id still holds its heartbeat): their submission was cut off. Called by the
        monitor that owns the scheduler; a server that is still submitting is left alone."""
        for d in self.all():
            lost = [r for r in d.replicas
                    if r.live and not r.job_id and not r.waiting_restart and self.ours(r)]
            if not lost or d.id in self._launching or (d.launched_by and alive(d.launched_by)):
                continue
            self._interrupted += [_job_name(d.id, r.index) for r in lost]
            await self._mutate(d.id, lambda dep: replace(dep, replicas=tuple(
                replace(r, state=FAILED, reason="submission interrupted by a server restart")
                if r.live and not r.job_id and not r.waiting_restart and self.ours(r) else r
                for r in dep.replicas)))

    # -- observations, fed by the monitor -----------------------------------------------------

    def live_jobs(self) -> list[tuple[str, Replica, Job]]:
        """The live jobs this server's scheduler runs (not those of another backend or
        cluster sharing the state file)."""
        return [(d.id, r, self._job(r)) for d in self._deployments.values()
                for r in d.replicas if r.live and r.job_id and self.ours(r)]

    def ours(self, replica: Replica) -> bool:
        """Whether the replica's job runs on this server's scheduler and cluster."""
        return self.owner.owns(replica.owner)

    def elsewhere(self, deployment: Deployment) -> Optional[str]:
        """Where the deployment's live jobs run, when that is not on this server's scheduler
        ("runs on cluster x (slurm); this server uses host y (local)"), else None."""
        theirs = next((r.owner for r in deployment.replicas if r.live and not self.ours(r)),
                      None)
        if theirs is None:
            return None
        return f"runs on {JobOwner.parse(theirs).where}; this server uses {self.owner.where}"

    async def _check_fence(self) -> None:
        """Before a scheduler action of the watcher's cycle: its lease still holds."""
        fence = FENCE.get()
        if fence is not None:
            await asyncio.to_thread(self.store.check_fence, fence)

    async def observe_job(self, deployment_id: str, index: int, info: JobInfo) -> None:
        deployment = self._deployments.get(deployment_id)
        if deployment is None:
            return
        replica = deployment.replicas[index]
        if info.job_id != replica.job_id:   # about a job the replica no longer has
            return
        if info.state is JobState.LOST and not self._lost_confirmed(replica):
            if replica.lost_since is None:
                await self._update_replica(deployment_id, index, lost_since=self.clock())
            return
        tail = ""
        if info.state.terminal and not deployment.stop_requested:
            path = self.scheduler.output_path(self._job(replica))
            tail = self._redact(deployment_id, await asyncio.to_thread(read_tail, path, 30))

        def change(d: Deployment) -> Deployment:
            old = d.replicas[index]
            if old.job_id != info.job_id:   # resubmitted meanwhile (by another server)
                return d
            new = apply_job_info(old, info, stop_requested=d.stop_requested, log_tail=tail,
                                 stop_reason=d.stop_reason)
            if new.state == FAILED and old.state != FAILED and self.on_failure is not None:
                new = self.on_failure(d, old, new)
            return _with_replica(d, new)
        await self._mutate(deployment_id, change)

    def _lost_confirmed(self, replica: Replica) -> bool:
        """"Vanished" is a verdict from missing evidence: believed only once it has held for
        ``lost_grace`` seconds, since a terminal replica is never asked about again."""
        return replica.lost_since is not None and \
            self.clock() - replica.lost_since >= self.lost_grace

    async def observe_endpoint(self, deployment_id: str, index: int,
                               endpoint: EngineEndpoint) -> None:
        """The engine's own endpoint file: believed only for this replica's job and a run that
        has not ended; it makes a queued replica starting (the engine runs, whatever the
        scheduler last said)."""
        def change(d: Deployment) -> Deployment:
            r = d.replicas[index]
            if not r.live or endpoint.job_id != r.job_id or endpoint.run == r.stale_run or \
                    (r.host, r.port, r.fingerprint, r.run) == \
                    (endpoint.host, endpoint.port, endpoint.fingerprint, endpoint.run):
                return d
            # A new run needs its own health check before it is ready again.
            state = r.state if r.state == STOPPING else STARTING
            return _with_replica(d, replace(
                r, host=endpoint.host, port=endpoint.port, fingerprint=endpoint.fingerprint,
                run=endpoint.run, healthy=False, state=state,
                reason=r.reason if state == STOPPING else None,
                started_at=r.started_at or self.clock(), estimated_start=None))
        if deployment_id in self._deployments:
            await self._mutate(deployment_id, change)

    async def observe_health(self, deployment_id: str, index: int, healthy: bool) -> None:
        def change(d: Deployment) -> Deployment:
            r = d.replicas[index]
            if r.state == STARTING and healthy:
                return _with_replica(d, replace(r, state=READY, healthy=True,
                                                ready_at=self.clock()))
            if r.state == READY and r.healthy != healthy:
                return _with_replica(d, replace(r, healthy=healthy))
            return d
        if deployment_id in self._deployments:
            await self._mutate(deployment_id, change)

    # -- EndpointSource, for the router --------------------------------------------------------

    def ready_endpoints(self, model: str) -> list[Endpoint]:
        return [e for d in self._deployments.values() if d.model == model
                for e in self._endpoints(d)]

    def endpoint_for_deployment(self, deployment_id: str) -> list[Endpoint]:
        deployment = self._deployments.get(deployment_id)
        return self._endpoints(deployment) if deployment else []

    def model_status(self, model: str) -> Optional[ModelStatus]:
        candidates = [d for d in self._deployments.values()
                      if d.model == model and d.state in _STATE_RANK]
        if not candidates:
            return None
        best = min(candidates, key=lambda d: _STATE_RANK[d.state])
        return ModelStatus(model=model, state=best.state, deployment_id=best.id,
                           reason=best.reason)

    def callable_models(self) -> list[str]:
        return sorted({d.model for d in self._deployments.values() if self._endpoints(d)})

    def _endpoints(self, d: Deployment) -> list[Endpoint]:
        return [Endpoint(model=d.model, url=r.url, key=self._keys.get((d.id, r.index)),
                         deployment_id=d.id, replica=r.job_id or str(r.index),
                         fingerprint=r.fingerprint)
                for r in d.replicas if r.state == READY and r.healthy and r.url and
                r.retire is None and self.ours(r)]

    # -- shared state ----------------------------------------------------------------------------

    async def refresh(self) -> None:
        """Bring in what other servers of this user wrote (launches, stops, observations) and
        drop what they removed; one cheap query when nothing changed."""
        versions = await asyncio.to_thread(self.store.versions)
        for gone in set(self._deployments) - set(versions):
            if gone not in self._launching:
                self._drop(gone)
        changed = [i for i, v in versions.items()
                   if i not in self._deployments or self._deployments[i].version != v]
        if changed:
            fresh = await asyncio.to_thread(
                lambda: [d for d in map(self.store.load, changed) if d is not None])
            await asyncio.to_thread(self._adopt_all, fresh)

    def _with_owner(self, deployment: Deployment) -> Deployment:
        """A record from before owners were kept: its live replicas are taken as this server's
        scheduler's (written back, so that a server on another backend sees whose they are)."""
        if not any(r.live and r.owner is None for r in deployment.replicas):
            return deployment
        owned = replace(deployment, replicas=tuple(
            replace(r, owner=self.owner.key) if r.live and r.owner is None else r
            for r in deployment.replicas), version=deployment.version + 1)
        if self.store.save(owned, deployment.version):
            return owned
        return self.store.load(deployment.id) or deployment

    def _adopt_all(self, deployments: list[Deployment]) -> None:
        for deployment in deployments:
            self._adopt(deployment)

    def _adopt(self, deployment: Deployment) -> None:
        """Take a record from the store into memory, with its replicas' keys (read from their
        0600 files in the job folder)."""
        self._deployments[deployment.id] = deployment
        for r in deployment.replicas:
            slot = (deployment.id, r.index)
            # read again when the replica was submitted anew (a restart writes a new key)
            if slot not in self._keys or (r.job_id and self._key_jobs.get(slot) != r.job_id):
                try:
                    self._keys[slot] = (Path(r.folder) / KEY_FILE).read_text().strip()
                    self._key_jobs[slot] = r.job_id
                except OSError:
                    pass

    async def _mutate(self, deployment_id: str, change: Change,
                      check: Optional[Check] = None) -> Optional[Deployment]:
        """Apply ``change`` to the freshest record and write it; on a conflict (another server
        wrote first) re-read and apply again. None when the deployment is gone. ``check`` sees
        what else the user holds in the write transaction (and raises to refuse)."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            for _ in range(20):
                current = self._deployments.get(deployment_id)
                if current is None:
                    return None
                proposed = change(current)
                if proposed == current:
                    return current
                new = self._derive(proposed)
                saved = await asyncio.to_thread(self.store.save, new, current.version) \
                    if check is None else \
                    await asyncio.to_thread(self.store.save_within, new, current.version, check)
                if saved:
                    self._deployments[deployment_id] = new
                    if current.live and not new.live:
                        await asyncio.to_thread(self._prune_finished_now)
                    return new
                fresh = await asyncio.to_thread(self.store.load, deployment_id)
                if fresh is None:
                    self._drop(deployment_id)
                    return None
                self._deployments[deployment_id] = fresh
        raise Conflict(f"deployment {deployment_id} is being changed by another server; "
                       "try again")

    def _derive(self, deployment: Deployment) -> Deployment:
        """The deployment's own state from its replicas, a new version, the time of change."""
        state, reason = deployment_state(deployment.replicas, deployment.stop_requested,
                                         deployment.abort_reason, deployment.stop_reason)
        return replace(deployment, state=state, reason=reason, updated=self.clock(),
                       version=deployment.version + 1)

    async def _update_replica(self, deployment_id: str, index: int, **changes: Any) -> None:
        await self._mutate(deployment_id, lambda d: _with_replica(
            d, replace(d.replicas[index], **changes)))

    def _prune_finished_now(self) -> None:
        """Keep the newest ``keep_finished`` ended deployments; forget older ones and their
        job folders (logs, dead keys), so the list and the disk do not grow forever."""
        finished = sorted((d for d in self._deployments.values() if not d.live),
                          key=lambda d: d.updated, reverse=True)
        for old in finished[self.keep_finished:]:
            self._forget_now(old.id)

    async def _forget(self, deployment_id: str) -> None:
        await asyncio.to_thread(self._forget_now, deployment_id)

    def _forget_now(self, deployment_id: str) -> None:
        self._drop(deployment_id)
        self.store.delete(deployment_id)
        shutil.rmtree(self.job_root / deployment_id, ignore_errors=True)

    def _drop(self, deployment_id: str) -> None:
        self._deployments.pop(deployment_id, None)
        for key in [k for k in self._keys if k[0] == deployment_id]:
            del self._keys[key]
            self._key_jobs.pop(key, None)

    def _job(self, replica: Replica) -> Job:
        return Job(id=str(replica.job_id), folder=Path(replica.folder))


def _with_replica(deployment: Deployment, replica: Replica) -> Deployment:
    if deployment.replicas[replica.index] == replica:
        return deployment
    return replace(deployment, replicas=tuple(replica if r.index == replica.index else r
                                              for r in deployment.replicas))


def _job_name(deployment_id: str, index: int) -> str:
    return f"osire-{deployment_id}-r{index}"


def write_key(path: Path, key: str) -> None:
    """An engine's key, readable by the user alone (created 0600 before anything is written)."""
    path.touch(mode=0o600)
    path.write_text(key)


def _prepare_job_dir(job_root: Path, job_dir: Path, key: str) -> None:
    """A restart reuses its folder; one made under another server's root is checked there."""
    if job_dir.is_relative_to(job_root):
        private_folder(job_root, job_dir.relative_to(job_root))
    else:
        private_folder(job_dir.parent, job_dir.name)
    write_key(job_dir / KEY_FILE, key)
    if GUARD_SOURCE.exists():
        shutil.copyfile(GUARD_SOURCE, job_dir / GUARD_SOURCE.name)


