"""Launch -> monitor -> stop through the REST API, on real Slurm and on the local backend.

The engine is tests/fake_engine.py (fast, controllable); real vLLM is in tests/e2e.
"""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest


def squeue_ids(job_root: Path) -> set[str]:
    """Ids of jobs in Slurm whose working folder is under this test's job root."""
    out = subprocess.run(["squeue", "-h", "-t", "all", "-o", "%i %Z"], capture_output=True,
                         text=True).stdout
    return {line.split()[0] for line in out.splitlines()
            if len(line.split()) == 2 and line.split()[1].startswith(str(job_root))}


async def test_health_reports_version_and_backend(api, backend):
    code, body = await api.call("GET", "health")
    assert code == 200
    assert body["scheduler"]["name"] == backend and body["version"]
    assert "configured" in body["scheduler"]["reason"]


async def test_catalog_lists_models(api):
    code, body = await api.call("GET", "catalog")
    assert code == 200
    assert [m["name"] for m in body["models"]][:2] == ["fake-chat", "fake-slow-start"]
    assert "command" not in json.dumps(body)


async def test_launch_ready_stop(api, backend, osire_dirs):
    d = await api.launch("fake-slow-start")
    assert d["state"] == "queued" and d["replicas"][0]["job_id"]
    ready = await api.wait(d["id"], {"ready", "failed"})
    assert ready["state"] == "ready", ready
    assert "starting" in ready["seen"]
    replica = ready["replicas"][0]
    assert replica["port"] and replica["host"] and replica["ready_at"] >= replica["started_at"]
    job_dir = Path(replica["folder"])
    assert (job_dir / "key").stat().st_mode & 0o777 == 0o600
    key = (job_dir / "key").read_text()
    script = (job_dir / "job.sh").read_text() if (job_dir / "job.sh").exists() else ""
    assert key not in script and key not in (job_dir / "job.log").read_text()
    if backend == "slurm":
        shown = subprocess.run(["scontrol", "show", "job", replica["job_id"]],
                               capture_output=True, text=True).stdout
        assert key not in shown

    code, logs = await api.call("GET", "deployments", d["id"], "logs", tail="5")
    assert code == 200 and any("starting engine" in l for l in logs["replicas"][0]["lines"])

    code, body = await api.call("DELETE", "deployments", d["id"])
    assert code == 200 and body["state"] in ("stopping", "stopped")
    stopped = await api.wait(d["id"], {"stopped"})
    assert stopped["replicas"][0]["state"] == "stopped"
    code, again = await api.call("DELETE", "deployments", d["id"])
    assert code == 200 and again["state"] == "stopped"
    if backend == "slurm":
        assert _state(replica["job_id"]) in ("", "CANCELLED", "COMPLETED")


def _state(job_id: str) -> str:
    return subprocess.run(["squeue", "-h", "-t", "all", "-j", job_id, "-o", "%T"],
                          capture_output=True, text=True).stdout.strip()


async def test_engine_exit_at_start_fails_with_log_tail(api):
    d = await api.launch("fake-crash")
    failed = await api.wait(d["id"], {"failed", "ready"})
    assert failed["state"] == "failed", failed
    replica = failed["replicas"][0]
    assert "exit code 3" in failed["reason"] or "exited" in failed["reason"], failed["reason"]
    assert "fake engine" in (replica["log_tail"] or "").lower() or replica["log_tail"], replica


async def test_job_cancelled_outside_is_noticed(api, backend):
    d = await api.launch("fake-chat")
    ready = await api.wait(d["id"], {"ready", "failed"})
    job_id = ready["replicas"][0]["job_id"]
    if backend == "slurm":
        subprocess.run(["scancel", job_id], check=True)
    else:
        status = json.loads((Path(ready["replicas"][0]["folder"]) / "local_job.json").read_text()) \
            if (Path(ready["replicas"][0]["folder"]) / "local_job.json").exists() else None
        pgid = status and status.get("job_pgid")
        if not pgid:
            pytest.skip("local job record has no pid to signal from outside")
        os.killpg(int(pgid), 15)
    failed = await api.wait(d["id"], {"failed"})
    assert "cancelled outside" in failed["reason"] or "signal" in failed["reason"], failed


