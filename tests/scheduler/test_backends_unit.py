"""Pure parts of the local and pyslurm backends, and the choice between backends."""
from __future__ import annotations

import os
from types import SimpleNamespace

import pytest

from jupyter_osire_llm import errors
from jupyter_osire_llm.schedulers import choose_scheduler
from jupyter_osire_llm.schedulers.base import JobRequest, JobState, Resources
from jupyter_osire_llm.schedulers.local import (JOB_PYTHONPATH, job_env_from_runner,
                                                parse_time_limit, runner_environment)
from jupyter_osire_llm.schedulers.pyslurm_backend import info_from_job, submit_description


@pytest.mark.parametrize("text, seconds", [
    (None, None), ("0", None), ("UNLIMITED", None), ("5", 300), ("0:02", 2), ("1:30", 90),
    ("01:00:00", 3600), ("1-0", 86400), ("1-2", 93600), ("1-0:01", 86460), ("1-00:00:05", 86405)])
def test_parse_time_limit(text, seconds):
    assert parse_time_limit(text) == seconds


@pytest.mark.parametrize("text", ["abc", "1:2:3:4", "-5", "1-2:3:4:5", "x-1"])
def test_parse_time_limit_rejects(text):
    with pytest.raises(errors.RequestError):
        parse_time_limit(text)


def test_runner_environment_round_trip():
    job_env = {"PATH": "/bin", "PYTHONPATH": "/engine/lib"}
    runner = runner_environment(job_env)
    assert runner["PYTHONPATH"].endswith(os.pathsep + "/engine/lib")
    assert job_env_from_runner(runner) == job_env
    assert "PYTHONPATH" not in job_env_from_runner(runner_environment({"PATH": "/bin"}))
    assert JOB_PYTHONPATH not in job_env_from_runner(runner)


def test_choose_unknown_kind(tmp_path):
    with pytest.raises(errors.ConfigError):
        choose_scheduler("pbs", state_dir=tmp_path)


def test_choose_local(tmp_path):
    sched, why = choose_scheduler("local", state_dir=tmp_path, local_gpus=2)
    assert sched.name == "local" and sched.describe()["gpus"] == 2 and "local" in why


def test_choose_auto_without_slurm_is_local(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    sched, why = choose_scheduler("auto", state_dir=tmp_path)
    assert sched.name == "local" and "no sbatch" in why


def test_choose_auto_with_sbatch_is_slurm(tmp_path, monkeypatch):
    fake = tmp_path / "sbatch"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    sched, why = choose_scheduler("auto", state_dir=tmp_path, command_timeout=3)
    assert sched.name == "slurm" and str(fake) in why and sched.command_timeout == 3


def test_choose_slurm_without_sbatch(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(errors.SchedulerUnavailable):
        choose_scheduler("slurm", state_dir=tmp_path)


def test_pyslurm_submit_description(tmp_path):
    req = JobRequest("m", "#!/bin/bash\n", tmp_path,
                     Resources(gpus=2, gpu_type="a100", cpus=4, memory="8G", time="10",
                               partition="gpu"))
    desc = submit_description(req, "#!/bin/bash\n", {"A": "1"})
    assert desc["gres_per_node"] == "gpu:a100:2" and desc["cpus_per_task"] == 4
    assert desc["memory_per_node"] == "8G" and desc["time_limit"] == "10"
    assert desc["partitions"] == "gpu" and desc["environment"] == {"A": "1"}
    assert desc["standard_output"] == str(tmp_path / "job.log")
    assert "account" not in desc


def _pyslurm_job(**kw):
    base = dict(id=7, state="PENDING", state_reason="Resources", batch_host=None,
                allocated_nodes=None, submit_time=100, start_time=200, end_time=None,
                exit_code=0, exit_code_signal=0)
    base.update(kw)
    return SimpleNamespace(**base)


def test_pyslurm_info_pending_has_estimate():
    info = info_from_job(_pyslurm_job())
    assert (info.state, info.reason, info.estimated_start, info.start_time) == (
        JobState.PENDING, "Resources", 200.0, None)


def test_pyslurm_info_failed():
    info = info_from_job(_pyslurm_job(state="FAILED", state_reason="NonZeroExitCode",
                                      batch_host="gpu01", end_time=300, exit_code=3))
    assert (info.state, info.exit_code, info.node, info.end_time) == (JobState.FAILED, 3, "gpu01",
                                                                      300.0)
    assert info.evidence == "pyslurm"
