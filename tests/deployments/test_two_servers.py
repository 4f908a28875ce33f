"""Two Jupyter servers of one user (a JupyterHub server and an Open OnDemand session, say) on one
state folder: both see the same deployments, neither cancels the other's jobs, limits count all
of them, and exactly one watches the scheduler."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
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


# -- a watch cycle that outlives its lease; jobs of another backend or cluster -----------------

FAILS_ONCE_ENGINE = """  fails-once:
    command: {command}
    kind: openai
    guard: false
    key_env: VLLM_API_KEY
    tls_cert_flag: --ssl-certfile
    tls_key_flag: --ssl-keyfile
    setup: |
      if [ ! -e {marker} ]; then touch {marker}; echo "first start fails" >&2; exit 1; fi
"""
FAILS_ONCE_MODEL = """  - name: fails-once
    model: /models/fake
    engine: fails-once
    resources: {time: "00:10:00", cpus: 1}
"""


def wrapper(bin_dir: Path, name: str, body: str) -> dict[str, str]:
    """``name`` on PATH in ``bin_dir``, running ``body`` (``$REAL`` is the real command)."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    path = bin_dir / name
    path.write_text(f"#!/bin/bash\nREAL={shutil.which(name)}\n{body}\n")
    path.chmod(0o755)
    return {"PATH": f"{bin_dir}:{os.environ['PATH']}"}


def monitor(server: JupyterServer) -> dict:
    code, body = server.request("GET", "osire/api/health")
    assert code == 200, body
    return body["monitor"]


def replica(server: JupyterServer, deployment_id: str) -> dict:
    code, body = server.request("GET", f"osire/api/deployments/{deployment_id}")
    assert code == 200, body
    return body["replicas"][0]


def job_ids(deployment_id: str) -> list[str]:
    out = subprocess.run(["squeue", "-h", "-o", "%i %j"], capture_output=True, text=True).stdout
    return [line.split()[0] for line in out.splitlines() if f"osire-{deployment_id}-" in line]


def test_a_watch_cycle_that_outlived_its_lease_does_not_act(slurm_cluster, tmp_path):
    """The watcher's squeue hangs past its lease; the other server takes over, sees the job
    fail and restarts it; then the stale answer arrives. It must not be acted on (before: the
    old job's failure was written onto the new job's replica, which was restarted again and
    its job left running untracked)."""
    from lifecycle_catalog import FAKE_ENGINE, dirs_with_catalog
    python_engine = f"{sys.executable} {FAKE_ENGINE}"
    catalog = dirs_with_catalog(tmp_path, FAILS_ONCE_ENGINE.format(
        command=python_engine, marker=tmp_path / "failed-once"), FAILS_ONCE_MODEL)["catalog"]
    shared = {"scheduler": "slurm", "catalog": str(catalog), "job_root": str(tmp_path / "jobs"),
              "db_path": str(tmp_path / "state.sqlite"), "monitor_fast_interval": 0.2,
              "monitor_slow_interval": 1.0, "monitor_lease_ttl": 2.0, "max_restarts": 2,
              "restart_backoff": 0.5, "renew_before": 0, "command_timeout": 300}
    hold, release = tmp_path / "hold", tmp_path / "release"
    slow = JupyterServer(tmp_path / "slow", shared, env=wrapper(
        tmp_path / "bin", "squeue",
        f'while [ -e {hold} ] && [ ! -e {release} ]; do sleep 0.1; done\nexec "$REAL" "$@"'))
    other = JupyterServer(tmp_path / "other", shared)
    try:
        slow.start()
        eventually(lambda: monitor(slow)["watching"])
        other.start()
        hold.touch()                                  # the watcher's next squeue hangs
        code, body = other.request("POST", "osire/api/deployments", {"model": "fails-once"})
        assert code == 201, body
        deployment_id, first_job = body["id"], body["replicas"][0]["job_id"]
        eventually(lambda: monitor(other)["watching"], timeout=60)     # took over
        restarted = eventually(lambda: (lambda r: r if r["job_id"] not in (None, first_job)
                                        else None)(replica(other, deployment_id)), timeout=60)
        assert restarted["restarts"] == 1, restarted
        stale_cycles = monitor(slow)["cycles"]
        release.touch()                               # the stale answer comes in now
        eventually(lambda: monitor(slow)["cycles"] >= stale_cycles + 3, timeout=60)
        assert not monitor(slow)["watching"]
        ready = other.wait_state(deployment_id, {"ready", "failed"}, timeout=60)
        assert ready["state"] == "ready", ready
        assert ready["replicas"][0]["job_id"] == restarted["job_id"]
        assert ready["restarts"] == 1, ready          # not restarted again on a stale failure
        assert job_ids(deployment_id) == [restarted["job_id"]]   # one job, the recorded one
    finally:
        release.touch()
        for server in (other, slow):
            try:
                server.stop_all_deployments()
            finally:
                server.stop()


