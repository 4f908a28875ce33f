"""``POST /osire/api/deployments/estimate``: the launch body answered without submitting
anything: fit, limits, Slurm's expected start (``sbatch --test-only``), GPU hours and billing from
the partition's TRESBillingWeights (the test cluster's: CPU=1.0, Mem=0.25G, GRES/gpu=2.0), checked
against the billing Slurm gives the same request once it has run."""
from __future__ import annotations

import subprocess
import time
from datetime import datetime
from pathlib import Path

import pytest

from jupyter_osire_llm.schedulers.base import Job
from jupyter_osire_llm.schedulers.slurm.cli import SlurmCLI
from lifecycle_catalog import dirs_with_catalog
from test_lifecycle import squeue_ids

CONFIGS = Path(__file__).resolve().parents[1] / "sizing" / "configs"
MODELS = f"""  - name: llama-3-8b
    model: {CONFIGS / "llama-3-8b"}
    engine: fake
    resources: {{gpus: 1, time: "00:10:00", cpus: 1}}
"""
GPU_REQUEST = {"model": "fake-gpu", "resources": {"cpus": 2, "memory": "1G", "gpus": 1,
                                                  "time": "00:10:00"}}


@pytest.fixture
def osire_dirs(tmp_path) -> dict[str, Path]:
    return dirs_with_catalog(tmp_path, "", MODELS)


@pytest.fixture
def osire_config(osire_config):
    return {**osire_config, "gpu_types": {"small": {"memory": "10G"}}, "billing_price": 0.5,
            "billing_currency": "EUR", "max_gpus": 2, "confirm_start_after": 300}


def _nothing_submitted(before: set, dirs: dict, listing: dict) -> None:
    assert listing["deployments"] == []
    assert squeue_ids(dirs["jobs"]) == before


@pytest.mark.parametrize("backend", ["slurm"], indirect=True)
async def test_a_fitting_request_starts_now_and_bills_as_slurm_does(api, backend, osire_dirs):
    before = squeue_ids(osire_dirs["jobs"])
    code, est = await api.call("POST", "deployments", "estimate", body=GPU_REQUEST)
    assert code == 200, est
    assert est["within_limits"] is True and est["limits_reason"] is None
    assert est["fits"] is None    # the fake model has no files to size
    start = datetime.fromisoformat(est["start"]).timestamp()
    assert abs(start - time.time()) < 120 and est["nodes"] and est["confirm"] is None
    assert est["gpu_hours"] == pytest.approx(1 / 6, abs=0.001)
    # 2 CPUs x 1.0 + 1 GB x 0.25 + 1 GPU x 2.0 = 4.25 -> 4 units, for 10 minutes
    assert est["billing"] == {"units": 4, "unit_hours": pytest.approx(0.667, abs=0.001),
                              "price": pytest.approx(0.33, abs=0.01), "currency": "EUR"}
    assert est["summary"].startswith("starts now on ") and "1 GPU x 0.166667 h" in est["summary"]
    _nothing_submitted(before, osire_dirs, (await api.call("GET", "deployments"))[1])
    launched = await api.launch(**GPU_REQUEST)   # the same request, for real
    launched = await api.wait(launched["id"], {"ready"})
    job = launched["replicas"][0]["job_id"]
    await api.call("DELETE", "deployments", launched["id"])
    await api.wait(launched["id"], {"stopped", "failed"})
    usage, deadline = None, time.monotonic() + 60
    while usage is None and time.monotonic() < deadline:
        usage = SlurmCLI().job_usage(Job(job, Path(launched["replicas"][0]["folder"])))
        time.sleep(1)
    if usage is None:
        pytest.skip("no accounting record of the job")
    assert usage.billing == est["billing"]["units"] and usage.gpus == 1


@pytest.mark.parametrize("backend", ["slurm"], indirect=True)
async def test_a_request_that_does_not_fit_or_is_over_a_limit_says_why(api, backend):
    code, est = await api.call("POST", "deployments", "estimate", body={"model": "llama-3-8b"})
    assert code == 200, est
    assert est["fits"] is False and "does not fit" in est["fit_reason"]
    assert est["confirm"] == est["fit_reason"]
    code, est = await api.call("POST", "deployments", "estimate",
                               body={"model": "fake-gpu", "resources": {"gpus": 3}})
    assert code == 200 and est["within_limits"] is False and "gpus" in est["limits_reason"]


@pytest.mark.cluster_exclusive
@pytest.mark.parametrize("backend", ["slurm"], indirect=True)
async def test_while_the_gpus_are_taken_the_start_is_later(api, backend, tmp_path):
    tmp_path.chmod(0o755)
    blocker = subprocess.run(["sbatch", "--parsable", "--gres=gpu:2", "--time=20", "-o",
                              "/dev/null", "--wrap", "sleep 600"], capture_output=True, text=True,
                             check=True).stdout.strip()
    try:
        for _ in range(50):
            if subprocess.run(["squeue", "-h", "-j", blocker, "-o", "%T"], capture_output=True,
                              text=True).stdout.strip() == "RUNNING":
                break
            time.sleep(0.2)
        code, est = await api.call("POST", "deployments", "estimate", body=GPU_REQUEST)
    finally:
        subprocess.run(["scancel", blocker], check=False)
    assert code == 200, est
    wait = datetime.fromisoformat(est["start"]).timestamp() - time.time()
    assert 15 * 60 < wait < 25 * 60, est          # when the 20-minute job ends
    assert est["summary"].startswith("starts in about ") and "minutes" in est["summary"]
    assert est["confirm"].startswith("it would start in about"), est


@pytest.mark.parametrize("backend", ["slurm"], indirect=True)
@pytest.mark.parametrize("body, status, param", [
    ({"model": "nope"}, 404, "model"),
    ({"model": "fake-gpu", "resources": {"gpus": "x"}}, 400, "resources.gpus"),
    ({"model": "fake-gpu", "resources": {"partition": "nowhere"}}, 400, None),
    ({"model": "fake-gpu", "replicas": 0}, 400, "replicas"),
    ({"model": "fake-gpu", "colour": 1}, 400, "colour"),
])
async def test_bad_requests_are_refused_as_a_launch_refuses_them(api, backend, osire_dirs, body,
                                                                 status, param):
    before = squeue_ids(osire_dirs["jobs"])
    code, error = await api.call("POST", "deployments", "estimate", body=body)
    assert code == status, error
    assert error["error"]["param"] == param and error["error"]["message"]
    if param is None:
        assert "partition" in error["error"]["message"]
    _nothing_submitted(before, osire_dirs, (await api.call("GET", "deployments"))[1])


@pytest.mark.parametrize("backend", ["local"], indirect=True)
async def test_the_local_backend_says_it_cannot_tell_when(api, backend):
    code, est = await api.call("POST", "deployments", "estimate", body={"model": "fake-chat"})
    assert code == 200, est
    assert est["start"] is None and "cannot tell" in est["start_reason"]
    assert est["billing"] is None and est["summary"].startswith("start time unknown")
