"""The Jupyter server dies and comes back: every deployment is found again and reconciled."""
from __future__ import annotations

import subprocess

import pytest

from lifecycle_catalog import write_catalog
from server_process import JupyterServer


@pytest.fixture(params=["slurm", "local"])
def server(request, tmp_path):
    if request.param == "slurm":
        request.getfixturevalue("slurm_cluster")
    osire = {"scheduler": request.param, "catalog": str(write_catalog(tmp_path / "c.yaml")),
             "job_root": str(tmp_path / "jobs"), "db_path": str(tmp_path / "state.sqlite"),
             "monitor_fast_interval": 0.2, "local_gpus": 2}
    srv = JupyterServer(tmp_path / "server", osire)
    yield srv
    srv.stop_all_deployments()
    srv.stop()


def jobs_named(deployment_id: str) -> list[str]:
    out = subprocess.run(["squeue", "-h", "-o", "%i %j"], capture_output=True, text=True).stdout
    return [l.split()[0] for l in out.splitlines() if f"osire-{deployment_id}-" in l]


def test_restart_reattaches_without_loss_or_duplicates(server, request):
    backend = server.osire["scheduler"]
    server.start()
    code, crashing = server.request("POST", "osire/api/deployments", {"model": "fake-crash"})
    assert code == 201, crashing
    # The test node has 2 CPUs: on Slurm one replica beside the crashing job.
    replicas = 2 if backend == "local" else 1
    code, queued = server.request("POST", "osire/api/deployments",
                                  {"model": "fake-chat", "replicas": replicas})
    assert code == 201, queued
    ready = server.wait_state(queued["id"], {"ready"})
    jobs = [r["job_id"] for r in ready["replicas"]]

    server.kill()                                        # abrupt: no clean shutdown
    server.start()
    code, listing = server.request("GET", "osire/api/deployments")
    assert code == 200
    assert [d["id"] for d in listing["deployments"]] == [crashing["id"], queued["id"]]
    again = server.wait_state(queued["id"], {"ready"})
    assert [r["job_id"] for r in again["replicas"]] == jobs
    failed = server.wait_state(crashing["id"], {"failed"})   # it ended while nobody looked
    assert failed["reason"]
    if backend == "slurm":
        assert sorted(jobs_named(queued["id"])) == sorted(jobs)

    code, stopped = server.request("DELETE", f"osire/api/deployments/{queued['id']}")
    assert code == 200
    server.wait_state(queued["id"], {"stopped"})
    if backend == "slurm":
        out = subprocess.run(["squeue", "-h", "-t", "R,PD", "-o", "%j"], capture_output=True,
                             text=True).stdout
        assert f"osire-{queued['id']}" not in out
