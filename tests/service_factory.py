"""A DeploymentService built directly (no Jupyter server), for core-level fault tests."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from jupyter_osire_llm.core.catalog import parse_catalog
from jupyter_osire_llm.deployments.service import DeploymentService
from jupyter_osire_llm.core.render import ScriptRenderer
from jupyter_osire_llm.schedulers.base import Scheduler
from jupyter_osire_llm.schedulers.local import LocalScheduler
from jupyter_osire_llm.core.limits import SiteLimits
from jupyter_osire_llm.core.store import Store


def one_model_catalog(command: str, name: str = "m", **engine: Any):
    """A catalog with one model whose engine is ``command`` (any OpenAI-style server, unguarded;
    its key from $VLLM_API_KEY, plain HTTP unless ``engine`` says how it takes a certificate)."""
    return parse_catalog({"engines": {"e": {"command": command, "kind": "openai",
                                            "guard": False, "key_env": "VLLM_API_KEY",
                                            "insecure": True, **engine}},
                          "models": [{"name": name, "model": "/m", "engine": "e"}]})


def make_service(tmp_path: Path, catalog, scheduler: Optional[Scheduler] = None,
                 limits: SiteLimits = SiteLimits(), job_root: Optional[Path] = None,
                 **options: Any) -> DeploymentService:
    return DeploymentService(catalog=catalog, limits=limits,
                             scheduler=scheduler or LocalScheduler(tmp_path / "local"),
                             store=Store(tmp_path / "s.sqlite"), renderer=ScriptRenderer(),
                             job_root=job_root or tmp_path / "jobs", **options)


async def cycles_until(monitor, done, limit: int = 100, pause: float = 0.1) -> None:
    """Run monitor cycles until ``done()`` is true (at most ``limit`` cycles)."""
    import asyncio
    for _ in range(limit):
        await monitor.cycle()
        if done():
            return
        await asyncio.sleep(pause)
    raise AssertionError("condition not reached")
