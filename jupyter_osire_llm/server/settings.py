"""The extension's settings as a plain typed value: what ``build_context`` needs, filled from the
``c.OsireLLM`` traits (same names, same defaults; app.py validates them)."""
from __future__ import annotations

import time
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Optional


@dataclass(frozen=True)
class OsireSettings:
    job_root: str
    db_path: str
    scheduler: str = "auto"
    catalog: str = ""
    templates_dir: str = ""
    allowed_partitions: list[str] = field(default_factory=list)
    allowed_accounts: list[str] = field(default_factory=list)
    max_gpus: int = 8
    max_time: str = "24:00:00"
    max_deployments: int = 4
    max_replicas: int = 4
    max_total_gpus: int = 0
    keep_finished: int = 50
    local_gpus: int = 0
    command_timeout: float = 15.0
    engine_host: str = ""
    monitor_fast_interval: float = 0.5
    monitor_slow_interval: float = 30.0
    monitor_lease_ttl: float = 20.0
    static_endpoints: dict[str, Any] = field(default_factory=dict)
    proxy_max_body_size: int = 32 * 1024 * 1024
    proxy_connect_timeout: float = 10.0
    proxy_idle_timeout: float = 300.0
    proxy_retries: int = 2
    idle_timeout: float = 1800.0
    max_idle_timeout: float = 0.0
    allow_pinned: bool = True
    launch_on_demand: bool = False
    launch_on_demand_wait: float = 0.0
    max_restarts: int = 3
    restart_backoff: float = 10.0
    renew_before: float = 600.0
    startup_timeout: float = 1800.0
    readiness_timeout: float = 30.0
    max_batches: int = 4
    batch_concurrency: int = 16
    max_batch_file_size: int = 200 * 1024 * 1024
    file_expiry_days: float = 30.0
    gpu_types: dict[str, Any] = field(default_factory=dict)
    billing_price: float = 0.0
    billing_currency: str = ""
    confirm_start_after: float = 900.0
    confirm_cost: float = 0.0
    user_models: list[str] = field(default_factory=list)

    @classmethod
    def read(cls, config: object) -> OsireSettings:
        """The settings of an object with one attribute per field (the ``OsireLLM`` app)."""
        return cls(**{f.name: getattr(config, f.name) for f in fields(cls)})


@dataclass(frozen=True)
class Timing:
    """Clocks and internal intervals that are no site setting (tests shorten or fake them)."""

    clock: Callable[[], float] = time.time             # records, policies, router
    monitor_clock: Callable[[], float] = time.monotonic
    wall_clock: Callable[[], float] = time.time        # leases
    monitor_tick: float = 0.5
    lease_renew: Optional[float] = None
    health_interval: float = 10.0
    health_timeout: float = 2.0
    lost_grace: float = 60.0
    cancel_retry: float = 5.0
    batch_retry_delay: float = 1.0
