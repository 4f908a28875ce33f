"""REST handlers under /osire/api: thin wrappers over the deployment service."""
from __future__ import annotations

import asyncio
import logging
from typing import Any

from tornado import web

from ...errors import RequestError
from .base import OsireHandler

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class HealthHandler(OsireHandler):
    @web.authenticated
    def get(self) -> None:
        ctx = self.osire
        self.write_json({
            "status": "degraded" if ctx.service.store.problems else "ok",
            "version": ctx.version,
            "scheduler": {**ctx.scheduler.describe(), "reason": ctx.scheduler_reason,
                          "last_error": ctx.monitor.last_error},
            "catalog": {"models": len(ctx.catalog.models), "problems": ctx.catalog.problems,
                        "insecure": ctx.catalog.insecure()},
            "static_endpoints": {"models": sorted(ctx.router.static),
                                 "problems": ctx.router.problems},
            "monitor": {"cycles": ctx.monitor.cycles, "last_cycle": ctx.monitor.last_cycle,
                        "watching": ctx.monitor.leader, "server": ctx.service.server_id},
            "state": {"path": str(ctx.service.store.path),
                      "problems": ctx.service.store.problems},
        })


class CatalogHandler(OsireHandler):
    @web.authenticated
    async def get(self) -> None:
        catalog, sizes = self.osire.catalog, self.osire.service.sizes
        described = await asyncio.to_thread(
            lambda: [{**e.public(), "size": sizes.describe(e)} for e in catalog.models.values()])
        self.write_json({"models": described, "problems": catalog.problems})


LAUNCH_FIELDS = {"model", "replicas", "resources", "idle_timeout", "pinned", "force",
                 "model_path", "name"}


def launch_body(handler: OsireHandler) -> tuple[dict[str, Any], dict[str, Any]]:
    """A launch's JSON body (for the launch and its estimate) and its lifecycle options."""
    body = handler.json_body()
    unknown = sorted(set(body) - LAUNCH_FIELDS)
    if unknown:
        raise RequestError(f"unknown field(s) {', '.join(unknown)}", field=unknown[0])
    return body, handler.osire.policies.launch_options(body)


class DeploymentsHandler(OsireHandler):
    @web.authenticated
    def get(self) -> None:
        self.write_json({"deployments": [self.deployment_json(d)
                                         for d in self.osire.service.all()]})

    @web.authenticated
    async def post(self) -> None:
        body, options = launch_body(self)
        deployment = await self.osire.service.launch(body.get("model"), body.get("replicas", 1),
                                                     body.get("resources"),
                                                     force=body.get("force", False),
                                                     model_path=body.get("model_path"),
                                                     name=body.get("name"), **options)
        self.write_json(self.deployment_json(deployment), status=201)


class EstimateHandler(OsireHandler):
    """What a launch of this body would cost and when it would start; submits nothing."""

    @web.authenticated
    async def post(self) -> None:
        body, _ = launch_body(self)   # refused here as a launch would refuse it
        self.write_json(await self.osire.estimator.estimate(body))


class DeploymentHandler(OsireHandler):
    @web.authenticated
    def get(self, deployment_id: str) -> None:
        self.write_json(self.deployment_json(self.osire.service.get(deployment_id)))

    @web.authenticated
    async def patch(self, deployment_id: str) -> None:
        """``{"replicas": N}``: scale up, or drain the newest replicas away."""
        body = self.json_body()
        unknown = sorted(set(body) - {"replicas"})
        if unknown or "replicas" not in body:
            raise RequestError(f"unknown field(s) {', '.join(unknown)}; known: replicas"
                               if unknown else "'replicas' is required",
                               field=unknown[0] if unknown else "replicas")
        deployment = await self.osire.policies.scale(deployment_id, body["replicas"])
        self.write_json(self.deployment_json(deployment))

    @web.authenticated
    async def delete(self, deployment_id: str) -> None:
        deployment = await self.osire.service.stop(deployment_id)
        self.write_json(self.deployment_json(deployment))


class LogsHandler(OsireHandler):
    @web.authenticated
    async def get(self, deployment_id: str) -> None:
        raw = self.get_query_argument("tail", "100")
        try:
            tail = int(raw)
            if not 1 <= tail <= 10000:
                raise ValueError
        except ValueError:
            raise RequestError(f"tail must be an integer from 1 to 10000, got {raw!r}",
                               field="tail") from None
        self.write_json({"id": deployment_id,
                         "replicas": await self.osire.service.logs(deployment_id, tail)})


class AdminHandler(OsireHandler):
    """Health of the machinery, counts by state, and the extension's log level at run time."""

    @web.authenticated
    def get(self) -> None:
        ctx = self.osire
        self.write_json({"counts": ctx.service.counts(),
                         "log_level": logging.getLevelName(_logger().level),
                         "scheduler": ctx.scheduler.name,
                         "scheduler_last_error": ctx.monitor.last_error,
                         "scheduler_calls": ctx.scheduler.stats()["calls"],
                         "monitor_cycles": ctx.monitor.cycles})

    @web.authenticated
    def put(self) -> None:
        level = self.json_body().get("log_level")
        if not isinstance(level, str) or level.upper() not in LOG_LEVELS:
            raise RequestError(f"log_level must be one of {', '.join(LOG_LEVELS)}",
                               field="log_level")
        _logger().setLevel(level.upper())
        self.write_json({"log_level": level.upper()})


def _logger() -> logging.Logger:
    return logging.getLogger("jupyter_osire_llm")


_ID = r"(?P<deployment_id>[A-Za-z0-9_-]{1,64})"
API_HANDLERS = [
    (r"/osire/api/health", HealthHandler),
    (r"/osire/api/catalog", CatalogHandler),
    (r"/osire/api/deployments", DeploymentsHandler),
    (r"/osire/api/deployments/estimate", EstimateHandler),
    (rf"/osire/api/deployments/{_ID}", DeploymentHandler),
    (rf"/osire/api/deployments/{_ID}/logs", LogsHandler),
    (r"/osire/api/admin", AdminHandler),
]
