"""The deployment service: launch, stop, list and read logs; the single owner of deployment state.

Handlers call it; it calls the catalog, the store and the scheduler. The monitor feeds it what it
observes (``observe_job``, ``observe_endpoint``, ``observe_health``). It also answers the router
(``EndpointSource``) from memory, so the proxy's hot path never touches disk or the scheduler.
"""
from __future__ import annotations

import asyncio
import logging
import secrets
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Optional

from .catalog import Catalog
from .endpoints import Endpoint, ModelStatus
from .errors import ConfigError, NotFound, OsireError, RequestError, SchedulerError, SchedulerTimeout
from .render import ScriptContext, ScriptRenderer
from .schedulers.base import Job, JobInfo, JobRequest, Scheduler
from .spec import SiteLimits, parse_resources
from .states import (FAILED, QUEUED, READY, STARTING, STOPPED, Deployment, Replica, apply_job_info,
                     deployment_state)
from .store import Store

log = logging.getLogger(__name__)
KEY_FILE = "key"
ENDPOINT_FILE = "endpoint.json"
GUARD_SOURCE = Path(__file__).parent / "engine_guard.py"
_STATE_RANK = {READY: 0, STARTING: 1, QUEUED: 2}


class DeploymentService:
    def __init__(self, *, catalog: Catalog, limits: SiteLimits, scheduler: Scheduler,
                 store: Store, renderer: ScriptRenderer, job_root: Path,
                 advertise_host: str = "", bind_host: str = "0.0.0.0", keep_finished: int = 50,
                 clock: Callable[[], float] = time.time) -> None:
        self.catalog, self.limits, self.scheduler = catalog, limits, scheduler
        self.store, self.renderer, self.job_root = store, renderer, job_root
        self.advertise_host, self.bind_host, self.clock = advertise_host, bind_host, clock
        self.keep_finished = keep_finished
        self.changed = asyncio.Event()            # wakes the monitor early
        self._deployments: dict[str, Deployment] = {}
        self._keys: dict[str, str] = {}
        self._interrupted: list[str] = []        # job names whose submission a restart cut off
        self._reload()

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

    def logs(self, deployment_id: str, tail: int = 100) -> list[dict[str, Any]]:
        deployment = self.get(deployment_id)
        key = self._keys.get(deployment_id)
        out = []
        for r in deployment.replicas:
            text = read_tail(self.scheduler.output_path(self._job(r)), tail) or (r.log_tail or "")
            if key:
                text = text.replace(key, "***")
            out.append({"index": r.index, "job_id": r.job_id, "lines": text.splitlines()[-tail:]})
        return out

    # -- intent: launch and stop -------------------------------------------------------------

    async def launch(self, model: Any, replicas: Any = 1, resources: Any = None) -> Deployment:
        """Validate everything, persist, then submit; a rejected launch submits nothing."""
        if not isinstance(model, str) or not model:
            raise RequestError("'model' is required and must be a string", field="model")
        if isinstance(replicas, bool) or not isinstance(replicas, int):
            raise RequestError(f"'replicas' must be an integer, got {replicas!r}",
                               field="replicas")
        entry = self.catalog.get(model)
        wanted = parse_resources(resources, base=entry.resources)
        self.limits.check(wanted, replicas)
        self.limits.check_count(sum(d.live for d in self._deployments.values()))

        deployment_id = secrets.token_hex(4)
        key = secrets.token_urlsafe(32)
        folder = self.job_root / deployment_id
        scripts = []
        for index in range(replicas):
            job_dir = folder / f"r{index}"
            ctx = ScriptContext(deployment_id, index, job_dir, self.advertise_host,
                                self.bind_host)
            scripts.append((job_dir, self.renderer.render(entry, wanted, ctx)))
        deployment = Deployment(
            id=deployment_id, model=model, created=self.clock(), updated=self.clock(),
            resources={k: v for k, v in vars(wanted).items() if v is not None},
            replicas=tuple(Replica(index=i, folder=str(d)) for i, (d, _) in enumerate(scripts)))
        self._keys[deployment_id] = key
        self._put(deployment)
        try:
            for index, (job_dir, script) in enumerate(scripts):
                _prepare_job_dir(job_dir, key)
                request = JobRequest(name=_job_name(deployment_id, index), script=script,
                                     folder=job_dir, resources=wanted)
                job = await asyncio.to_thread(self.scheduler.submit, request)
                self._update_replica(deployment_id, index, job_id=job.id)
                if self.get(deployment_id).stop_requested:  # stopped while we were submitting
                    await self._cancel_quietly(self.get(deployment_id).replicas[index])
                    break
        except SchedulerError as exc:
            await self._abort_launch(deployment_id, exc)
            raise
        except OSError as exc:
            await self._abort_launch(deployment_id, exc)
            raise ConfigError(f"cannot prepare the job folder under {self.job_root}: "
                              f"{exc.strerror or exc} (check c.OsireLLM.job_root)") from exc
        self.changed.set()
        return self.get(deployment_id)

    async def _abort_launch(self, deployment_id: str, exc: Exception) -> None:
        deployment = self.get(deployment_id)
        submitted = [r for r in deployment.replicas if r.job_id]
        for r in submitted:
            await self._cancel_quietly(r)
        if isinstance(exc, SchedulerTimeout):  # the job may exist although sbatch never answered
            await self._cancel_named_quietly(_job_name(deployment_id, len(submitted)))
        if not submitted:
            self._forget(deployment_id)
            shutil.rmtree(self.job_root / deployment_id, ignore_errors=True)
            return
        message = exc.message if isinstance(exc, OsireError) else str(exc)
        failed = tuple(replace(r, state=FAILED, reason=f"submission failed: {message}")
                       for r in deployment.replicas)
        self._put(replace(deployment, replicas=failed, stop_requested=True))

    async def stop(self, deployment_id: str) -> Deployment:
        """Cancel every job of the deployment; stopping twice is harmless."""
        deployment = self.get(deployment_id)
        if not deployment.live:
            return deployment
        self._put(replace(deployment, stop_requested=True))
        errors = []
        for r in deployment.replicas:
            if r.job_id and r.live:
                try:
                    await asyncio.to_thread(self.scheduler.cancel, self._job(r))
                except SchedulerError as exc:
                    errors.append(exc)
            elif not r.job_id:  # not submitted yet: launch() cancels it if it gets submitted
                self._update_replica(deployment_id, r.index, state=STOPPED)
        self.changed.set()
        if errors:
            raise errors[0]
        return self.get(deployment_id)

    async def _cancel_quietly(self, replica: Replica) -> None:
        try:
            await asyncio.to_thread(self.scheduler.cancel, self._job(replica))
        except SchedulerError as exc:
            log.warning("could not cancel job %s: %s", replica.job_id, exc.message)

    async def _cancel_named_quietly(self, name: str) -> None:
        try:
            await asyncio.to_thread(self.scheduler.cancel_named, name)
        except SchedulerError as exc:
            log.error("could not cancel jobs named %s after a timed-out submission: %s", name,
                      exc.message)

    async def cancel_interrupted(self) -> None:
        """Jobs whose submission a restart cut off may exist without us knowing their id."""
        while self._interrupted:
            await self._cancel_named_quietly(self._interrupted.pop())

    # -- observations, fed by the monitor -----------------------------------------------------

    def live_jobs(self) -> list[tuple[str, Replica, Job]]:
        return [(d.id, r, self._job(r)) for d in self._deployments.values()
                for r in d.replicas if r.live and r.job_id]

    def observe_job(self, deployment_id: str, index: int, info: JobInfo) -> None:
        deployment = self._deployments.get(deployment_id)
        if deployment is None:
            return
        replica = deployment.replicas[index]
        tail = ""
        if info.state.terminal and not deployment.stop_requested:
            tail = read_tail(self.scheduler.output_path(self._job(replica)), 30)
            key = self._keys.get(deployment_id)
            tail = tail.replace(key, "***") if key else tail
        new = apply_job_info(replica, info, stop_requested=deployment.stop_requested,
                             log_tail=tail)
        if new != replica:
            self._set_replica(deployment_id, new)

    def observe_endpoint(self, deployment_id: str, index: int, host: str, port: int) -> None:
        replica = self._deployments[deployment_id].replicas[index]
        if (replica.host, replica.port) != (host, port):
            self._update_replica(deployment_id, index, host=host, port=port)

    def observe_health(self, deployment_id: str, index: int, healthy: bool) -> None:
        deployment = self._deployments.get(deployment_id)
        if deployment is None:
            return
        replica = deployment.replicas[index]
        if replica.state == STARTING and healthy:
            self._update_replica(deployment_id, index, state=READY, healthy=True,
                                 ready_at=self.clock())
        elif replica.state == READY and replica.healthy != healthy:
            self._update_replica(deployment_id, index, healthy=healthy)

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
        return [Endpoint(model=d.model, url=r.url, key=self._keys.get(d.id), deployment_id=d.id,
                         replica=r.job_id or str(r.index))
                for r in d.replicas if r.state == READY and r.healthy and r.url]

    # -- internals -----------------------------------------------------------------------------

    def _job(self, replica: Replica) -> Job:
        return Job(id=str(replica.job_id), folder=Path(replica.folder))

    def _reload(self) -> None:
        for deployment in self.store.load_all():
            self._deployments[deployment.id] = deployment
            key_file = Path(deployment.replicas[0].folder) / KEY_FILE if deployment.replicas \
                else None
            if key_file and key_file.exists():
                self._keys[deployment.id] = key_file.read_text().strip()
            lost = [r for r in deployment.replicas if r.live and not r.job_id]
            for r in lost:  # the server died between persisting and recording the job id
                self._update_replica(deployment.id, r.index, state=FAILED,
                                     reason="submission interrupted by a server restart")
                self._interrupted.append(_job_name(deployment.id, r.index))
        self._prune_finished()

    def _update_replica(self, deployment_id: str, index: int, **changes: Any) -> None:
        replica = self._deployments[deployment_id].replicas[index]
        self._set_replica(deployment_id, replace(replica, **changes))

    def _set_replica(self, deployment_id: str, replica: Replica) -> None:
        deployment = self._deployments[deployment_id]
        replicas = tuple(replica if r.index == replica.index else r for r in deployment.replicas)
        self._put(replace(deployment, replicas=replicas))

    def _put(self, deployment: Deployment) -> None:
        state, reason = deployment_state(deployment.replicas, deployment.stop_requested)
        was_live = self._deployments[deployment.id].live if deployment.id in self._deployments \
            else True
        deployment = replace(deployment, state=state, reason=reason, updated=self.clock())
        self._deployments[deployment.id] = deployment
        self.store.save(deployment)
        if was_live and not deployment.live:
            self._prune_finished()

    def _prune_finished(self) -> None:
        """Keep the newest ``keep_finished`` ended deployments; forget older ones and their
        job folders (logs, dead keys), so the list and the disk do not grow forever."""
        finished = sorted((d for d in self._deployments.values() if not d.live),
                          key=lambda d: d.updated, reverse=True)
        for old in finished[self.keep_finished:]:
            self._forget(old.id)
            shutil.rmtree(self.job_root / old.id, ignore_errors=True)

    def _forget(self, deployment_id: str) -> None:
        self._deployments.pop(deployment_id, None)
        self._keys.pop(deployment_id, None)
        self.store.delete(deployment_id)


def _job_name(deployment_id: str, index: int) -> str:
    return f"osire-{deployment_id}-r{index}"


def _prepare_job_dir(job_dir: Path, key: str) -> None:
    job_dir.mkdir(parents=True, mode=0o700)
    key_file = job_dir / KEY_FILE
    key_file.touch(mode=0o600)
    key_file.write_text(key)
    if GUARD_SOURCE.exists():
        shutil.copyfile(GUARD_SOURCE, job_dir / GUARD_SOURCE.name)


def read_tail(path: Path, lines: int, block: int = 8192) -> str:
    """The last ``lines`` lines of a (possibly large) file, without reading it whole."""
    try:
        with path.open("rb") as f:
            f.seek(0, 2)
            size = f.tell()
            data = b""
            while size > 0 and data.count(b"\n") <= lines:
                step = min(block, size)
                size -= step
                f.seek(size)
                data = f.read(step) + data
    except OSError:
        return ""
    return "\n".join(data.decode("utf-8", "replace").splitlines()[-lines:])
