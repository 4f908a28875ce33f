"""The one background loop that watches every live job.

Each cycle: ONE batched scheduler query for all live jobs, endpoint files of running replicas,
health checks of starting replicas (and, less often, of ready ones). It cycles fast while
something is queued, starting or stopping, slowly when all is stable, and at once when the
service signals a change. A failing scheduler keeps the last known state and is retried.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path
from typing import Optional

import aiohttp

from .deployments import ENDPOINT_FILE, DeploymentService
from .errors import SchedulerError
from .schedulers.base import Scheduler
from .states import QUEUED, READY, STARTING, STOPPING

log = logging.getLogger(__name__)


class Monitor:
    def __init__(self, service: DeploymentService, scheduler: Scheduler, *,
                 fast_interval: float = 0.5, slow_interval: float = 5.0,
                 health_interval: float = 10.0, health_timeout: float = 2.0) -> None:
        self.service, self.scheduler = service, scheduler
        self.fast_interval, self.slow_interval = fast_interval, slow_interval
        self.health_interval, self.health_timeout = health_interval, health_timeout
        self.last_error: Optional[str] = None
        self.last_cycle: Optional[float] = None
        self.cycles = 0
        self._task: Optional[asyncio.Task] = None
        self._session: Optional[aiohttp.ClientSession] = None
        self._last_health: dict[tuple[str, int], float] = {}

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self.run())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        if self._session:
            await self._session.close()
            self._session = None

    async def run(self) -> None:
        await self.service.cancel_interrupted()
        while True:
            try:
                await self.cycle()
            except asyncio.CancelledError:
                raise
            except Exception:  # never let one bad cycle end monitoring
                log.exception("monitor cycle failed")
            self.service.changed.clear()
            try:
                await asyncio.wait_for(self.service.changed.wait(), self.interval())
            except asyncio.TimeoutError:
                pass

    def interval(self) -> float:
        busy = any(d.state in (QUEUED, STARTING, STOPPING) for d in self.service.all())
        return self.fast_interval if busy else self.slow_interval

    async def cycle(self) -> None:
        live = self.service.live_jobs()
        if live:
            try:
                infos = await asyncio.to_thread(self.scheduler.query, [j for _, _, j in live])
            except SchedulerError as exc:
                if self.last_error != exc.message:
                    log.warning("scheduler query failed, keeping last known states: %s",
                                exc.message)
                self.last_error = exc.message
                infos = {}
            else:
                self.last_error = None
            for deployment_id, replica, job in live:
                if job.id in infos:
                    self.service.observe_job(deployment_id, replica.index, infos[job.id])
        await self._check_replicas()
        self.last_cycle = time.time()
        self.cycles += 1

    async def _check_replicas(self) -> None:
        checks = []
        now = time.monotonic()
        live = {(d.id, r.index) for d in self.service.all() for r in d.replicas if r.live}
        self._last_health = {k: v for k, v in self._last_health.items() if k in live}
        for deployment in self.service.all():
            for r in deployment.replicas:
                if r.state == STARTING:  # re-read: a requeued job writes a new endpoint
                    self._read_endpoint(deployment.id, r.index, Path(r.folder))
                    r = self.service.get(deployment.id).replicas[r.index]
                due = r.state == STARTING or (
                    r.state == READY and
                    now - self._last_health.get((deployment.id, r.index), 0) >= self.health_interval)
                if due and r.url:
                    self._last_health[(deployment.id, r.index)] = now
                    checks.append(self._health(deployment.id, r.index, r.url))
        if checks:
            await asyncio.gather(*checks)

    def _read_endpoint(self, deployment_id: str, index: int, folder: Path) -> None:
        try:
            doc = json.loads((folder / ENDPOINT_FILE).read_text())
            host, port = str(doc["host"]), int(doc["port"])
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("unreadable endpoint file in %s: %s", folder, exc)
            return
        self.service.observe_endpoint(deployment_id, index, host, port)

    async def _health(self, deployment_id: str, index: int, url: str) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.health_timeout))
        try:
            async with self._session.get(f"{url}/health") as response:
                healthy = response.status == 200
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
            healthy = False
        self.service.observe_health(deployment_id, index, healthy)
