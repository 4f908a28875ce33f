"""``build_context``: every service of the extension, built once, in dependency order.

Each piece gets what it needs when it is made; nothing is patched in afterwards. The extension
(app.py) calls it with its settings; the tests call it too, passing stand-ins (a scheduler, a
catalog, faster clocks) through its parameters, so that they run the same wiring.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

from .._version import __version__
from ..batches.service import BatchService
from ..batches.watch import BatchWatch
from ..core.catalog import Catalog, load_catalog
from ..core.limits import SiteLimits
from ..core.model_sizes import ModelSizes
from ..core.render import ScriptRenderer
from ..core.store import Store
from ..core.usage_log import UsageLog, UsageWatch
from ..deployments.estimate import EstimateConfig, Estimator
from ..deployments.monitor import Monitor
from ..deployments.on_demand import OnDemand
from ..deployments.policies import Policies
from ..deployments.policy_config import PolicyConfig
from ..deployments.probes import EngineProbes
from ..deployments.restarts import RestartRule
from ..deployments.service import DeploymentService
from ..deployments.user_models import UserModels
from ..deployments.watch import DeploymentWatch
from ..errors import ConfigError
from ..proxy.router import Router
from ..proxy.upstream import ProxyConfig, UpstreamProxy
from ..proxy.usage import TokenTally
from ..schedulers import choose_scheduler
from ..schedulers.base import Scheduler
from ..sizing.fit import parse_gpu_types
from .context import OsireContext
from .settings import OsireSettings, Timing

LOG = logging.getLogger("jupyter_osire_llm")


def build_context(settings: OsireSettings, *, scheduler: Optional[Scheduler] = None,
                  catalog: Optional[Catalog] = None, timing: Timing = Timing(),
                  server_id: Optional[str] = None,
                  log: logging.Logger = LOG) -> OsireContext:
    """The extension's services from its settings. ``scheduler`` and ``catalog``: stand-ins for
    the ones the settings name; ``server_id``: this server's id in the shared state (default: a
    new one)."""
    why = "given"
    if scheduler is None:
        scheduler, why = choose_scheduler(
            settings.scheduler, state_dir=Path(settings.job_root).parent / "local-scheduler",
            local_gpus=settings.local_gpus, command_timeout=settings.command_timeout)
        log.info("jupyter-osire-llm %s: scheduler %s (%s)", __version__, scheduler.name, why)
    if catalog is None:
        catalog = read_catalog(settings.catalog, log)
    policy = policy_config(settings)
    service = deployment_service(settings, scheduler, catalog, timing, server_id,
                                 RestartRule(policy, clock=timing.clock))
    batches = batch_service(settings, service, timing)
    router, proxy = data_plane(settings, service, timing, log)
    usage = usage_log(service, batches, timing)
    policies = Policies(service, router, policy, clock=timing.clock)
    probes = EngineProbes(service, health_interval=timing.health_interval,
                          health_timeout=timing.health_timeout,
                          readiness_timeout=settings.readiness_timeout,
                          clock=timing.monitor_clock)
    monitor = Monitor(scheduler, service.store,
                      [DeploymentWatch(service, probes), BatchWatch(batches),
                       UsageWatch(usage)],
                      server_id=service.server_id, owner=service.owner, changed=service.changed,
                      policies=policies, fast_interval=settings.monitor_fast_interval,
                      slow_interval=settings.monitor_slow_interval, tick=timing.monitor_tick,
                      lease_ttl=settings.monitor_lease_ttl, lease_renew=timing.lease_renew,
                      clock=timing.monitor_clock, wall_clock=timing.wall_clock)
    return OsireContext(version=__version__, scheduler=scheduler, scheduler_reason=why,
                        catalog=catalog, service=service, batches=batches, router=router,
                        proxy=proxy, policies=policies,
                        on_demand=OnDemand(service, router, policy, clock=timing.clock),
                        probes=probes, monitor=monitor, usage=usage,
                        estimator=Estimator(service, EstimateConfig(
                            settings.billing_price or None, settings.billing_currency,
                            settings.confirm_start_after, settings.confirm_cost),
                            clock=timing.clock))


def read_catalog(path: str, log: logging.Logger) -> Catalog:
    """The site's catalog; one that cannot be read is an empty one that says why."""
    try:
        catalog = load_catalog(path)
    except ConfigError as exc:
        log.error("jupyter-osire-llm: %s", exc.message)
        return Catalog(problems=[exc.message], source=path)
    for problem in catalog.problems:
        log.error("jupyter-osire-llm catalog: %s", problem)
    log.info("jupyter-osire-llm catalog: %d model(s) from %s", len(catalog.models),
             catalog.source or "nowhere")
    return catalog