@pytest.mark.parametrize("body, status, param", [
    ({"model": "nope"}, 404, "model"),
    ({"model": "fake-chat", "resources": {"gpus": 3}}, 400, "resources.gpus"),
    ({"model": "fake-chat", "resources": {"gpus": 2, "nodes": 2}}, 400, "resources.gpus"),
    ({"model": "fake-chat", "resources": {"gpus": "1"}}, 400, "resources.gpus"),
    ({"model": "fake-chat", "resources": {"nodes": 0}}, 400, "resources.nodes"),
    ({"model": "fake-chat", "resources": {"time": "02:00:00"}}, 400, "resources.time"),
    ({"model": "fake-chat", "resources": {"partition": "a\n#SBATCH --uid=0"}}, 400,
     "resources.partition"),
    ({"model": "fake-chat", "replicas": 9}, 400, "replicas"),
    ({"model": "fake-chat", "replicas": "2"}, 400, "replicas"),
    ({"model": "fake-chat", "colour": "red"}, 400, "colour"),
    ({"model": 3}, 400, "model"),
    ("{not json", 400, "body"),
    ("[1]", 400, "body"),
])
async def test_rejected_launch_submits_nothing(api, backend, osire_dirs, body, status, param):
    before = squeue_ids(osire_dirs["jobs"]) if backend == "slurm" else set()
    code, error = await api.call("POST", "deployments", body=body)
    assert code == status, error
    assert error["error"]["param"] == param and error["error"]["message"]
    assert "nope" not in str(body) or "fake-chat" in error["error"]["message"]
    code, listing = await api.call("GET", "deployments")
    assert listing["deployments"] == []
    assert not osire_dirs["jobs"].exists() or not any(osire_dirs["jobs"].iterdir())
    if backend == "slurm":
        assert squeue_ids(osire_dirs["jobs"]) == before


async def test_null_resources_mean_the_catalog_default(api, backend):
    nulls = {"time": None, "partition": None, "account": None, "gpus": None, "nodes": None,
             "cpus": None}
    d = await api.launch("fake-chat", resources=nulls)
    assert d["resources"]["time"] == "00:10:00" and d["resources"]["gpus"] == 0
    assert d["resources"]["nodes"] == 1 and d["resources"]["cpus"] == 1
    if backend == "slurm":  # and that is what Slurm was asked for
        job_id = d["replicas"][0]["job_id"]
        limit = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%l"], capture_output=True,
                               text=True).stdout.strip()
        assert limit == "10:00", limit


async def test_too_many_deployments(api):
    for _ in range(3):
        await api.launch("fake-chat")
    code, error = await api.call("POST", "deployments", body={"model": "fake-chat"})
    assert code == 400 and error["error"]["param"] == "max_deployments"


async def test_unknown_deployment_and_bad_tail(api):
    code, error = await api.call("GET", "deployments", "nope")
    assert code == 404 and error["error"]["code"] == "not_found"
    code, error = await api.call("DELETE", "deployments", "nope")
    assert code == 404
    d = await api.launch("fake-chat")
    code, error = await api.call("GET", "deployments", d["id"], "logs", tail="lots")
    assert code == 400 and error["error"]["param"] == "tail"


async def test_submit_rejected_by_scheduler_keeps_nothing(api, backend, osire_dirs):
    if backend != "slurm":
        pytest.skip("only Slurm rejects an unknown partition")
    before = squeue_ids(osire_dirs["jobs"])
    code, error = await api.call("POST", "deployments",
                                 body={"model": "fake-chat", "resources": {"partition": "nosuch"}})
    assert code in (400, 503), error
    assert "partition" in error["error"]["message"].lower()
    code, listing = await api.call("GET", "deployments")
    assert listing["deployments"] == [] and squeue_ids(osire_dirs["jobs"]) == before


async def test_time_limit_ends_as_failed_time_limit(api, backend):
    if backend != "slurm":
        pytest.skip("the local backend's time limits are covered by the scheduler contract suite")
    d = await api.launch("fake-one-minute")        # Slurm kills it 60-90 s after it starts
    failed = await api.wait(d["id"], {"failed"}, timeout=180)
    assert failed["reason"].startswith("time limit"), failed
    assert failed["replicas"][0]["scheduler_state"] == "TIMEOUT"


async def test_admin_counts_and_log_level(api, backend):
    if backend != "local":
        pytest.skip("backend-independent")
    await api.launch("fake-chat")
    code, admin = await api.call("GET", "admin")
    assert code == 200 and sum(admin["counts"].values()) == 1 and admin["scheduler"] == "local"
    code, body = await api.call("PUT", "admin", body={"log_level": "debug"})
    assert code == 200 and body == {"log_level": "DEBUG"}
    code, admin = await api.call("GET", "admin")
    assert admin["log_level"] == "DEBUG"
    code, error = await api.call("PUT", "admin", body={"log_level": "LOUD"})
    assert code == 400 and error["error"]["param"] == "log_level"
