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
from .endpoints import EngineEndpoint, Endpoint, ModelStatus
from .errors import ConfigError, NotFound, OsireError, RequestError, SchedulerError, SchedulerTimeout
from .render import ScriptContext, ScriptRenderer
from .schedulers.base import Job, JobInfo, JobRequest, JobState, Scheduler
from .spec import SiteLimits, job_gpus, parse_resources
from .states import (FAILED, QUEUED, READY, STARTING, STOPPED, STOPPING, Deployment, Replica,
                     apply_job_info, deployment_state)
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
                 lost_grace: float = 60.0, clock: Callable[[], float] = time.time) -> None:
        self.catalog, self.limits, self.scheduler = catalog, limits, scheduler
        self.store, self.renderer, self.job_root = store, renderer, job_root
        self.advertise_host, self.bind_host, self.clock = advertise_host, bind_host, clock
        self.keep_finished, self.lost_grace = keep_finished, lost_grace
        self.changed = asyncio.Event()            # wakes the monitor early
        self._deployments: dict[str, Deployment] = {}
        self._keys: dict[tuple[str, int], str] = {}   # one key per replica
        self._interrupted: list[str] = []        # job names whose submission a restart cut off
        self._launching: set[str] = set()         # deployments whose jobs are being submitted
        self._cancel_pending: set[tuple[str, int]] = set()   # cancels not yet accepted
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
        out = []
        for r in deployment.replicas:
            text = read_tail(self.scheduler.output_path(self._job(r)), tail) or (r.log_tail or "")
            text = self._redact(deployment_id, text)
            out.append({"index": r.index, "job_id": r.job_id, "lines": text.splitlines()[-tail:]})
        return out

    def _redact(self, deployment_id: str, text: str) -> str:
        for (owner, _), key in self._keys.items():
            if owner == deployment_id:
                text = text.replace(key, "***")
        return text

    # -- intent: launch and stop -------------------------------------------------------------

    async def launch(self, model: Any, replicas: Any = 1, resources: Any = None) -> Deployment:
        """Validate everything, persist, then submit; a rejected launch submits nothing."""
        if not isinstance(model, str) or not model:
            raise RequestError("'model' is required and must be a string", field="model")
        if isinstance(replicas, bool) or not isinstance(replicas, int):
            raise RequestError(f"'replicas' must be an integer, got {replicas!r}",
                               field="replicas")
        entry = self.catalog.get(model)
        wanted = self.limits.apply(parse_resources(resources, base=entry.resources), replicas)
        live = [d for d in self._deployments.values() if d.live]
        self.limits.check_count(len(live))
        self.limits.check_total_gpus(sum(_gpus_held(d) for d in live),
                                     job_gpus(wanted) * replicas)

        deployment_id = secrets.token_hex(4)
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
        self._put(deployment)
        self._launching.add(deployment_id)
        try:
            for index, (job_dir, script) in enumerate(scripts):
                key = self._keys[(deployment_id, index)] = secrets.token_urlsafe(32)
                _prepare_job_dir(job_dir, key)
                request = JobRequest(name=_job_name(deployment_id, index), script=script,
                                     folder=job_dir, resources=wanted)
                job = await asyncio.to_thread(self.scheduler.submit, request)
                self._update_replica(deployment_id, index, job_id=job.id)
                if self.get(deployment_id).stop_requested:  # stopped while we were submitting
                    await self._cancel_quietly(deployment_id,
                                               self.get(deployment_id).replicas[index])
                    self._end_unsubmitted(deployment_id, "stopped by user")
                    break
        except SchedulerError as exc:
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

    async def _abort_launch(self, deployment_id: str, exc: Exception) -> None:
        """Undo a launch that failed part-way. Submitted jobs are cancelled and stay ``stopping``
        until the scheduler confirms they ended (the monitor retries a cancel that failed)."""
        deployment = self.get(deployment_id)
        submitted = [r for r in deployment.replicas if r.job_id]
        if isinstance(exc, SchedulerTimeout):  # the job may exist although sbatch never answered
            await self._cancel_named_quietly(_job_name(deployment_id, len(submitted)))
        if not submitted:
            self._forget(deployment_id)
            shutil.rmtree(self.job_root / deployment_id, ignore_errors=True)
            return
        message = exc.message if isinstance(exc, OsireError) else str(exc)
        self._put(replace(deployment, stop_requested=True,
                          abort_reason=f"submission failed: {message}"))
        self._end_unsubmitted(deployment_id, f"not submitted: {message}")
        for r in submitted:
            await self._cancel_quietly(deployment_id, r)

    def _end_unsubmitted(self, deployment_id: str, reason: str) -> None:
        """Replicas that never reached the scheduler have no job that could still run."""
        for r in self.get(deployment_id).replicas:
            if not r.job_id and r.live:
                self._update_replica(deployment_id, r.index, state=STOPPED, reason=reason)

    async def stop(self, deployment_id: str) -> Deployment:
        """Cancel every job of the deployment; stopping twice is harmless.

        The deployment is ``stopping`` until the scheduler confirms each job ended; a cancel that
        fails now is retried by the monitor (``retry_cancels``), and the error is raised.
        """
        deployment = self.get(deployment_id)
        if not deployment.live:
            return deployment
        self._put(replace(deployment, stop_requested=True))
        errors = []
        for r in deployment.replicas:
            if r.job_id and r.live:
                try:
                    await self._cancel(deployment_id, r)
                except SchedulerError as exc:
                    errors.append(exc)
            elif not r.job_id and r.live and deployment_id not in self._launching:
                self._update_replica(deployment_id, r.index, state=STOPPED,
                                     reason="stopped by user")
        self.changed.set()
        if errors:
            raise errors[0]
        return self.get(deployment_id)

    async def retry_cancels(self) -> None:
        """Cancel again the jobs whose cancel failed, until the scheduler accepts it.

        Called by the monitor after a query that succeeded; a job is only ever called ended on
        the scheduler's evidence, so a cancel that failed (controller down, a timeout) is kept.
        """
        for deployment_id, index in sorted(self._cancel_pending):
            deployment = self._deployments.get(deployment_id)
            replica = deployment.replicas[index] if deployment else None
            if replica is None or not replica.live or deployment_id in self._launching:
                self._cancel_pending.discard((deployment_id, index))
                continue
            await self._cancel_quietly(deployment_id, replica)
        await self.cancel_interrupted()

    async def _cancel(self, deployment_id: str, replica: Replica) -> None:
        """Cancel one job; until the scheduler accepts, it stays in the retry set."""
        self._cancel_pending.add((deployment_id, replica.index))
        await asyncio.to_thread(self.scheduler.cancel, self._job(replica))
        self._cancel_pending.discard((deployment_id, replica.index))

    async def _cancel_quietly(self, deployment_id: str, replica: Replica) -> bool:
        try:
            await self._cancel(deployment_id, replica)
            return True
        except SchedulerError as exc:
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
        """Jobs whose submission a restart (or a timeout) cut off may exist without us knowing
        their id: cancel them by name; a name whose cancel fails is kept for the next try."""
        names, self._interrupted = self._interrupted, []
        for name in names:
            await self._cancel_named_quietly(name)

    # -- observations, fed by the monitor -----------------------------------------------------

    def live_jobs(self) -> list[tuple[str, Replica, Job]]:
        return [(d.id, r, self._job(r)) for d in self._deployments.values()
                for r in d.replicas if r.live and r.job_id]

    def observe_job(self, deployment_id: str, index: int, info: JobInfo) -> None:
        deployment = self._deployments.get(deployment_id)
        if deployment is None:
            return
        replica = deployment.replicas[index]
        if info.state is JobState.LOST and not self._lost_confirmed(replica):
            if replica.lost_since is None:
                self._update_replica(deployment_id, index, lost_since=self.clock())
            return
        tail = ""
        if info.state.terminal and not deployment.stop_requested:
            tail = self._redact(deployment_id,
                                read_tail(self.scheduler.output_path(self._job(replica)), 30))
        new = apply_job_info(replica, info, stop_requested=deployment.stop_requested,
                             log_tail=tail)
        if new != replica:
            self._set_replica(deployment_id, new)

    def _lost_confirmed(self, replica: Replica) -> bool:
        """"Vanished" is a verdict from missing evidence: believed only once it has held for
        ``lost_grace`` seconds, since a terminal replica is never asked about again."""
        return replica.lost_since is not None and \
            self.clock() - replica.lost_since >= self.lost_grace

    def observe_endpoint(self, deployment_id: str, index: int, endpoint: EngineEndpoint) -> None:
        """The engine's own endpoint file: believed only for this replica's job and a run that
        has not ended; it makes a queued replica starting (the engine runs, whatever the
        scheduler last said)."""
        deployment = self._deployments.get(deployment_id)
        if deployment is None:
            return
        replica = deployment.replicas[index]
        if not replica.live or endpoint.job_id != replica.job_id or \
                endpoint.run == replica.stale_run:
            return
        if (replica.host, replica.port, replica.fingerprint, replica.run) == \
                (endpoint.host, endpoint.port, endpoint.fingerprint, endpoint.run):
            return
        # A new run needs its own health check before it is ready again.
        state = replica.state if replica.state == STOPPING else STARTING
        self._update_replica(deployment_id, index, host=endpoint.host, port=endpoint.port,
                             fingerprint=endpoint.fingerprint, run=endpoint.run, healthy=False,
                             state=state, reason=replica.reason if state == STOPPING else None,
                             started_at=replica.started_at or self.clock(),
                             estimated_start=None)

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
        return [Endpoint(model=d.model, url=r.url, key=self._keys.get((d.id, r.index)),
                         deployment_id=d.id, replica=r.job_id or str(r.index),
                         fingerprint=r.fingerprint)
                for r in d.replicas if r.state == READY and r.healthy and r.url]

    # -- internals -----------------------------------------------------------------------------

    def _job(self, replica: Replica) -> Job:
        return Job(id=str(replica.job_id), folder=Path(replica.folder))

    def _reload(self) -> None:
        for deployment in self.store.load_all():
            self._deployments[deployment.id] = deployment
            for r in deployment.replicas:
                try:
                    self._keys[(deployment.id, r.index)] = \
                        (Path(r.folder) / KEY_FILE).read_text().strip()
                except OSError:
                    pass
            if deployment.stop_requested:  # a cancel may not have reached the scheduler
                self._cancel_pending.update((deployment.id, r.index) for r in deployment.replicas
                                            if r.live and r.job_id)
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
        state, reason = deployment_state(deployment.replicas, deployment.stop_requested,
                                         deployment.abort_reason)
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
        for key in [k for k in self._keys if k[0] == deployment_id]:
            del self._keys[key]
        self.store.delete(deployment_id)


def _gpus_held(deployment: Deployment) -> int:
    per_job = int(deployment.resources.get("gpus") or 0) * int(deployment.resources.get("nodes")
                                                               or 1)
    return per_job * sum(r.live for r in deployment.replicas)


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