def leaves_foreign_jobs_alone(tmp_path: Path, foreign: JupyterServer, where: str) -> None:
    """``foreign`` (another backend or cluster) starts first, so that before owners were kept it
    watched alone; a Slurm server launches. ``foreign`` must not mark the job lost, nor restart
    or stop it, and must say where it runs."""
    shared = foreign.osire
    hub = JupyterServer(tmp_path / "hub", {**shared, "scheduler": "slurm"})
    try:
        foreign.start()
        eventually(lambda: monitor(foreign)["watching"])
        hub.start()
        code, body = hub.request("POST", "osire/api/deployments", {"model": "fake-chat"})
        assert code == 201, body
        deployment_id = body["id"]
        assert hub.wait_state(deployment_id, {"ready"}, timeout=60)["state"] == "ready"
        cycles = monitor(foreign)["cycles"]
        eventually(lambda: monitor(foreign)["cycles"] >= cycles + 10)   # it had its chances
        code, seen = foreign.request("GET", f"osire/api/deployments/{deployment_id}")
        assert code == 200, seen
        assert seen["state"] == "ready" and seen["restarts"] == 0, seen
        assert seen["replicas"][0]["lost_since"] is None, seen
        assert seen["elsewhere"].startswith("runs on cluster osire (slurm); this server uses "
                                            + where), seen
        assert seen["reason"].startswith("runs on cluster osire (slurm)"), seen
        code, error = foreign.request("DELETE", f"osire/api/deployments/{deployment_id}")
        assert code == 409 and "cannot be stopped from here" in error["error"]["message"], error
        assert squeue_states(deployment_id) == ["RUNNING"]
        assert monitor(hub)["watching"]               # its own scheduler's watcher
    finally:
        try:
            hub.stop_all_deployments()
        finally:
            hub.stop()
            foreign.stop()


def foreign_config(tmp_path: Path, scheduler: str) -> dict:
    return {"scheduler": scheduler, "catalog": str(write_catalog(tmp_path / "c.yaml")),
            "job_root": str(tmp_path / "jobs"), "db_path": str(tmp_path / "state.sqlite"),
            "monitor_fast_interval": 0.2, "monitor_slow_interval": 1.0, "local_gpus": 2}


def test_a_local_server_leaves_slurm_jobs_alone(slurm_cluster, tmp_path):
    local = JupyterServer(tmp_path / "local", foreign_config(tmp_path, "local"))
    leaves_foreign_jobs_alone(tmp_path, local, "host ")


def test_a_server_on_another_cluster_leaves_these_jobs_alone(slurm_cluster, tmp_path):
    """Another cluster sharing $HOME: its controller has another ClusterName and knows none of
    these job ids (squeue and sacct answer nothing)."""
    bin_dir = tmp_path / "bin"
    wrapper(bin_dir, "scontrol", 'if [ "$1 $2" = "show config" ]; then\n'
            '  "$REAL" "$@" | sed "s/^ClusterName *=.*/ClusterName = elsewhere/"\n'
            'else exec "$REAL" "$@"; fi')
    wrapper(bin_dir, "squeue", "exit 0")
    env = wrapper(bin_dir, "sacct", "exit 0")
    other = JupyterServer(tmp_path / "other", foreign_config(tmp_path, "slurm"), env=env)
    leaves_foreign_jobs_alone(tmp_path, other, "cluster elsewhere (slurm)")
