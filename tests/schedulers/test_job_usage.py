"""What a finished job used (``Scheduler.job_usage``): parsed from real sacct output recorded
on the test cluster with billing weights (CPU=1.0, Mem=0.25G, GRES/gpu=2.0), and asked of the
real cluster for a job that just ran."""
from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from jupyter_osire_llm.schedulers.base import Job
from jupyter_osire_llm.schedulers.slurm.cli import SlurmCLI
from jupyter_osire_llm.schedulers.slurm.parse import parse_job_usage, parse_tres

DATA = Path(__file__).resolve().parents[1] / "data" / "slurm"


def test_usage_from_recorded_sacct():
    text = (DATA / "sacct_usage.txt").read_text()
    usage = parse_job_usage(text, "1760")
    assert (usage.elapsed, usage.billing, usage.gpus) == (1.0, 4.0, 1)
    assert usage.gpu_hours == pytest.approx(1 / 3600)
    assert parse_job_usage(text, "1759").gpus is None          # a job without GPUs
    running = (DATA / "sacct_usage_running.txt").read_text()
    assert parse_job_usage(running, running.split("|")[0]) is None   # not ended yet
    assert parse_job_usage("garbage|x|y\n", "1") is None
    assert parse_tres("billing=4,cpu=2,gres/gpu=1")["gres/gpu"] == "1"


@pytest.mark.slurm
def test_a_finished_job_s_billing_is_slurm_s(slurm_cluster, tmp_path):
    tmp_path.chmod(0o755)
    job_id = subprocess.run(["sbatch", "--parsable", "-c", "2", "--mem=1G", "--gres=gpu:1",
                             "-o", "/dev/null", "--wrap", "sleep 1"], capture_output=True,
                            text=True, check=True).stdout.strip()
    scheduler = SlurmCLI()
    deadline = time.monotonic() + 60
    usage = None
    while usage is None and time.monotonic() < deadline:
        time.sleep(1)
        usage = scheduler.job_usage(Job(job_id, tmp_path))
    if usage is None:
        pytest.skip("no accounting on this cluster (sacct has no record)")
    # 2 CPUs x 1.0 + 1 GB x 0.25 + 1 GPU x 2.0 = 4.25, which Slurm truncates to 4
    assert usage.billing == 4.0 and usage.gpus == 1 and usage.elapsed >= 1
