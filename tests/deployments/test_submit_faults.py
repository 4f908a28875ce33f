"""Slurm misbehaving during a launch: nothing half-done, no orphaned job."""
from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from jupyter_osire_llm.core.catalog import load_catalog
from jupyter_osire_llm.deployments.service import DeploymentService
from jupyter_osire_llm.errors import SchedulerTimeout, SchedulerUnavailable
from jupyter_osire_llm.server.context import OsireContext
from jupyter_osire_llm.schedulers.slurm.cli import SlurmCLI
from jupyter_osire_llm.core.store import Store
from lifecycle_catalog import write_catalog
from service_factory import make_context


def context(tmp_path: Path, timeout: float) -> OsireContext:
    return make_context(tmp_path, load_catalog(str(write_catalog(tmp_path / "c.yaml"))),
                        SlurmCLI(command_timeout=timeout))


def service(tmp_path: Path, timeout: float) -> DeploymentService:
    return context(tmp_path, timeout).service


def live_jobs_under(folder: Path) -> list[str]:
    out = subprocess.run(["squeue", "-h", "-t", "PD,R", "-o", "%i %Z"], capture_output=True,
                         text=True).stdout
    return [line for line in out.splitlines() if str(folder) in line]


def slow_sbatch(bin_dir: Path) -> None:
    """An sbatch that submits for real and then hangs: its answer never arrives in time."""
    bin_dir.mkdir()
    real = shutil.which("sbatch")
    (bin_dir / "sbatch").write_text(f"#!/bin/bash\n{real} \"$@\" >/dev/null\nsleep 5\n")
    (bin_dir / "sbatch").chmod(0o755)


def test_sbatch_timeout_leaves_no_orphan_and_no_deployment(slurm_cluster, tmp_path, monkeypatch):
    slow_sbatch(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    svc = service(tmp_path, timeout=1.5)
    with pytest.raises(SchedulerTimeout):
        asyncio.run(svc.launch("fake-chat"))
    assert svc.all() == [] and Store(tmp_path / "s.sqlite").load("deployments") == []
    assert live_jobs_under(tmp_path) == []


def test_sbatch_missing_is_a_typed_error_and_nothing_is_kept(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    svc = service(tmp_path, timeout=5)
    with pytest.raises(SchedulerUnavailable):
        asyncio.run(svc.launch("fake-chat"))
    assert svc.all() == [] and not any((tmp_path / "jobs").iterdir())


def test_stop_during_a_slow_submission_leaves_no_job(slurm_cluster, tmp_path, monkeypatch):
    """sbatch answers after 2 s; the user stops the deployment meanwhile: no job may survive."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    real = shutil.which("sbatch")
    (bin_dir / "sbatch").write_text(f"#!/bin/bash\nout=$({real} \"$@\")\nrc=$?\nsleep 2\n"
                                    "echo \"$out\"\nexit $rc\n")
    (bin_dir / "sbatch").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    svc = service(tmp_path, timeout=15)

    async def scenario() -> str:
        launch = asyncio.create_task(svc.launch("fake-chat", replicas=2))
        while not svc.all():
            await asyncio.sleep(0.05)
        deployment_id = svc.all()[0].id
        await svc.stop(deployment_id)          # replica 0 is still being submitted
        await launch
        return deployment_id

    deployment_id = asyncio.run(scenario())
    deployment = svc.get(deployment_id)
    assert deployment.stop_requested and [r.job_id is None for r in deployment.replicas] == \
        [False, True]                          # the second replica was never submitted
    deadline = time.monotonic() + 20
    while live_jobs_under(tmp_path) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert live_jobs_under(tmp_path) == []


def test_restart_after_an_unrecorded_submission_cancels_the_job(slurm_cluster, tmp_path):
    """The server died after sbatch ran but before the job id was saved: the next start finds
    the job by name and cancels it, and the deployment ends failed, not forgotten."""
    from jupyter_osire_llm.deployments.states import Deployment, Replica

    job_dir = tmp_path / "jobs" / "cafe0001" / "r0"
    job_dir.mkdir(parents=True)
    subprocess.run(["sbatch", "--parsable", "--job-name=osire-cafe0001-r0", f"--chdir={job_dir}",
                    "--output=/dev/null", "--wrap=sleep 300"], check=True, capture_output=True)
    cut_off = Deployment(id="cafe0001", model="fake-chat", created=1.0, resources={},
                         replicas=(Replica(index=0, folder=str(job_dir)),))
    Store(tmp_path / "s.sqlite").insert("deployments", cut_off.id, cut_off.created,
                                        cut_off.to_doc())
    built = context(tmp_path, timeout=15)
    svc, monitor = built.service, built.monitor

    async def two_cycles() -> None:   # the first finds it, the second cancels by name
        for _ in range(2):
            await monitor.cycle()
        await monitor.stop()
    asyncio.run(two_cycles())
    assert svc.get("cafe0001").state == "failed"
    assert "interrupted" in svc.get("cafe0001").reason
    deadline = time.monotonic() + 20
    while live_jobs_under(tmp_path) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert live_jobs_under(tmp_path) == []
