"""Batch scripts for engines, rendered from jinja2 templates in ``sbatch/`` (or a site's folder).

User input never reaches a template unvalidated: resources go on the scheduler's command line,
and every value placed in the script passes through ``shlex.quote`` (the ``q`` filter).
"""
from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

import jinja2

from ..errors import ConfigError
from ..schedulers.base import Resources
from .catalog import ModelEntry

PACKAGED_TEMPLATES = Path(__file__).parents[1] / "sbatch"
SOURCE_TEMPLATES = Path(__file__).parents[2] / "sbatch"   # editable installs, source trees
GUARD_MIDDLEWARE = "engine_guard.KeyGuard"
BATCH_TEMPLATE = "batch.sh.j2"


def template_dirs(site_dir: Optional[str]) -> list[Path]:
    dirs = [Path(site_dir)] if site_dir else []
    return dirs + [d for d in (PACKAGED_TEMPLATES, SOURCE_TEMPLATES) if d.is_dir()]


def engine_argv(entry: ModelEntry, resources: Resources, bind_host: str) -> list[str]:
    """The engine's arguments, all but the port (picked on the node at run time).

    Derived from the resources unless the catalog sets them: vLLM's tensor parallel size from
    the GPU count. The model, the name it answers to and the host always come from us, under
    the flags the engine's catalog entry names; ``engine_args`` cannot set those again.
    """
    engine = entry.engine
    args: dict[str, Any] = {}
    if engine.kind == "vllm" and resources.gpus > 1:
        args["tensor-parallel-size"] = resources.gpus
    if engine.kind == "vllm" and resources.nodes > 1:   # tensor parallel in a node, pipeline across
        args["pipeline-parallel-size"] = resources.nodes
        args["distributed-executor-backend"] = engine.distributed
    args.update(entry.engine_args)
    argv = [engine.model_flag, entry.model] if engine.model_flag else [entry.model]
    if engine.guard:
        argv += ["--middleware", GUARD_MIDDLEWARE]
    for flag, value in args.items():
        if value is None or value is False or f"--{flag}" in engine.reserved_flags:
            continue
        argv.append(f"--{flag}")
        if value is not True:
            argv.append(str(value))
    argv += [engine.host_flag, bind_host]
    if engine.name_flag:
        argv += [engine.name_flag, entry.name]
    return argv


@dataclass(frozen=True)
class ScriptContext:
    deployment_id: str
    replica: int
    job_dir: Path
    advertise_host: str = ""       # "" -> the node's hostname at run time
    bind_host: str = "0.0.0.0"


class ScriptRenderer:
    def __init__(self, site_dir: Optional[str] = None) -> None:
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader([str(d) for d in template_dirs(site_dir)]),
            undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True)
        self.env.filters["q"] = lambda value: shlex.quote(str(value))

    def render(self, entry: ModelEntry, resources: Resources, ctx: ScriptContext) -> str:
        try:
            template = self.env.get_template(entry.engine.template)
        except jinja2.TemplateNotFound as exc:
            raise ConfigError(f"engine {entry.engine.name}: template {exc.name!r} not found") \
                from exc
        env: Mapping[str, str] = {**entry.engine.env, **entry.env}
        return template.render(
            template_name=entry.engine.template, deployment_id=ctx.deployment_id,
            replica=ctx.replica, served_name=entry.name, engine_name=entry.engine.name,
            job_dir=str(ctx.job_dir), advertise_host=ctx.advertise_host,
            engine_setup=entry.engine.setup.strip(), model_setup=entry.setup.strip(), env=env,
            command=entry.engine.command,
            engine_args=engine_argv(entry, resources, ctx.bind_host),
            key_env=entry.engine.key_env, key_file_flag=entry.engine.key_file_flag,
            tls_cert_flag=entry.engine.tls_cert_flag, tls_key_flag=entry.engine.tls_key_flag,
            port_flag=entry.engine.port_flag, nodes=resources.nodes,
            worker_command=entry.engine.worker_command or entry.engine.command,
            distributed=entry.engine.distributed,
            engine_program=shlex.split(entry.engine.command)[0])

    def render_batch(self, entry: ModelEntry, resources: Resources, batch_id: str,
                     job_dir: Path, concurrency: int, retry_delay: float = 1.0) -> str:
        """The job script of a batch: the engine on a Unix socket in a private folder (or, for
        an engine without ``uds_flag``, on the node's loopback behind a pinned per-run
        certificate), and the batch runner."""
        try:
            template = self.env.get_template(BATCH_TEMPLATE)
        except jinja2.TemplateNotFound as exc:
            raise ConfigError(f"batch template {exc.name!r} not found") from exc
        return template.render(
            batch_id=batch_id, served_name=entry.name, engine_name=entry.engine.name,
            job_dir=str(job_dir), engine_setup=entry.engine.setup.strip(),
            model_setup=entry.setup.strip(), env={**entry.engine.env, **entry.env},
            command=entry.engine.command,
            engine_args=engine_argv(entry, resources, "127.0.0.1"),
            key_env=entry.engine.key_env, key_file_flag=entry.engine.key_file_flag,
            port_flag=entry.engine.port_flag, uds_flag=entry.engine.uds_flag,
            tls_cert_flag=entry.engine.tls_cert_flag, tls_key_flag=entry.engine.tls_key_flag,
            concurrency=concurrency, retry_delay=retry_delay)