def policy_config(s: OsireSettings) -> PolicyConfig:
    return PolicyConfig(idle_timeout=s.idle_timeout, launch_on_demand=s.launch_on_demand,
                        launch_on_demand_wait=s.launch_on_demand_wait,
                        max_restarts=s.max_restarts, restart_backoff=s.restart_backoff,
                        renew_before=s.renew_before, allow_pinned=s.allow_pinned,
                        max_idle_timeout=s.max_idle_timeout, startup_timeout=s.startup_timeout)


def deployment_service(s: OsireSettings, scheduler: Scheduler, catalog: Catalog, timing: Timing,
                       server_id: Optional[str], restarts: RestartRule) -> DeploymentService:
    local = scheduler.name == "local"
    limits = SiteLimits(s.allowed_partitions, s.allowed_accounts, s.max_gpus, s.max_time,
                        s.max_deployments, s.max_replicas, s.max_total_gpus)
    try:
        gpu_types = parse_gpu_types(s.gpu_types)
    except ValueError as exc:
        raise ConfigError(f"c.OsireLLM.{exc}") from None
    return DeploymentService(
        catalog=catalog, scheduler=scheduler, store=Store(Path(s.db_path)),
        renderer=ScriptRenderer(s.templates_dir or None), job_root=Path(s.job_root),
        limits=limits, advertise_host=s.engine_host or ("127.0.0.1" if local else ""),
        bind_host="127.0.0.1" if local else "0.0.0.0", keep_finished=s.keep_finished,
        lost_grace=timing.lost_grace, cancel_retry=timing.cancel_retry, server_id=server_id,
        on_failure=restarts.on_failure, sizes=ModelSizes(gpu_types),
        user_models=UserModels(s.user_models), clock=timing.clock)


def batch_service(s: OsireSettings, service: DeploymentService, timing: Timing) -> BatchService:
    return BatchService(
        catalog=service.catalog, limits=service.limits, scheduler=service.scheduler,
        store=service.store, renderer=service.renderer, job_root=Path(s.job_root),
        server_id=service.server_id, changed=service.changed, max_batches=s.max_batches,
        concurrency=max(1, s.batch_concurrency), max_file_size=s.max_batch_file_size,
        file_expiry=s.file_expiry_days * 86400, lost_grace=timing.lost_grace,
        retry_delay=timing.batch_retry_delay, clock=timing.clock)


def usage_log(service: DeploymentService, batches: BatchService, timing: Timing) -> UsageLog:
    """What the user used (tokens the proxy counts, what each job used), in the shared state
    file; the monitor records each job that ends, from both services."""
    usage = UsageLog(lambda: service.store, TokenTally(clock=timing.clock), service.server_id,
                     service.scheduler, clock=timing.clock)
    service.usage_sink = batches.usage_sink = usage.job_ended
    return usage


def data_plane(s: OsireSettings, service: DeploymentService, timing: Timing,
               log: logging.Logger) -> tuple[Router, UpstreamProxy]:
    """The router and upstream proxy for /osire/v1."""
    router = Router(service, s.static_endpoints, clock=timing.clock)
    for problem in router.problems:
        log.error("jupyter-osire-llm static endpoint: %s", problem)
    config = ProxyConfig(connect_timeout=s.proxy_connect_timeout,
                         idle_timeout=s.proxy_idle_timeout, retries=s.proxy_retries,
                         max_body_size=s.proxy_max_body_size)
    return router, UpstreamProxy(router, config)
