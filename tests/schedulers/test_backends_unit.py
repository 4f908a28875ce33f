"""Pure parts of the local and pyslurm backends, and the choice between backends."""
from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from jupyter_osire_llm import errors
from jupyter_osire_llm.schedulers import choose_scheduler
from jupyter_osire_llm.schedulers.base import JobRequest, JobState, Resources
from jupyter_osire_llm.schedulers.local import (JOB_PYTHONPATH, job_env_from_runner,
                                                parse_time_limit, runner_environment)
from jupyter_osire_llm.schedulers.slurm.pyslurm import info_from_job, submit_description


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


# ---------------------------------------------------------------- pyslurm query strategy (fake)

class _RPCError(Exception):
    pass


def _fake_pyslurm(live: dict, db_records: list, db_error: Exception | None = None):
    """A stand-in for pyslurm 25.11's Job.load / Jobs.load / db.Jobs.load (pyslurm cannot be
    built here: it needs Slurm 25.11), recording what was asked."""
    asked: dict = {"Job.load": [], "Jobs.load": 0, "db": []}

    def job_load(job_id):
        asked["Job.load"].append(job_id)
        if job_id not in live:
            raise _RPCError("Invalid job id specified")
        return live[job_id]

    def jobs_load():
        asked["Jobs.load"] += 1
        return dict(live)

    def db_jobs_load(db_filter):
        asked["db"].append(db_filter)
        if db_error:
            raise db_error
        return [r for r in db_records if r.id in db_filter.ids]

    fake = SimpleNamespace(
        RPCError=_RPCError,
        Job=SimpleNamespace(load=job_load), Jobs=SimpleNamespace(load=jobs_load),
        db=SimpleNamespace(Jobs=SimpleNamespace(load=db_jobs_load),
                           JobFilter=lambda **kw: SimpleNamespace(**kw)))
    return fake, asked


def _pyslurm(monkeypatch, fake, **kw):
    from jupyter_osire_llm.schedulers.slurm import pyslurm
    monkeypatch.setattr(pyslurm, "import_pyslurm", lambda: fake)
    return pyslurm.PySlurm(user="alice", **kw)


def _db_job(**kw):
    base = dict(id=5, state="FAILED", state_reason="NonZeroExitCode", nodelist="gpu01",
                submit_time=100, start_time=110, end_time=200, exit_code=3, exit_code_signal=0,
                user_name="alice", working_directory="/jobs/5")
    base.update(kw)
    return SimpleNamespace(**base)


def test_pyslurm_loads_few_jobs_one_by_one_never_the_whole_table(monkeypatch, tmp_path):
    from jupyter_osire_llm.schedulers.base import Job
    live = {1: _pyslurm_job(id=1, user_name="alice"), 2: _pyslurm_job(id=2, user_name="bob")}
    fake, asked = _fake_pyslurm(live, [])
    sched = _pyslurm(monkeypatch, fake)
    answers = sched.query([Job("1", tmp_path), Job("2", tmp_path)])
    assert answers["1"].state is JobState.PENDING
    assert (answers["2"].state, answers["2"].reason) == (JobState.LOST, "owned by bob")
    assert asked["Job.load"] == [1, 2] and asked["Jobs.load"] == 0
    assert sched.calls == {"Job.load": 2}


def test_pyslurm_many_jobs_one_table_load(monkeypatch, tmp_path):
    from jupyter_osire_llm.schedulers.base import Job
    live = {i: _pyslurm_job(id=i, user_name="alice") for i in range(1, 21)}
    fake, asked = _fake_pyslurm(live, [])
    sched = _pyslurm(monkeypatch, fake, single_load_limit=8)
    answers = sched.query([Job(str(i), tmp_path) for i in range(1, 21)])
    assert len(answers) == 20 and asked["Job.load"] == [] and sched.calls == {"Jobs.load": 1}


def test_pyslurm_purged_job_from_accounting_of_this_user_only(monkeypatch, tmp_path):
    from jupyter_osire_llm.schedulers.base import Job
    records = [_db_job(state="COMPLETED", working_directory="/elsewhere"), _db_job()]
    fake, asked = _fake_pyslurm({}, records)
    sched = _pyslurm(monkeypatch, fake)
    info = sched.query([Job("5", Path("/jobs/5"))])["5"]
    assert (info.state, info.exit_code, info.evidence) == (JobState.FAILED, 3, "pyslurm.db")
    assert asked["db"][0].ids == [5] and asked["db"][0].users == ["alice"]
    # two records for id 5 (ids restart after a reset): the one run in the job's folder wins
    records[0].working_directory, records[1].working_directory = str(tmp_path / "5"), "/old"
    assert sched.query([Job("5", tmp_path / "5")])["5"].state is JobState.COMPLETED
    # only another job's record (ours not in accounting yet): no answer from it
    records[0].working_directory = "/older"
    info = sched.query([Job("5", tmp_path / "5")])["5"]
    assert (info.state, info.evidence) == (JobState.LOST, "none")
    # a record accounting has not yet given a folder: no answer this time
    records[1].working_directory = ""
    assert "5" not in sched.query([Job("5", tmp_path / "5")])
    assert sched.calls == {"Job.load": 4, "db.Jobs.load": 4}


def test_pyslurm_a_live_job_run_in_another_folder_is_not_ours(monkeypatch, tmp_path):
    from jupyter_osire_llm.schedulers.base import Job
    live = {7: _pyslurm_job(state="RUNNING", user_name="alice",
                            working_directory=str(tmp_path / "new"))}
    fake, _ = _fake_pyslurm(live, [])
    sched = _pyslurm(monkeypatch, fake)
    assert sched.query([Job("7", tmp_path / "new")])["7"].state is JobState.RUNNING
    info = sched.query([Job("7", tmp_path / "old")])["7"]
    assert (info.state, info.evidence) == (JobState.LOST, "none")


def test_pyslurm_failing_accounting_keeps_the_last_state_for_a_while(monkeypatch, tmp_path):
    from jupyter_osire_llm.schedulers.base import Job
    (tmp_path / "5").mkdir()
    (tmp_path / "5" / "exit_status").write_text("0\n")
    live = {1: _pyslurm_job(id=1, user_name="alice", state="FROBNICATED")}
    fake, _ = _fake_pyslurm(live, [], db_error=_RPCError("Connection refused"))
    sched = _pyslurm(monkeypatch, fake)
    assert sched.query([Job("1", tmp_path), Job("5", tmp_path / "5")]) == {}
    sched.reconciler.grace = 0
    info = sched.query([Job("5", tmp_path / "5")])["5"]
    assert (info.state, info.evidence) == (JobState.COMPLETED, "exit-file")


def test_pyslurm_without_accounting_uses_the_exit_file(monkeypatch, tmp_path):
    from jupyter_osire_llm.schedulers.base import Job
    fake, asked = _fake_pyslurm({}, [], db_error=_RPCError("Slurm accounting storage is disabled"))
    sched = _pyslurm(monkeypatch, fake)
    assert sched.query([Job("5", tmp_path)])["5"].state is JobState.LOST
    sched.query([Job("5", tmp_path)])
    assert len(asked["db"]) == 1 and sched.describe()["accounting"] is False
