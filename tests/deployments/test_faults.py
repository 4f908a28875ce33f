"""Slurm and engines misbehaving while a deployment lives: nothing forgotten, nothing wrong shown."""
from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from jupyter_osire_llm.server.settings import Timing
from service_factory import make_context, make_service, one_model_catalog

REPO = Path(__file__).resolve().parents[2]


def cluster(command: str) -> None:
    subprocess.run(["bash", str(REPO / "scripts" / "slurm-cluster.sh"), command], check=True,
                   capture_output=True, timeout=120)


@pytest.fixture
def osire_config(osire_config):
    return {**osire_config, "command_timeout": 3.0}


async def wait_health(api, predicate, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        code, health = await api.call("GET", "health")
        if predicate(health):
            return health
        assert time.monotonic() < deadline, health
        await asyncio.sleep(0.2)


@pytest.mark.cluster_exclusive
async def test_controller_outage_keeps_state_and_recovers(api, backend):
    if backend != "slurm":
        pytest.skip("the local backend has no controller")
    d = await api.launch("fake-chat")
    ready = await api.wait(d["id"], {"ready"})
    cluster("stop-ctld")
    try:
        health = await wait_health(api, lambda h: h["scheduler"]["last_error"])
        assert "controller" in health["scheduler"]["last_error"].lower() or \
            "answer" in health["scheduler"]["last_error"]
        code, during = await api.call("GET", "deployments", d["id"])
        assert code == 200 and during["state"] == "ready"          # last known state kept
        assert during["replicas"][0]["job_id"] == ready["replicas"][0]["job_id"]
        code, error = await api.call("POST", "deployments", body={"model": "fake-chat"})
        assert code == 503 and error["error"]["type"] == "scheduler_error", error
        code, listing = await api.call("GET", "deployments")
        assert [x["id"] for x in listing["deployments"]] == [d["id"]]  # the refused one left nothing
    finally:
        cluster("start-ctld")
    await wait_health(api, lambda h: h["scheduler"]["last_error"] is None)
    code, _ = await api.call("DELETE", "deployments", d["id"])
    assert code == 200
    await api.wait(d["id"], {"stopped"})


async def test_unhealthy_engine_leaves_rotation_and_returns(api, backend, jp_serverapp, tmp_path):
    if backend != "local":
        pytest.skip("backend-independent: the monitor's health checks")
    ctx = jp_serverapp.web_app.settings["osire"]
    ctx.probes.health_interval = 0.2
    d = await api.launch("fake-chat")
    ready = await api.wait(d["id"], {"ready"})
    assert [e.replica for e in ctx.service.ready_endpoints("fake-chat")]
    # Freeze the engine (its own process group, started by the job script) behind the monitor's
    # back: /health stops answering.
    endpoint = json.loads((Path(ready["replicas"][0]["folder"]) / "endpoint.json").read_text())
    engine_group = os.getpgid(endpoint["pid"])
    os.killpg(engine_group, signal.SIGSTOP)
    try:
        deadline = time.monotonic() + 20
        while ctx.service.ready_endpoints("fake-chat"):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
        status = ctx.service.model_status("fake-chat")
        assert status.state == "ready"   # still a ready deployment, just not callable now
    finally:
        os.killpg(engine_group, signal.SIGCONT)
    deadline = time.monotonic() + 20
    while not ctx.service.ready_endpoints("fake-chat"):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.1)


def test_garbage_endpoint_file_is_ignored_not_fatal(tmp_path, caplog):
    """An engine (or anything) that writes nonsense into endpoint.json: warned, never a crash."""
    catalog = one_model_catalog(
        "bash -c 'sleep 0.5; echo \"{not json\" > endpoint.json; sleep 30'", name="odd")

    async def scenario() -> None:
        context = make_context(tmp_path, catalog, engine_host="127.0.0.1",
                               timing=Timing(health_timeout=0.5))
        service, monitor = context.service, context.monitor
        d = await service.launch("odd")
        try:
            for _ in range(30):
                await monitor.cycle()
                await asyncio.sleep(0.1)
            assert service.get(d.id).state == "starting"
        finally:
            await service.stop(d.id)
            await monitor.stop()

    monitor_log = logging.getLogger("jupyter_osire_llm.deployments.monitor")
    monitor_log.addHandler(caplog.handler)   # the extension may have re-parented its loggers
    try:
        asyncio.run(scenario())
    finally:
        monitor_log.removeHandler(caplog.handler)
    assert "unreadable endpoint file" in caplog.text


def test_only_the_newest_finished_deployments_are_kept(tmp_path):
    """Deterministic: each job really ends (the scheduler says so, the runner is done with its
    folder) before the next launch; only then may pruning remove a folder."""
    catalog = one_model_catalog("true")

    def make():
        return make_context(tmp_path, catalog, max_deployments=10, keep_finished=2,
                            monitor_fast_interval=0.05)

    async def scenario() -> list[str]:
        context = make()
        service, monitor = context.service, context.monitor
        ids = []
        for _ in range(4):
            d = await service.launch("m")
            ids.append(d.id)
            for _ in range(200):
                await monitor.cycle()
                if not service.get(d.id).live:
                    break
                await asyncio.sleep(0.05)
            assert service.get(d.id).state == "failed"   # exited before it became ready
        await monitor.stop()
        return ids

    ids = asyncio.run(scenario())
    kept = [d.id for d in make().service.all()]
    assert kept == ids[2:]
    assert sorted(p.name for p in (tmp_path / "jobs").iterdir()) == sorted(ids[2:])


def test_unusable_job_root_is_a_clear_error_and_keeps_nothing(tmp_path):
    from jupyter_osire_llm.errors import ConfigError

    (tmp_path / "a-file").write_text("not a folder")
    service = make_service(tmp_path, one_model_catalog("true"),
                           job_root=tmp_path / "a-file" / "jobs")
    with pytest.raises(ConfigError) as err:
        asyncio.run(service.launch("m"))
    assert "job_root" in err.value.message and "a-file" in err.value.message
    assert service.all() == []
