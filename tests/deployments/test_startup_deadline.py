"""Nothing holds GPUs forever (issue 17, item 9): a replica whose job runs but whose engine never
becomes ready is stopped at its start-up deadline (the catalog entry's ``startup_timeout``, else
the site's ``c.OsireLLM.startup_timeout``), counted from the job's start, with that reason, and
its Slurm job is cancelled. A real Jupyter server on real Slurm; the fake engine never answers
``/health`` (a start-up delay far beyond the test)."""
from __future__ import annotations

import subprocess

import pytest

from lifecycle_catalog import write_catalog
from server_process import JupyterServer

NEVER_READY = """
  - name: fake-never-ready
    model: /models/fake
    engine: fake
    startup_timeout: 3
    resources: {time: "00:10:00", cpus: 1}
    env: {OSIRE_FAKE_STARTUP_DELAY: "100000"}
  - name: fake-never-ready-site
    model: /models/fake
    engine: fake
    resources: {time: "00:10:00", cpus: 1}
    env: {OSIRE_FAKE_STARTUP_DELAY: "100000"}
"""


@pytest.fixture
def server(slurm_cluster, tmp_path):
    catalog = write_catalog(tmp_path / "c.yaml")
    catalog.write_text(catalog.read_text() + NEVER_READY)
    osire = {"scheduler": "slurm", "job_root": str(tmp_path / "jobs"), "catalog": str(catalog),
             "db_path": str(tmp_path / "s.sqlite"), "monitor_fast_interval": 0.2,
             "monitor_slow_interval": 1.0, "startup_timeout": 4, "max_restarts": 1}
    jupyter = JupyterServer(tmp_path / "server", osire).start()
    yield jupyter
    try:
        jupyter.stop_all_deployments()
    finally:
        jupyter.stop()


def in_squeue(job_id: str) -> bool:
    out = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%i"], capture_output=True,
                         text=True).stdout
    return job_id in out.split()


@pytest.mark.parametrize("model, limit", [("fake-never-ready", "3 s"),          # the catalog's
                                          ("fake-never-ready-site", "4 s")])    # the site's
def test_a_replica_never_ready_is_stopped_at_its_deadline(server, model, limit):
    code, d = server.request("POST", "osire/api/deployments", {"model": model})
    assert code == 201, d
    code, catalog = server.request("GET", "osire/api/catalog")
    entry = next(m for m in catalog["models"] if m["name"] == model)
    assert entry.get("startup_timeout") == (3 if model == "fake-never-ready" else None)
    ended = server.wait_state(d["id"], {"stopped", "failed"}, timeout=120)
    replica = ended["replicas"][0]
    assert ended["state"] == "stopped", ended
    assert ended["reason"].startswith(f"not ready after {limit} (start-up deadline"), ended
    assert replica["reason"] == ended["reason"] and replica["started_at"], replica
    assert replica["ready_at"] is None and ended["restarts"] == 0    # stopped, not restarted
    # stopped as any stop is: cancelled, and believed only on the scheduler's word
    assert replica["scheduler_state"] == "CANCELLED" and replica["evidence"], replica
    assert not in_squeue(replica["job_id"])
