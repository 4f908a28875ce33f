"""Launching: a deployment's validation, record and jobs, replicas added and resubmitted.

A launch is validated whole and persisted before anything is submitted, so a rejected launch
submits nothing; each replica's job gets a new key in its private folder (``core/jobfiles.py``).
A job that cannot be recorded, or whose deployment was stopped meanwhile, is cancelled again:
no job runs untracked, and no replica gets two jobs.
"""
from __future__ import annotations

import asyncio
import logging
import secrets
from dataclasses import replace
from pathlib import Path
from typing import Any, Optional

from ..core.catalog import ModelEntry
from ..core.jobfiles import prepare_engine_folder
from ..core.limits import job_gpus, parse_resources
from ..core.render import ScriptContext
from ..core.store import FENCE
from ..core.usage import Holdings, deployment_gpus, gpus_in_use, resources_gpus, within
from ..errors import (
    ConfigError,
    Conflict,
    OsireError,
    RequestError,
    SchedulerError,
    SchedulerTimeout,
    StoreError,
)
from ..schedulers.base import JobRequest, Resources
from .record_keeping import DeploymentRecords, _job_name, _with_replica
from .states import FAILED, Deployment, Replica

log = logging.getLogger(__name__)


class Launching(DeploymentRecords):
    async def launch(self, model: Any, replicas: Any = 1, resources: Any = None,
                     force: Any = False, model_path: Any = None, name: Any = None,
                     **policy: Any) -> Deployment:
        """Validate everything, persist, then submit; a rejected launch submits nothing.
        ``force``: launch even where the model's size says its GPUs cannot hold it.
        ``model_path`` (and ``name``): the user's own model folder, run by ``model``'s engine.
        ``policy``: ``idle_timeout`` and ``pinned``, already checked (policies.launch_options)."""
        entry, source = await asyncio.to_thread(self.launch_entry, model, model_path, name)
        if isinstance(replicas, bool) or not isinstance(replicas, int):
            raise RequestError(f"'replicas' must be an integer, got {replicas!r}",
                               field="replicas")
        if not isinstance(force, bool):
            raise RequestError(f"'force' must be true or false, got {force!r}", field="force")
        wanted = self.limits.apply(parse_resources(resources, base=entry.resources), replicas)
        if not force:
            await asyncio.to_thread(self.sizes.check, entry, wanted)
        if wanted.nodes > 1:
            await asyncio.to_thread(self._check_nodes, entry, wanted)
        deployment_id = secrets.token_hex(4)
        scripts = []
        for index in range(replicas):
            job_dir = self.job_root / deployment_id / f"r{index}"
            ctx = ScriptContext(deployment_id, index, job_dir, self.advertise_host,
                                self.bind_host)
            scripts.append((job_dir, self.renderer.render(entry, wanted, ctx)))
        deployment = Deployment(
            id=deployment_id, model=entry.name, created=self.clock(), updated=self.clock(),
            base_model=model if source else None, source=source,
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

    def _check_nodes(self, entry: ModelEntry, wanted: Resources) -> None:
        """A replica across nodes: an engine that can, on a partition that has that many (Slurm
        would otherwise keep the job pending forever, reason PartitionNodeLimit)."""
        if not entry.engine.multi_node:
            raise RequestError(f"engine {entry.engine.name!r} runs on one node; set "
                               "resources.nodes to 1", field="resources.nodes")
        total = self.scheduler.partition_nodes(wanted.partition)
        if total is not None and wanted.nodes > total:
            where = f"partition {wanted.partition!r}" if wanted.partition else \
                "the default partition"
            raise RequestError(f"{where} has {total} node(s), resources.nodes asks for "
                               f"{wanted.nodes}: the job could never start",
                               field="resources.nodes")

    async def _submit(self, deployment_id: str, index: int, script: str,
                      wanted: Resources) -> bool:
        """Submit one replica's job with a new key; False when the deployment was stopped (or
        the replica retired) meanwhile: the job is cancelled again."""
        job_dir = Path(self.get(deployment_id).replicas[index].folder)
        key = self._keys[(deployment_id, index)] = secrets.token_urlsafe(32)
        await asyncio.to_thread(prepare_engine_folder, self.job_root, job_dir, key)
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
        entry = self.entry_of(deployment)
        if entry is None:
            raise ConfigError(f"model {deployment.base_model or deployment.model!r} is no longer "
                              "in the catalog: its replica cannot be submitted again")
        wanted = Resources(**deployment.resources)
        ctx = ScriptContext(deployment.id, index, Path(deployment.replicas[index].folder),
                            self.advertise_host, self.bind_host)
        return self.renderer.render(entry, wanted, ctx), wanted

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
            await self._mutate(deployment_id, change, check=within(check))
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

    async def _insert(self, deployment: Deployment, gpus: int) -> None:
        """Persist a new deployment, counting the limits over every server's deployments."""
        def check(holdings: Holdings) -> None:
            self.limits.check_count(len(holdings.deployments))
            self.limits.check_total_gpus(gpus_in_use(holdings), gpus)

        await self.records.insert(deployment, within(check))

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
