"""The extension's services without a Jupyter server, wired by ``build_context``, for
core-level fault tests."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from jupyter_osire_llm.core.catalog import Catalog, parse_catalog
from jupyter_osire_llm.deployments.service import DeploymentService
from jupyter_osire_llm.schedulers.base import Scheduler
from jupyter_osire_llm.schedulers.local import LocalScheduler
from jupyter_osire_llm.server.context import OsireContext
from jupyter_osire_llm.server.settings import OsireSettings, Timing
from jupyter_osire_llm.server.wiring import build_context


def one_model_catalog(command: str, name: str = "m", **engine: Any):
    """A catalog with one model whose engine is ``command`` (any OpenAI-style server, unguarded;
    its key from $VLLM_API_KEY, plain HTTP unless ``engine`` says how it takes a certificate)."""
    return parse_catalog({"engines": {"e": {"command": command, "kind": "openai",
                                            "guard": False, "key_env": "VLLM_API_KEY",
                                            "insecure": True, **engine}},
                          "models": [{"name": name, "model": "/m", "engine": "e"}]})


def make_context(tmp_path: Path, catalog: Catalog, scheduler: Optional[Scheduler] = None, *,
                 job_root: Optional[Path] = None, db_path: Optional[Path] = None,
                 timing: Timing = Timing(), server_id: Optional[str] = None,
                 **settings: Any) -> OsireContext:
    """Every service, wired by the extension's own ``build_context``: ``scheduler`` (default: a
    local one under ``tmp_path``) and ``catalog`` passed in, ``settings`` as ``c.OsireLLM``
    names them. Failed replicas are not restarted unless ``max_restarts`` says so: the fault
    tests watch one failure."""
    settings.setdefault("max_restarts", 0)
    return build_context(
        OsireSettings(job_root=str(job_root or tmp_path / "jobs"),
                      db_path=str(db_path or tmp_path / "s.sqlite"), **settings),
        scheduler=scheduler or LocalScheduler(tmp_path / "local"), catalog=catalog,
        timing=timing, server_id=server_id)


def make_service(tmp_path: Path, catalog: Catalog, scheduler: Optional[Scheduler] = None,
                 **options: Any) -> DeploymentService:
    """The deployment service of ``make_context``."""
    return make_context(tmp_path, catalog, scheduler, **options).service


async def cycles_until(monitor, done, limit: int = 100, pause: float = 0.1) -> None:
    """Run monitor cycles until ``done()`` is true (at most ``limit`` cycles)."""
    import asyncio
    for _ in range(limit):
        await monitor.cycle()
        if done():
            return
        await asyncio.sleep(pause)
    raise AssertionError("condition not reached")
