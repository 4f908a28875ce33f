"""What the watcher checks of each engine beside the scheduler: its endpoint file (an engine that
started is noticed from its own file, not by asking the scheduler faster) and its health, pinned
to the run's TLS certificate.

A starting replica is ready only when its engine answers a real one-token completion (with the
replica's key, over the pinned TLS), not merely ``/health``: engines can answer health and hang on
the first request. Engines marked ``readiness: health`` in the catalog skip it. These probes run
beside the monitor's cycle, so a hanging engine never holds the loop up. File-system work runs
off the event loop: a stalled shared file system never freezes the server.
"""
from __future__ import annotations

import asyncio
import logging
import time
from functools import partial
from pathlib import Path
from typing import Any, Callable, Optional

import aiohttp

from ..core.jobfiles import ENDPOINT_FILE
from ..errors import LeaseLost
from ..proxy.endpoints import EngineEndpoint, parse_endpoint_file
from ..proxy.tls import pinned_tls
from .service import DeploymentService
from .states import QUEUED, READY, STARTING

log = logging.getLogger("jupyter_osire_llm.deployments.monitor")
Slot = tuple[str, int]     # (deployment id, replica index)


class EngineProbes:
    def __init__(self, service: DeploymentService, *, health_interval: float = 10.0,
                 health_timeout: float = 2.0, readiness_timeout: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.service, self.clock = service, clock
        self.health_interval, self.health_timeout = health_interval, health_timeout
        self.readiness_timeout = readiness_timeout
        self._probes: dict[Slot, asyncio.Task[None]] = {}
        self._last_health: dict[Slot, float] = {}
        self._session: Optional[aiohttp.ClientSession] = None

    async def close(self) -> None:
        for probe in list(self._probes.values()):
            probe.cancel()
        await asyncio.gather(*self._probes.values(), return_exceptions=True)
        self._probes.clear()
        if self._session:
            await self._session.close()
            self._session = None

    async def check(self) -> None:
        """Endpoint files of queued and starting replicas, then their health."""
        now = self.clock()
        live = {(d.id, r.index) for d in self.service.all() for r in d.replicas if r.live}
        self._last_health = {k: v for k, v in self._last_health.items() if k in live}
        await self._read_endpoints()
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

    async def _read_endpoints(self) -> None:
        watched = [(d.id, r.index, Path(r.folder)) for d in self.service.all()
                   for r in d.replicas
                   if r.state in (QUEUED, STARTING) and r.job_id and self.service.ours(r)]
        if not watched:
            return
        found = await asyncio.to_thread(_read_endpoints, watched)
        for (deployment_id, index, _), endpoint in zip(watched, found):
            if endpoint is not None:
                await self.service.observe_endpoint(deployment_id, index, endpoint)

    async def _health(self, deployment_id: str, index: int, url: str,
                      fingerprint: Optional[str]) -> None:
        await self.service.observe_health(deployment_id, index,
                                          await self._healthy(url, fingerprint))

    async def _healthy(self, url: str, fingerprint: Optional[str]) -> bool:
        """``/health`` with no key, over TLS pinned to the run's certificate: an impostor on the
        port fails the handshake check and never makes the replica ready."""
        return await self._request("GET", f"{url}/health", fingerprint, self.health_timeout)

    def _probe_done(self, slot: Slot, _: asyncio.Task[None]) -> None:
        self._probes.pop(slot, None)

    async def _probe_starting(self, deployment_id: str, model: str, index: int, url: str,
                              fingerprint: Optional[str]) -> None:
        """A starting replica: ``/health``, then (unless its engine says ``readiness: health``)
        a one-token completion with the replica's key; ready only when both pass."""
        healthy = await self._healthy(url, fingerprint)
        deployment = self.service.records.items.get(deployment_id)
        entry = self.service.entry_of(deployment) if deployment else None
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
