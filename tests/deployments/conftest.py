"""A Jupyter server with the extension, on a chosen scheduler backend, and a small REST client."""
from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest

from lifecycle_catalog import write_catalog



@pytest.fixture(params=["slurm", "local"])
def backend(request) -> str:
    if request.param == "slurm":
        request.getfixturevalue("slurm_cluster")
    return request.param


@pytest.fixture
def osire_dirs(tmp_path) -> dict[str, Path]:
    dirs = {"jobs": tmp_path / "jobs", "db": tmp_path / "state" / "state.sqlite"}
    dirs["catalog"] = write_catalog(tmp_path / "catalog.yaml")
    return dirs


@pytest.fixture
def osire_config(backend, osire_dirs) -> dict[str, Any]:
    return {"scheduler": backend, "catalog": str(osire_dirs["catalog"]),
            "job_root": str(osire_dirs["jobs"]), "db_path": str(osire_dirs["db"]),
            "monitor_fast_interval": 0.2, "monitor_slow_interval": 1.0, "max_gpus": 2,
            "max_deployments": 3, "max_time": "01:00:00", "local_gpus": 2,
            # the state machine as such: no restart, no renewal (test_policies.py tests those)
            "max_restarts": 0, "renew_before": 0}


@pytest.fixture
def jp_server_config(osire_config):
    return {"ServerApp": {"jpserver_extensions": {"jupyter_osire_llm": True}},
            "OsireLLM": osire_config}


class Client:
    """The REST API as a test sees it; errors come back as (status, body), never raised."""

    def __init__(self, fetch) -> None:
        self.fetch = fetch

    async def call(self, method: str, *path: str, body: Any = None, **params: Any):
        kwargs: dict[str, Any] = {"method": method, "raise_error": False}
        if body is not None:
            kwargs["body"] = body if isinstance(body, str) else json.dumps(body)
        if params:
            kwargs["params"] = params
        response = await self.fetch("osire", "api", *path, **kwargs)
        text = response.body.decode() if response.body else ""
        return response.code, (json.loads(text) if text else None)

    async def launch(self, model: str, **extra: Any) -> dict:
        code, body = await self.call("POST", "deployments", body={"model": model, **extra})
        assert code == 201, body
        return body

    async def wait(self, deployment_id: str, states: set[str], timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        seen = []
        while True:
            code, body = await self.call("GET", "deployments", deployment_id)
            assert code == 200, body
            if not seen or seen[-1] != body["state"]:
                seen.append(body["state"])
            if body["state"] in states:
                body["seen"] = seen
                return body
            if time.monotonic() > deadline:
                raise AssertionError(f"{deployment_id} still {body['state']} after {timeout}s "
                                     f"(seen {seen}): {body}")
            await asyncio.sleep(0.1)


@pytest.fixture
def api(jp_serverapp, jp_fetch, jp_asyncio_loop) -> Client:
    # pytest-jupyter runs async tests on its own loop and never runs extension start hooks.
    jp_asyncio_loop.run_until_complete(jp_serverapp._post_start())
    yield Client(jp_fetch)
    ctx = jp_serverapp.web_app.settings.get("osire")   # None: switched off by a bad setting
    for d in ctx.service.all() if ctx else []:           # never leave jobs behind
        if d.live:
            try:
                jp_asyncio_loop.run_until_complete(ctx.service.stop(d.id))
            except Exception:
                pass
