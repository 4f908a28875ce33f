"""What the deployment service holds: its records (mirrored from the store), the replicas' keys,
and the small steps every part of it uses (a write, a cancel, the fence before a scheduler
action). ``DeploymentService`` (service.py) is this plus launching, stopping and observing."""
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

from ..core.catalog import Catalog, ModelEntry
from ..core.jobfiles import read_key
from ..core.limits import SiteLimits
from ..core.model_sizes import ModelSizes
from ..core.records import CancelRetry, KeepsRecords, RecordMirror
from ..core.render import ScriptRenderer
from ..core.store import FENCE, Check, Store
from ..errors import NotFound, RequestError, SchedulerError
from ..schedulers.base import Job, JobOwner, Scheduler
from .states import STOPPED, Deployment, Replica, deployment_state
from .user_models import UserModels, entry_of

log = logging.getLogger(__name__)
Change = Callable[[Deployment], Deployment]
#: The restart policy's say on a replica that just failed: (deployment, replica before, replica
#: failed) -> the replica to record (the failed one, or one waiting to be submitted again).
FailureHook = Callable[[Deployment, Replica, Replica], Replica]


class DeploymentRecords(KeepsRecords[Deployment]):
    def __init__(self, *, catalog: Catalog, limits: SiteLimits, scheduler: Scheduler,
                 store: Store, renderer: ScriptRenderer, job_root: Path,
                 advertise_host: str = "", bind_host: str = "0.0.0.0", keep_finished: int = 50,
                 lost_grace: float = 60.0, cancel_retry: float = 5.0,
                 server_id: Optional[str] = None, on_failure: Optional[FailureHook] = None,
                 sizes: Optional[ModelSizes] = None, user_models: Optional[UserModels] = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.catalog, self.limits, self.scheduler = catalog, limits, scheduler
        self.sizes = sizes or ModelSizes()
        self.user_models = user_models or UserModels()
        self.renderer, self.job_root = renderer, job_root
        self.advertise_host, self.bind_host, self.clock = advertise_host, bind_host, clock
        self.keep_finished, self.lost_grace, self.cancel_retry = \
            keep_finished, lost_grace, cancel_retry
        self.server_id = server_id or f"{socket.gethostname()}:{os.getpid()}:" \
                                      f"{secrets.token_hex(3)}"
        self.changed = asyncio.Event()            # wakes the monitor early
        self._keys: dict[tuple[str, int], str] = {}   # one key per replica
        self._key_jobs: dict[tuple[str, int], Optional[str]] = {}   # the job each key was read for
        self.on_failure = on_failure   # the restart rule (restarts.py)
        self._interrupted: list[str] = []        # job names whose submission may have a job
        self._cancels = CancelRetry(cancel_retry, clock)   # per (deployment, replica index)
        self.owner: JobOwner = scheduler.owner()   # the backend and cluster our jobs run on
        self.records: RecordMirror[Deployment] = RecordMirror(
            store, "deployments", encode=Deployment.to_doc, decode=Deployment.from_doc,
            created=lambda d: d.created, prepare=self._derive, on_write=self._after_write,
            on_adopt=self._read_keys, on_drop=self._drop_keys)
        for deployment in self.records.load_now():
            self.records.adopt(self._with_owner(deployment))
        self._prune_finished_now()

    @property
    def _deployments(self) -> dict[str, Deployment]:
        return self.records.items

    @property
    def _launching(self) -> set[str]:
        """Deployments this server is submitting jobs for right now."""
        return self.records.submitting

    def entry_of(self, deployment: Deployment) -> Optional[ModelEntry]:
        """The catalog entry the deployment runs (a user's folder: its base serving it)."""
        return entry_of(self.catalog, deployment.model, deployment.base_model, deployment.source)

    def launch_entry(self, model: Any, model_path: Any = None,
                     name: Any = None) -> tuple[ModelEntry, Optional[dict[str, Any]]]:
        """What a launch runs: the catalog's ``model``, or its engine on the user's folder
        (checked) with the folder's provenance."""
        if not isinstance(model, str) or not model:
            raise RequestError("'model' is required and must be a string", field="model")
        base = self.catalog.get(model)
        if model_path is None:
            if name is not None:
                raise RequestError("'name' goes with 'model_path' (your own model folder)",
                                   field="name")
            return base, None
        entry, user = self.user_models.entry(base, model_path, name, self.catalog)
        return entry, user.source()

    def all(self) -> list[Deployment]:
        return list(self.records.items.values())

    def get(self, deployment_id: str) -> Deployment:
        try:
            return self.records.items[deployment_id]
        except KeyError:
            raise NotFound(f"no deployment {deployment_id!r}", field="id") from None

    async def refresh(self) -> None:
        """Bring in what other servers of this user wrote (launches, stops, observations) and
        drop what they removed; one cheap query when nothing changed."""
        await self.records.refresh()

    async def _mutate(self, deployment_id: str, change: Change,
                      check: Optional[Check] = None) -> Optional[Deployment]:
        """``RecordMirror.mutate``: None when the deployment is gone."""
        return await self.records.mutate(deployment_id, change, check)

    async def _update_replica(self, deployment_id: str, index: int, **changes: object) -> None:
        await self._mutate(deployment_id, lambda d: _with_replica(
            d, replace(d.replicas[index], **changes)))   # type: ignore[arg-type]

    async def _end_unsubmitted(self, deployment_id: str, reason: str) -> None:
        """Replicas that never reached the scheduler have no job that could still run."""
        await self._mutate(deployment_id, lambda d: replace(d, replicas=tuple(
            replace(r, state=STOPPED, reason=reason) if not r.job_id and r.live else r
            for r in d.replicas)))

    def _derive(self, deployment: Deployment) -> Deployment:
        """The deployment's own state from its replicas, the time of change."""
        state, reason = deployment_state(deployment.replicas, deployment.stop_requested,
                                         deployment.abort_reason, deployment.stop_reason)
        return replace(deployment, state=state, reason=reason, updated=self.clock())

    async def _after_write(self, old: Deployment, new: Deployment) -> None:
        if old.live and not new.live:
            await asyncio.to_thread(self._prune_finished_now)

    def _with_owner(self, deployment: Deployment) -> Deployment:
        """A record from before owners were kept: its live replicas are taken as this server's
        scheduler's (written back, so that a server on another backend sees whose they are)."""
        if not any(r.live and r.owner is None for r in deployment.replicas):
            return deployment
        owned = replace(deployment, replicas=tuple(
            replace(r, owner=self.owner.key) if r.live and r.owner is None else r
            for r in deployment.replicas), version=deployment.version + 1)
        if self.store.save("deployments", owned.id, owned.to_doc(), deployment.version):
            return owned
        found = self.store.load("deployments", [deployment.id])
        return (self.records.read(found[0]) if found else None) or deployment

    # -- keys, read from their 0600 files in the job folder ---------------------------------------

    def _read_keys(self, deployment: Deployment) -> None:
        for r in deployment.replicas:
            slot = (deployment.id, r.index)
            # read again when the replica was submitted anew (a restart writes a new key)
            if slot not in self._keys or (r.job_id and self._key_jobs.get(slot) != r.job_id):
                key = read_key(Path(r.folder))
                if key is not None:
                    self._keys[slot] = key
                    self._key_jobs[slot] = r.job_id

    def _drop_keys(self, deployment_id: str) -> None:
        for key in [k for k in self._keys if k[0] == deployment_id]:
            del self._keys[key]
            self._key_jobs.pop(key, None)

    def _redact(self, deployment_id: str, text: str) -> str:
        for (owner, _), key in self._keys.items():
            if owner == deployment_id:
                text = text.replace(key, "***")
        return text

    # -- ended deployments -----------------------------------------------------------------------

    def _prune_finished_now(self) -> None:
        """Keep the newest ``keep_finished`` ended deployments; forget older ones and their
        job folders (logs, dead keys), so the list and the disk do not grow forever."""
        for old in self.records.oldest_ended(lambda d: d.live, lambda d: d.updated,
                                             self.keep_finished):
            self._forget_now(old)

    async def _forget(self, deployment_id: str) -> None:
        await asyncio.to_thread(self._forget_now, deployment_id)

    def _forget_now(self, deployment_id: str) -> None:
        self.records.forget_now(deployment_id)
        shutil.rmtree(self.job_root / deployment_id, ignore_errors=True)

    def _drop(self, deployment_id: str) -> None:
        self.records.drop(deployment_id)

    # -- the scheduler ---------------------------------------------------------------------------

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

    def _job(self, replica: Replica) -> Job:
        return Job(id=str(replica.job_id), folder=Path(replica.folder))

    async def _check_fence(self) -> None:
        """Before a scheduler action of the watcher's cycle: its lease still holds."""
        fence = FENCE.get()
        if fence is not None:
            await asyncio.to_thread(self.store.check_fence, fence)

    async def _cancel(self, deployment_id: str, replica: Replica) -> None:
        await self._check_fence()
        self._cancels.sent((deployment_id, replica.index))
        await asyncio.to_thread(self.scheduler.cancel, self._job(replica))

    async def _cancel_quietly(self, deployment_id: str, replica: Replica) -> bool:
        try:
            await self._cancel(deployment_id, replica)
            return True
        except SchedulerError as exc:
            self._cancels.failed((deployment_id, replica.index))   # retry at once
            log.warning("could not cancel job %s (will retry): %s", replica.job_id, exc.message)
            return False

    async def _cancel_named_quietly(self, name: str) -> None:
        try:
            await asyncio.to_thread(self.scheduler.cancel_named, name)
        except SchedulerError as exc:
            log.error("could not cancel jobs named %s after a timed-out submission (will "
                      "retry): %s", name, exc.message)
            self._interrupted.append(name)


def _with_replica(deployment: Deployment, replica: Replica) -> Deployment:
    if deployment.replicas[replica.index] == replica:
        return deployment
    return replace(deployment, replicas=tuple(replica if r.index == replica.index else r
                                              for r in deployment.replicas))


def _job_name(deployment_id: str, index: int) -> str:
    return f"osire-{deployment_id}-r{index}"
