"""Two Jupyter servers of one user (a JupyterHub server and an Open OnDemand session, say) on one
state folder: both see the same deployments, neither cancels the other's jobs, limits count all
of them, and exactly one watches the scheduler."""
from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from lifecycle_catalog import write_catalog
from server_process import JupyterServer


def slow_sbatch(bin_dir: Path, seconds: int) -> dict[str, str]:
    """An sbatch that answers ``seconds`` late: a launch stays half-submitted that long."""
    bin_dir.mkdir(parents=True)
    real = shutil.which("sbatch")
    (bin_dir / "sbatch").write_text(f"#!/bin/bash\nsleep {seconds}\nexec {real} \"$@\"\n")
    (bin_dir / "sbatch").chmod(0o755)
    return {"PATH": f"{bin_dir}:{os.environ['PATH']}"}


def squeue_states(deployment_id: str) -> list[str]:
    out = subprocess.run(["squeue", "-h", "-o", "%j %T"], capture_output=True, text=True).stdout
    return [line.split()[1] for line in out.splitlines() if f"osire-{deployment_id}-" in line]


def eventually(check, timeout: float = 30):
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.2)


@pytest.fixture
def two_servers(slurm_cluster, tmp_path):
    shared = {"scheduler": "slurm", "catalog": str(write_catalog(tmp_path / "c.yaml")),
              "job_root": str(tmp_path / "jobs"), "db_path": str(tmp_path / "state.sqlite"),
              "monitor_fast_interval": 0.2, "max_deployments": 2}
    hub = JupyterServer(tmp_path / "hub", shared, env=slow_sbatch(tmp_path / "bin", 4))
    ood = JupyterServer(tmp_path / "ood", shared)
    yield hub, ood
    for server in (hub, ood):
        try:
            server.stop_all_deployments()
        finally:
            server.stop()


def listing(server: JupyterServer) -> dict[str, str]:
    code, body = server.request("GET", "osire/api/deployments")
    assert code == 200, body
    return {d["id"]: d["state"] for d in body["deployments"]}


def test_two_servers_share_one_state(two_servers):
    import threading
    hub, ood = two_servers
    hub.start()
    launched: dict = {}
    # The hub's sbatch answers 4 s late; the OOD session starts meanwhile and must not take the
    # half-submitted launch for one that a dead server left behind.
    thread = threading.Thread(target=lambda: launched.update(
        zip(("code", "body"), hub.request("POST", "osire/api/deployments",
                                          {"model": "fake-chat"}))))
    thread.start()
    time.sleep(1.0)
    ood.start()
    thread.join(30)
    assert launched["code"] == 201, launched
    first = launched["body"]["id"]
    assert ood.wait_state(first, {"ready"}, timeout=60)["state"] == "ready"
    assert squeue_states(first) == ["RUNNING"]

    code, second = ood.request("POST", "osire/api/deployments", {"model": "fake-chat"})
    assert code == 201, second
    eventually(lambda: set(listing(hub)) == {first, second["id"]})
    code, error = hub.request("POST", "osire/api/deployments", {"model": "fake-chat"})
    assert code == 400 and error["error"]["param"] == "max_deployments", error   # 2 in all

    watching = [s.request("GET", "osire/api/health")[1]["monitor"]["watching"]
                for s in (hub, ood)]
    assert sorted(watching) == [False, True]

    code, _ = ood.request("DELETE", f"osire/api/deployments/{first}")   # stop the hub's
    assert code == 200
    assert hub.wait_state(first, {"stopped"}, timeout=60)["state"] == "stopped"
    eventually(lambda: squeue_states(first) == [])
    assert hub.wait_state(second["id"], {"ready"}, timeout=60)["state"] == "ready"

    hub.kill()                                    # the other one takes over watching
    eventually(lambda: ood.request("GET", "osire/api/health")[1]["monitor"]["watching"],
               timeout=60)
    code, _ = ood.request("DELETE", f"osire/api/deployments/{second['id']}")
    assert code == 200
    assert ood.wait_state(second["id"], {"stopped"}, timeout=60)["state"] == "stopped"
