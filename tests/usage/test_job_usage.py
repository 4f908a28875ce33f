"""GPU hours and billing of a finished deployment, recorded by the monitor when its job ends:
on the real Slurm test cluster (accounting with slurmdbd, TRESBillingWeights on its partition)
checked against ``sacct`` of the job, and on the local backend (no billing)."""
from __future__ import annotations

import asyncio
import json
import subprocess
import time

import pytest

from lifecycle_catalog import write_catalog


@pytest.fixture(params=["slurm", "local"])
def backend(request) -> str:
    if request.param == "slurm":
        request.getfixturevalue("slurm_cluster")
    return request.param


@pytest.fixture
def jp_server_config(tmp_path, backend):
    return {"ServerApp": {"jpserver_extensions": {"jupyter_osire_llm": True}},
            "OsireLLM": {"scheduler": backend,
                         "catalog": str(write_catalog(tmp_path / "catalog.yaml")),
                         "job_root": str(tmp_path / "jobs"),
                         "db_path": str(tmp_path / "state" / "state.sqlite"),
                         "monitor_fast_interval": 0.2, "monitor_slow_interval": 1.0,
                         "max_gpus": 2, "local_gpus": 2, "max_time": "01:00:00",
                         "max_restarts": 0, "renew_before": 0}}


@pytest.fixture
def call(jp_serverapp, jp_fetch, jp_asyncio_loop):
    jp_asyncio_loop.run_until_complete(jp_serverapp._post_start())   # the monitor runs

    async def call(method: str, *path: str, body=None, **params):
        kwargs = {"method": method, "raise_error": False}
        if body is not None:
            kwargs["body"] = json.dumps(body)
        if params:
            kwargs["params"] = params
        response = await jp_fetch("osire", "api", *path, **kwargs)
        return response.code, json.loads(response.body or b"null")
    ctx = jp_serverapp.web_app.settings["osire"]
    call.context = ctx
    yield call
    for d in ctx.service.all():
        if d.live:
            jp_asyncio_loop.run_until_complete(ctx.service.stop(d.id))


async def wait_state(call, deployment_id: str, states: set[str], timeout: float = 90) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        code, body = await call("GET", "deployments", deployment_id)
        assert code == 200, body
        if body["state"] in states:
            return body
        assert time.monotonic() < deadline, body
        await asyncio.sleep(0.2)


def sacct(job_id: str) -> tuple[int, dict[str, str]]:
    out = subprocess.run(["sacct", "-n", "-P", "-X", "-j", job_id,
                          "--format=ElapsedRaw,AllocTRES"], capture_output=True, text=True,
                         check=True).stdout.strip().splitlines()[0]
    elapsed, tres = out.split("|")
    return int(elapsed), dict(part.split("=", 1) for part in tres.split(",") if "=" in part)


def pending(call) -> int:
    """Jobs whose record still waits for the scheduler's figures (this server's monitor)."""
    return call.context.usage.pending_jobs()


async def test_a_finished_deployment_s_gpu_hours_and_billing(call, backend):
    code, deployment = await call("POST", "deployments", body={"model": "fake-gpu",
                                                                "replicas": 2})
    assert code == 201, deployment
    ready = await wait_state(call, deployment["id"], {"ready", "failed"})
    assert ready["state"] == "ready", ready
    await asyncio.sleep(2)
    code, _ = await call("DELETE", "deployments", deployment["id"])
    assert code in (200, 202)
    stopped = await wait_state(call, deployment["id"], {"stopped", "failed"})
    jobs = [r["job_id"] for r in stopped["replicas"]]   # each replica counts
    assert len(jobs) == 2

    deadline = time.monotonic() + 120
    while True:   # recorded when the job ends; settled once accounting has the job
        code, body = await call("GET", "usage")
        assert code == 200, body
        rows = [r for r in body["usage"] if r["model"] == "fake-gpu"]
        gpu_hours = sum(r["gpu_hours"] for r in rows)
        billing = [r["billing"] for r in rows if r["billing"] is not None]
        settled = backend == "local" or len(billing) and all(
            r["billing"] is not None for r in rows) and pending(call) == 0
        if gpu_hours and settled:
            break
        assert time.monotonic() < deadline, body
        await asyncio.sleep(1)
    if backend == "local":
        assert billing == [] and 0 < gpu_hours < 0.1     # 1 GPU for a few seconds
        return
    accounted = [sacct(job_id) for job_id in jobs]
    assert all(int(tres["gres/gpu"]) == 1 and elapsed >= 2 for elapsed, tres in accounted)
    want_gpu_hours = sum(int(t["gres/gpu"]) * e / 3600 for e, t in accounted)
    want_billing = sum(float(t["billing"]) * e / 3600 for e, t in accounted)
    assert gpu_hours == pytest.approx(want_gpu_hours, abs=4e-6)
    assert sum(billing) == pytest.approx(want_billing, abs=4e-6)
    assert body["totals"]["gpu_hours"] == pytest.approx(gpu_hours, abs=4e-6)
    print(f"jobs {jobs}: sacct {accounted}; usage gpu_hours {gpu_hours} (sacct "
          f"{want_gpu_hours:.6f}), billing {sum(billing)} (sacct {want_billing:.6f})")
