"""Two servers of one user never both act: the watcher's lease is a fence on its writes, and a
resubmission claims its replica in a compare-and-swap, so one replica never gets two jobs."""
from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path

import pytest

from jupyter_osire_llm.core.catalog import load_catalog
from jupyter_osire_llm.deployments.service import DeploymentService
from jupyter_osire_llm.errors import LeaseLost
from jupyter_osire_llm.schedulers.slurm.cli import SlurmCLI
from jupyter_osire_llm.deployments.states import QUEUED, Deployment, Replica
from jupyter_osire_llm.core.store import FENCE, Fence, Store
from lifecycle_catalog import write_catalog
from service_factory import make_service


def record(deployment_id: str = "d1", version: int = 1, **replica) -> Deployment:
    return Deployment(id=deployment_id, model="fake-chat", created=1.0, version=version,
                      resources={"cpus": 1, "time": "00:10:00"},
                      replicas=(Replica(0, f"/tmp/{deployment_id}/r0", **replica),))


def save_under(store: Store, fence: Fence, deployment: Deployment, expected: int) -> bool:
    token = FENCE.set(fence)
    try:
        return store.save("deployments", deployment.id, deployment.to_doc(), expected)
    finally:
        FENCE.reset(token)


def test_a_write_under_a_lease_taken_over_is_refused(tmp_path):
    a, b = Store(tmp_path / "s.sqlite"), Store(tmp_path / "s.sqlite")
    now = [100.0]
    assert a.claim_epoch("monitor:slurm:x", "A", now[0], ttl=20) == 1
    assert a.claim_epoch("monitor:slurm:x", "A", now[0] + 5, ttl=20) == 1   # renewal: same epoch
    a.insert("deployments", "d1", 1.0, record().to_doc())
    fence = Fence("monitor:slurm:x", "A", 1, margin=5, clock=lambda: now[0])
    assert save_under(a, fence, record(version=2, state="starting"), 1)

    now[0] = 146.0                                  # A's cycle hung past its lease; B took over
    assert b.claim_epoch("monitor:slurm:x", "B", now[0], ttl=20) == 2
    with pytest.raises(LeaseLost, match="taken over"):
        save_under(a, fence, record(version=3, state="failed"), 2)
    [d1] = a.load("deployments", ["d1"])
    assert d1.version == 2 and d1.doc["replicas"][0]["state"] == "starting"
    with pytest.raises(LeaseLost):
        a.check_fence(fence)                        # before a scheduler action too


def test_a_lease_about_to_run_out_is_no_ground_to_act_on(tmp_path):
    store = Store(tmp_path / "s.sqlite")
    store.claim_epoch("monitor:local:h", "A", 100.0, ttl=20)     # held until 120
    store.insert("deployments", "d1", 1.0, record().to_doc())
    late = Fence("monitor:local:h", "A", 1, margin=5, clock=lambda: 116.0)
    with pytest.raises(LeaseLost, match="margin"):
        save_under(store, late, record(version=2, state="failed"), 1)
    assert store.versions("deployments") == {"d1": 1}


def test_the_epoch_moves_on_with_every_new_holder(tmp_path):
    store = Store(tmp_path / "s.sqlite")
    assert store.claim_epoch("m", "A", 0.0, ttl=10) == 1
    store.release("m", "A")
    assert store.holder("m", 1.0) is None
    assert store.claim_epoch("m", "B", 1.0, ttl=10) == 2
    assert store.claim_epoch("m", "A", 5.0, ttl=10) is None      # B holds it
    assert store.claim_epoch("m", "A", 12.0, ttl=10) == 3        # B stopped renewing


def services(tmp_path: Path) -> tuple[DeploymentService, DeploymentService]:
    catalog = load_catalog(str(write_catalog(tmp_path / "c.yaml")))
    return (make_service(tmp_path, catalog, SlurmCLI(), server_id="a"),
            make_service(tmp_path, catalog, SlurmCLI(), server_id="b"))


def jobs_named(name: str) -> list[str]:
    out = subprocess.run(["squeue", "-h", "-n", name, "-o", "%i"], capture_output=True,
                         text=True).stdout
    return out.split()


@pytest.mark.slurm
def test_a_resubmission_racing_another_servers_gives_one_job(slurm_cluster, tmp_path):
    """Both servers hold the replica as waiting for its restart; the second one's view is
    stale when it resubmits. Only one job may come of it."""
    a, b = services(tmp_path)
    waiting = replace_folder(record("race1", version=1, state=QUEUED, restarts=1,
                                    restart_at=time.time() - 1), tmp_path)
    a.store.insert("deployments", waiting.id, waiting.created, waiting.to_doc())

    async def race() -> None:
        await a.refresh()
        await b.refresh()
        assert a.get("race1").replicas[0].waiting_restart
        assert b.get("race1").replicas[0].waiting_restart
        await a.resubmit("race1", 0)
        await b.resubmit("race1", 0)               # b has not seen a's submission
        await b.refresh()
        await a.refresh()

    try:
        asyncio.run(race())
        jobs = jobs_named("osire-race1-r0")
        assert len(jobs) == 1, jobs
        assert a.get("race1").replicas[0].job_id == jobs[0]
        assert b.get("race1").replicas[0].job_id == jobs[0]
    finally:
        subprocess.run(["scancel", "--name", "osire-race1-r0"], capture_output=True)


def replace_folder(d: Deployment, tmp_path: Path) -> Deployment:
    from dataclasses import replace
    return replace(d, replicas=tuple(replace(r, folder=str(tmp_path / "jobs" / d.id / f"r{i}"))
                                     for i, r in enumerate(d.replicas)))
