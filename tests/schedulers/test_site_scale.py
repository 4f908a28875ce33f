"""Issue 8, scheduler layer: immune to the user's environment, one bad answer costs only itself,
real accounting for jobs that ended unobserved, call counting, and stale local records.

The Slurm cases run on the real test cluster (scripts/slurm-cluster.sh, with MariaDB + slurmdbd
when available); the local ones start real processes.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from jupyter_osire_llm.schedulers.base import Job, JobRequest, JobState
from jupyter_osire_llm.schedulers.local import LocalScheduler, boot_id, identity, write_state
from jupyter_osire_llm.schedulers.slurm.cli import SlurmCLI
from jupyter_osire_llm.schedulers.slurm.commands import Completed

from .conftest import Backend

ENV_DUMP = "#!/bin/bash\nenv | sort > env.txt\nsleep 60\n"
#: Each of these, inherited by the Jupyter server, broke queries or changed submissions.
USER_ENV = {
    "SLURM_TIME_FORMAT": "relative",            # times squeue prints become unparsable
    "SQUEUE_USERS": "nobody",                   # hides our jobs: they would look vanished
    "SQUEUE_PARTITION": "no-such-partition",
    "SQUEUE_ACCOUNT": "no-such-account",
    "SQUEUE_NAMES": "no-such-name",
    "SQUEUE_STATES": "PD",
    "SQUEUE_FORMAT": "%i",
    "SLURM_CLUSTERS": "osire",                  # multi-cluster output
    "SACCT_FORMAT": "JobID",
    "SBATCH_PARTITION": "no-such-partition",    # a submission would be rejected
    "SBATCH_GRES": "gpu:5",
    "SBATCH_TIMELIMIT": "1",                    # a submission would be cut short
    "SBATCH_EXPORT": "NONE",
    "SLURM_JOB_ID": "999999",                   # an enclosing job (Open OnDemand)
    "SLURM_MEM_PER_NODE": "1",
}
#: The server's credentials: never in a job's environment.
SECRETS = {"OSIRE_TOKEN": "secret-osire-token", "OSIRE_URL": "http://x/?token=secret-url",
           "JUPYTERHUB_API_TOKEN": "secret-hub", "JPY_API_TOKEN": "secret-jpy",
           "JUPYTER_TOKEN": "secret-jupyter", "password": "secret-ood"}


def _slurm_backend(tmp_path: Path) -> Backend:
    tmp_path.chmod(0o755)
    return Backend("slurm", SlurmCLI(command_timeout=15), tmp_path, short_time="1",
                   short_time_wait=100, make_fresh=SlurmCLI)


def _clean_env() -> dict:
    return {k: v for k, v in os.environ.items()
            if not k.startswith(("SLURM_", "SBATCH_", "SQUEUE_", "SACCT_"))}


def _scontrol(job_id: str) -> str:
    return subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True,
                          text=True, env=_clean_env()).stdout


@pytest.mark.slurm
@pytest.mark.parametrize("name", list(USER_ENV))
def test_contract_operations_ignore_the_users_slurm_environment(name, slurm_cluster, tmp_path,
                                                                 monkeypatch):
    monkeypatch.setenv(name, USER_ENV[name])
    b = _slurm_backend(tmp_path)
    try:
        job = b.submit("#!/bin/bash\nsleep 60\n")
        running = b.wait(job, lambda i: i.state is JobState.RUNNING)
        assert running.evidence == "squeue"
        shown = _scontrol(job.id)
        # No limit asked for: UNLIMITED, or 365 days when Slurm's backfill scheduler (not the
        # main one) started the job: sched/backfill plans an unlimited job at YEAR_MINUTES.
        # Either way not the 1 minute SBATCH_TIMELIMIT says.
        assert re.search(r"TimeLimit=(UNLIMITED|365-00:00:00) ", shown), shown
        assert "Partition=debug" in shown, shown
        b.scheduler.cancel(job)
        assert b.wait(job, lambda i: i.state.terminal).state is JobState.CANCELLED
    finally:
        b.cleanup()


@pytest.mark.slurm
def test_slurm_job_gets_its_own_slurm_variables_and_no_credentials(slurm_cluster, tmp_path,
                                                                     monkeypatch):
    for name, value in {**USER_ENV, **SECRETS}.items():
        monkeypatch.setenv(name, value)
    b = _slurm_backend(tmp_path)
    try:
        job = b.submit(ENV_DUMP)
        b.wait(job, lambda i: i.state is JobState.RUNNING and (job.folder / "env.txt").exists())
        time.sleep(0.5)
        env = dict(line.split("=", 1) for line in (job.folder / "env.txt").read_text().splitlines()
                   if "=" in line)
        assert env["SLURM_JOB_ID"] == job.id and env["SLURM_JOB_PARTITION"] == "debug"
        assert "SLURM_MEM_PER_NODE" not in env or env["SLURM_MEM_PER_NODE"] != "1"
        assert not [k for k in env if k.startswith(("SBATCH_", "SQUEUE_", "SACCT_"))]
        for name, value in SECRETS.items():
            assert name not in env and value not in (job.folder / "env.txt").read_text()
    finally:
        b.cleanup()


def test_local_job_gets_no_credentials_nor_slurm_variables(tmp_path, monkeypatch):
    for name, value in {**USER_ENV, **SECRETS}.items():
        monkeypatch.setenv(name, value)
    sched = LocalScheduler(tmp_path / "state", kill_grace=1)
    job = sched.submit(JobRequest("t", "#!/bin/bash\nenv | sort > env.txt\n", tmp_path / "j"))
    deadline = time.monotonic() + 30
    while not sched.query([job])[job.id].state.terminal:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    text = (job.folder / "env.txt").read_text()
    assert not [line for line in text.splitlines()
                if line.startswith(("SLURM_", "SBATCH_", "SQUEUE_", "SACCT_"))]
    for name, value in SECRETS.items():
        assert f"{name}=" not in text and value not in text


# ---------------------------------------------------------------- accounting

def _accounting_or_skip() -> None:
    probe = subprocess.run(["sacct", "-n", "-X", "-j", "1"], capture_output=True, text=True,
                           env=_clean_env())
    if probe.returncode != 0:
        message = f"no Slurm accounting here: {probe.stderr.strip()}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def _in_squeue(job_id: str) -> bool:
    out = subprocess.run(["squeue", "-h", "-t", "all", "-o", "%i"], capture_output=True,
                         text=True, env=_clean_env()).stdout
    return job_id in out.split()


@pytest.mark.slurm
def test_job_that_ended_unobserved_gets_its_true_state_from_accounting(slurm_cluster, tmp_path):
    """Nobody looks while the jobs end and slurmctld purges them (MinJobAge=5, purging runs once
    a minute); a fresh backend then learns how they really ended from sacct, not the exit file."""
    _accounting_or_skip()
    b = _slurm_backend(tmp_path)
    failed = b.submit("#!/bin/bash\necho failing\nexit 3\n")
    cancelled = b.submit("#!/bin/bash\nsleep 300\n")
    time.sleep(1)
    subprocess.run(["scancel", cancelled.id], check=True, env=_clean_env())
    for job in (failed, cancelled):
        (job.folder / "exit_status").unlink(missing_ok=True)   # only accounting may know
    deadline = time.monotonic() + 150
    while _in_squeue(failed.id) or _in_squeue(cancelled.id):
        assert time.monotonic() < deadline, "slurmctld never purged the finished jobs"
        time.sleep(2)
    for job in (failed, cancelled):
        (job.folder / "exit_status").unlink(missing_ok=True)
    fresh = SlurmCLI()
    answers = fresh.query([failed, cancelled])
    assert (answers[failed.id].state, answers[failed.id].exit_code,
            answers[failed.id].evidence) == (JobState.FAILED, 3, "sacct")
    assert answers[failed.id].end_time and answers[failed.id].node
    assert (answers[cancelled.id].state, answers[cancelled.id].evidence) == (
        JobState.CANCELLED, "sacct")
    assert fresh.calls == {"sacct": 1, "squeue": 1}
    assert fresh.describe()["accounting"] is True


# ---------------------------------------------------------------- partial answers (pure)

SQUEUE_OK = "11|RUNNING|None|vm|2026-01-01T10:00:00|2026-01-01T10:00:01|N/A|{user}\n"
SQUEUE_ODD = "12|FROBNICATED|None|vm|2026-01-01T10:00:00|2026-01-01T10:00:01|N/A|{user}\n"


def _scripted(sched: SlurmCLI, answers: dict) -> list:
    calls: list = []

    def run(argv, action, env=None):
        sched.count_call(argv[0])
        calls.append(argv[0])
        return answers[argv[0]]
    sched._run = run
    return calls


def test_unknown_state_and_failing_sacct_keep_every_good_answer(tmp_path, caplog):
    sched = SlurmCLI(user="alice", sacct_grace=3600)
    jobs = [Job(str(i), tmp_path / str(i)) for i in (11, 12, 13)]
    sacct_down = Completed(1, "", "sacct: error: Problem talking to the database: "
                                  "Connection refused")
    _scripted(sched, {"squeue": Completed(0, (SQUEUE_OK + SQUEUE_ODD).format(user="alice"), ""),
                      "sacct": sacct_down})
    for _ in range(3):
        answers = sched.query(jobs)
        # 11 parsed; 12 unreadable and 13 (purged, accounting down) keep their last state
        assert set(answers) == {"11"} and answers["11"].state is JobState.RUNNING
    logged = [r.getMessage() for r in caplog.records]
    assert sum("FROBNICATED" in m for m in logged) == 1      # logged once, not every cycle
    assert sum("Problem talking to the database" in m for m in logged) == 1
    assert sched.calls == {"sacct": 3, "squeue": 3}


def test_long_failing_sacct_falls_back_to_the_exit_file(tmp_path):
    sched = SlurmCLI(user="alice", sacct_grace=0)
    (tmp_path / "13").mkdir()
    (tmp_path / "13" / "exit_status").write_text("4\n")
    _scripted(sched, {"squeue": Completed(0, "", ""), "sacct": Completed(1, "", "boom")})
    info = sched.query([Job("13", tmp_path / "13")])["13"]
    assert (info.state, info.exit_code, info.evidence) == (JobState.FAILED, 4, "exit-file")


def test_one_query_call_per_cycle_however_many_jobs(tmp_path):
    sched = SlurmCLI(user="alice")
    calls = _scripted(sched, {"squeue": Completed(0, "".join(
        SQUEUE_OK.replace("11|", f"{i}|").format(user="alice") for i in range(100, 150)), "")})
    sched.query([Job(str(i), tmp_path) for i in range(100, 150)])
    assert calls == ["squeue"] and sched.describe()["calls"] == {"squeue": 1}


# ---------------------------------------------------------------- local: stale records

@pytest.fixture
def stranger():
    """An unrelated process in its own process group, as a reused pid would be."""
    proc = subprocess.Popen(["sleep", "300"], start_new_session=True)
    yield proc
    proc.kill()
    proc.wait()


@pytest.mark.parametrize("record", ["other boot", "other start", "no identity"])
def test_stale_local_record_never_kills_a_reused_pid(record, stranger, tmp_path):
    sched = LocalScheduler(tmp_path / "state")
    folder = tmp_path / "job"
    folder.mkdir()
    real = identity(stranger.pid)
    recorded = {"other boot": {"start": real["start"], "boot": "0" * 8 + "-dead-beef"},
                "other start": {"start": real["start"] - 1, "boot": boot_id()},
                "no identity": None}[record]
    state = {"id": "7", "folder": str(folder), "state": "RUNNING", "reason": None,
             "submit_time": time.time() - 60, "start_time": time.time() - 59, "node": "here",
             "runner_pid": stranger.pid, "job_pgid": stranger.pid}
    if recorded is not None:
        state.update(runner_identity=recorded, job_identity=recorded)
    write_state(folder, state)
    job = Job("7", folder)
    sched.cancel(job)
    info = sched.query([job])["7"]
    assert info.state.terminal and info.state is JobState.LOST, info
    time.sleep(0.3)
    assert stranger.poll() is None, "the stranger was killed"
    os.kill(stranger.pid, 0)


def test_local_cancel_still_ends_a_job_whose_runner_died(tmp_path):
    """The identity check must not stop the real clean-up: runner gone, job alive."""
    sched = LocalScheduler(tmp_path / "state", kill_grace=1)
    job = sched.submit(JobRequest("t", "#!/bin/bash\nsleep 300 &\necho $! > child.pid\nwait\n",
                                  tmp_path / "j"))
    deadline = time.monotonic() + 30
    while not (job.folder / "child.pid").exists():
        assert time.monotonic() < deadline
        time.sleep(0.1)
    from jupyter_osire_llm.schedulers.local import read_state
    state = read_state(job.folder)
    os.kill(state["runner_pid"], signal.SIGKILL)              # the runner dies, the job lives on
    child = int((job.folder / "child.pid").read_text())
    while _alive(state["runner_pid"]):
        time.sleep(0.05)
    sched.cancel(job)
    deadline = time.monotonic() + 10
    while _alive(child) or _alive(state["job_pgid"]):
        assert time.monotonic() < deadline, "the orphaned job survived the cancel"
        time.sleep(0.1)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False
