"""The Jupyter server extension: configuration (traitlets, validated) and the ExtensionApp hooks;
the services are built by wiring.py."""
from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Optional

from jupyter_core.paths import jupyter_data_dir
from jupyter_server.extension.application import ExtensionApp
from traitlets import (
    Bool,
    CaselessStrEnum,
    Dict,
    Float,
    Int,
    List,
    TraitError,
    Unicode,
    default,
    validate,
)

from ..core.limits import parse_resources, time_to_minutes
from ..core.private_folder import expand_user
from ..errors import ConfigError, RequestError
from ..sizing.fit import parse_gpu_types
from .context import OsireContext
from .handlers import SwitchedOffHandler, default_handlers
from .settings import OsireSettings
from .wiring import build_context

LOGGER_NAME = "jupyter_osire_llm"


class OsireLLM(ExtensionApp):
    name = "jupyter_osire_llm"
    description = "Launch LLM engines as Slurm jobs and call them with the OpenAI client."

    scheduler = CaselessStrEnum(
        ["auto", "pyslurm", "slurm", "local"], default_value="auto", config=True,
        help="Scheduler backend: auto (pyslurm, else Slurm CLI, else local), pyslurm, slurm, local.")
    catalog = Unicode("", config=True, help="Path of the site's model catalog (YAML).")
    job_root = Unicode(config=True, help="Folder for job scripts, logs and endpoint files, on a "
                       "filesystem shared with the compute nodes.")
    db_path = Unicode(config=True, help="SQLite file holding the user's deployments.")
    templates_dir = Unicode("", config=True,
                            help="Site folder of batch script templates (falls back to ours).")
    allowed_partitions = List(Unicode(), config=True, help="Partitions users may pick; empty: any.")
    allowed_accounts = List(Unicode(), config=True, help="Accounts users may pick; empty: any.")
    max_gpus = Int(8, config=True, help="Most GPUs one replica may ask for.")
    max_time = Unicode("24:00:00", config=True, help="Longest time limit (Slurm syntax); a "
                       "launch that gives none gets it. Never empty: no job runs unlimited.")
    max_deployments = Int(4, config=True, help="Most live deployments per user.")
    max_replicas = Int(4, config=True, help="Most replicas per deployment.")
    max_total_gpus = Int(0, config=True, help="Most GPUs one user's live replicas and "
                         "running batches may hold together (GPUs per node x nodes x jobs); 0: no "
                         "such limit.")
    keep_finished = Int(50, config=True, help="Ended deployments kept (with their logs); older "
                        "ones are forgotten and their job folders removed.")
    local_gpus = Int(0, config=True, help="GPU slots the local backend hands out.")
    command_timeout = Float(15.0, config=True, help="Seconds before a scheduler command fails.")
    engine_host = Unicode("", config=True, help="Host the proxy uses to reach engines; empty: "
                          "the compute node's hostname (127.0.0.1 with the local backend).")
    monitor_fast_interval = Float(0.5, config=True, help="Seconds between scheduler queries "
                                  "right after a change (a launch, a stop, a state that moved).")
    monitor_slow_interval = Float(30.0, config=True, help="Most seconds between scheduler "
                                  "queries while jobs merely wait or run (the monitor backs off "
                                  "to it; engines that start are noticed from their own "
                                  "endpoint files and health checks, not by faster polling).")
    monitor_lease_ttl = Float(20.0, config=True, help="Seconds the watching server's lease lasts "
                              "without renewal (renewed every quarter of it, at most every 5 s): "
                              "another Jupyter server of the user takes over watching after "
                              "that, and a watch cycle with less than a renewal interval of its "
                              "lease left does not act on what it saw.")
    static_endpoints = Dict(config=True, help="Models served outside Slurm: {name: {'url': ..., "
                            "'api_key': ..., 'model': <upstream name, optional>}}.")
    proxy_max_body_size = Int(32 * 1024 * 1024, config=True, help="Largest request body (bytes).")
    proxy_connect_timeout = Float(10.0, config=True, help="Seconds to connect to an engine.")
    proxy_idle_timeout = Float(300.0, config=True, help="Seconds a request or stream may wait "
                               "for the next bytes from an engine (not a total limit).")
    proxy_retries = Int(2, config=True, help="Other replicas tried when one refuses to connect.")
    # Lifecycle policies (deployments/policies.py); catalog entries may set idle_timeout and
    # pinned per model.
    idle_timeout = Float(1800.0, config=True, help="Seconds a deployment may serve no inference "
                         "request before it is stopped (health checks, metrics and the model "
                         "list do not count; a stream counts until its last byte); 0: never.")
    max_idle_timeout = Float(0.0, config=True, help="Longest idle_timeout a launch request may "
                             "ask for, in seconds; 0: no cap.")
    allow_pinned = Bool(True, config=True, help="Whether users may pin a deployment (exempt "
                        "from idle shutdown) or launch one with idle_timeout 0.")
    launch_on_demand = Bool(False, config=True, help="A request to /osire/v1 for a catalog "
                            "model that nothing runs launches it (within the site limits); the "
                            "caller gets 503 with Retry-After until it is ready.")
    launch_on_demand_wait = Float(0.0, config=True, help="Seconds such a request waits for the "
                                  "model to be ready and is then served; 0: answer 503 at once.")
    max_restarts = Int(3, config=True, help="Times a failed replica (engine crash, node failure, "
                       "out of memory) is submitted again; 0: never.")
    restart_backoff = Float(10.0, config=True, help="Seconds before the first restart of a "
                            "replica, doubled for each further one (at most 300).")
    renew_before = Float(600.0, config=True, help="Seconds before a replica's time limit that a "
                         "replacement is submitted (at most half its time); it takes over when "
                         "ready and the old one drains. 0: no renewal.")
    startup_timeout = Float(1800.0, config=True, help="Seconds a replica's job may run (counted "
                            "from its start, not while queued) before its engine is ready; then "
                            "it is stopped ('not ready after ...'). Catalog entries may set their "
                            "own startup_timeout.")
    readiness_timeout = Float(30.0, config=True, help="Seconds the one-token completion that "
                              "makes a starting replica ready may take.")
    max_batches = Int(4, config=True, help="Most batches one user may have queued or running.")
    batch_concurrency = Int(16, config=True, help="Requests a batch job keeps in flight to its "
                            "engine at once (the engine batches them on the GPU).")
    max_batch_file_size = Int(200 * 1024 * 1024, config=True, help="Largest file (bytes) that "
                              "may be uploaded to /osire/v1/files.")
    file_expiry_days = Float(30.0, config=True, help="Days after which an uploaded file is "
                             "deleted unless its upload set expires_after (OpenAI's default for "
                             "batch files); a live batch's input stays until the batch ends. "
                             "0: uploads are kept until deleted.")
    gpu_types = Dict(config=True, help="The site's GPU types, by Slurm GRES type: {'a100': "
                     "{'memory': '40G', 'per_node': 4}}. With them the catalog says which "
                     "requests hold each model, and a launch whose GPUs cannot hold its model "
                     "is refused (unless it says force).")
    billing_price = Float(0.0, config=True, help="Price of one billing unit for one hour (what "
                          "Slurm's billing TRES counts, from the partition's TRESBillingWeights); "
                          "0: estimates give units only.")
    billing_currency = Unicode("", config=True, help="The currency of billing_price (e.g. EUR).")
    confirm_start_after = Float(900.0, config=True, help="Seconds: a launch from the CLI or "
                                "the magics whose estimated start is later asks first.")
    confirm_cost = Float(0.0, config=True, help="A launch whose estimate costs more (price where "
                         "billing_price is set, else billing unit-hours) asks first; 0: never.")
    user_models = List(Unicode(), config=True, help="Folders (prefixes; $USER and ~ are the "
                       "user's) under which users may launch their own model folders with a "
                       "catalog model's engine and resources (launch 'model_path'); empty: "
                       "users launch catalog models only.")
    log_level_name = CaselessStrEnum(["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"], "INFO",
                                     config=True, help="Log level of the extension's logger "
                                     "(also settable at run time: PUT /osire/api/admin).")

    @validate("gpu_types")
    def _check_gpu_types(self, proposal: dict) -> dict:
        try:
            parse_gpu_types(proposal["value"])
        except ValueError as exc:
            raise TraitError(f"OsireLLM.{exc}") from exc
        return proposal["value"]

    @validate("max_time")
    def _check_max_time(self, proposal: dict) -> str:
        value = proposal["value"].strip()
        if not value:
            raise TraitError("OsireLLM.max_time: must not be empty (a job without a time limit "
                             "could hold its GPUs forever); give the longest time, e.g. "
                             "'24:00:00'")
        try:
            time_to_minutes(value)
        except ValueError as exc:
            raise TraitError(f"OsireLLM.max_time: {exc}") from exc
        return value

    @validate("startup_timeout")
    def _check_startup_timeout(self, proposal: dict) -> float:
        if proposal["value"] <= 0:
            raise TraitError("OsireLLM.startup_timeout must be more than 0 seconds (a replica "
                             "that never becomes ready would hold its GPUs until its time "
                             "limit)")
        return proposal["value"]

    @validate("monitor_lease_ttl")
    def _check_lease_ttl(self, proposal: dict) -> float:
        if proposal["value"] <= 0:
            raise TraitError("OsireLLM.monitor_lease_ttl must be more than 0 seconds")
        return proposal["value"]

    @validate("allowed_partitions", "allowed_accounts")
    def _check_names(self, proposal: dict) -> list:
        for name in proposal["value"]:
            try:
                parse_resources({"partition": name})
            except RequestError as exc:
                raise TraitError(f"OsireLLM.{proposal['trait'].name}: {exc.message}") from exc
        return proposal["value"]

    @validate("max_gpus", "max_deployments", "max_replicas", "local_gpus", "keep_finished",
              "max_total_gpus", "max_restarts", "idle_timeout", "max_idle_timeout",
              "launch_on_demand_wait", "restart_backoff", "renew_before", "max_batches",
              "max_batch_file_size", "file_expiry_days")
    def _check_counts(self, proposal: dict) -> int:
        if proposal["value"] < 0:
            raise TraitError(f"OsireLLM.{proposal['trait'].name} must be 0 or more")
        return proposal["value"]

    @validate("job_root", "db_path")
    def _absolute_path(self, proposal: dict) -> str:
        """``~`` and ``$USER`` expanded and a relative path made absolute now: jobs run elsewhere
        (their own working folder, a compute node), where neither would mean the same."""
        value = proposal["value"].strip()
        path = Path(expand_user(value))
        if not value or str(path).startswith("~"):
            raise TraitError(f"OsireLLM.{proposal['trait'].name}: {value!r} is not a usable path "
                             "(empty, or ~user of an unknown user)")
        return str(path.absolute())

    @default("job_root")
    def _default_job_root(self) -> str:
        return str(Path.home() / ".osire" / "jobs")

    @default("db_path")
    def _default_db_path(self) -> str:
        return str(Path(jupyter_data_dir()) / "osire" / "state.sqlite")

    #: Why the configuration could not be taken (a bad OsireLLM value), or None. Jupyter Server
    #: would log a warning and run the extension on its defaults (site limits not in force).
    config_error: Optional[ConfigError] = None

    def _link_jupyter_server_extension(self, serverapp) -> None:  # type: ignore[no-untyped-def]
        try:
            super()._link_jupyter_server_extension(serverapp)
        except TraitError as exc:
            self.config_error = config_problem(exc)
            self.log.error("jupyter-osire-llm is switched off until its configuration is "
                           "fixed: %s", self.config_error.message)

    def initialize_settings(self) -> None:
        logger = logging.getLogger(LOGGER_NAME)
        logger.setLevel(self.log_level_name.upper())
        if not logger.handlers:  # print through Jupyter's handler, in Jupyter's format
            logger.parent = self.log
        if self.config_error is not None:
            return
        self.settings["osire"] = build_context(OsireSettings.read(self), log=self.log)

    def initialize_handlers(self) -> None:
        if self.config_error is not None:
            self.handlers.append((r"/osire/.*", SwitchedOffHandler,
                                  {"problem": self.config_error}))
            return
        self.handlers.extend(default_handlers())

    async def _start_jupyter_server_extension(self, serverapp) -> None:  # type: ignore[override]
        context: Optional[OsireContext] = self.settings.get("osire")
        if context is None:   # switched off: a bad configuration
            return
        context.monitor.start()
        await context.proxy.start()

    async def stop_extension(self) -> None:
        context: Optional[OsireContext] = self.settings.get("osire")
        if context is None:
            return
        await context.monitor.stop()
        await context.proxy.close()
        context.service.store.close()


def config_problem(exc: TraitError) -> ConfigError:
    """A TraitError (ours say ``OsireLLM.<name>: ...``; traitlets' own, ``The '<name>' trait of
    an OsireLLM instance expected ...``) as a ConfigError naming the setting."""
    found = re.search(r"OsireLLM\.(\w+)|The '(\w+)' trait", str(exc))
    name = next((g for g in found.groups() if g), None) if found else None
    return ConfigError(f"the server's configuration is invalid, so jupyter-osire-llm is off: "
                       f"{exc} (fix c.OsireLLM.{name or '...'} and restart Jupyter)",
                       field=f"OsireLLM.{name}" if name else None)
