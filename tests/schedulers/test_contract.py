"""One contract, every backend: real Slurm (scripts/slurm-cluster.sh), local, and pyslurm where it
imports. The only slow case is the time limit on Slurm (checked every 30 s: 60-80 s)."""
from __future__ import annotations

import time

import pytest

from jupyter_osire_llm import errors
from jupyter_osire_llm.schedulers.base import Job, JobRequest, JobState, Resources

from .conftest import Backend, cluster

SLEEPER = "#!/bin/bash\nsleep 300 &\necho $! > child.pid\nwait\n"


def terminal(info) -> bool:
    return info.state.terminal


def test_submit_writes_script_and_output(backend: Backend):
    job = backend.submit("#!/bin/bash\necho hello from $PWD\n")
    assert job.id and (job.folder / "job.sh").exists()
    info = backend.wait(job, terminal)
    assert info.state is JobState.COMPLETED and info.exit_code == 0
    assert f"hello from {job.folder}" in backend.scheduler.output_path(job).read_text()


@pytest.mark.cluster_exclusive
def test_pending_running_completed_with_reason(backend: Backend):
    """A job short of GPUs waits with reason Resources, then runs and completes."""
    blocker = backend.submit(SLEEPER, Resources(gpus=2))
    backend.wait(blocker, lambda i: i.state is JobState.RUNNING)
    job = backend.submit("#!/bin/bash\nsleep 1\n", Resources(gpus=1))
    seen = [backend.wait(job, lambda i: i.reason == "Resources", timeout=15)]
    assert seen[0].state is JobState.PENDING and seen[0].start_time is None
    time.sleep(1)
    assert backend.info(job).state is JobState.PENDING
    backend.scheduler.cancel(blocker)
    info = backend.wait(job, terminal, history=seen)
    states = [s.state for s in seen]
    assert JobState.RUNNING in states
    assert states.index(JobState.PENDING) < states.index(JobState.RUNNING)
    assert info.state is JobState.COMPLETED and info.node
    assert info.submit_time <= info.start_time <= info.end_time


def test_failed_with_exit_code(backend: Backend):
    job = backend.submit("#!/bin/bash\necho about to fail\nexit 3\n")
    info = backend.wait(job, terminal)
    assert (info.state, info.exit_code, info.reason) == (JobState.FAILED, 3, "NonZeroExitCode")


def test_cancel_running_job_ends_its_process_group(backend: Backend):
    job = backend.submit(SLEEPER)
    backend.wait(job, lambda i: i.state is JobState.RUNNING and (job.folder / "child.pid").exists())
    child = int((job.folder / "child.pid").read_text())
    backend.scheduler.cancel(job)
    info = backend.wait(job, terminal, timeout=20)
    assert info.state is JobState.CANCELLED
    deadline = time.monotonic() + 10
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive(child), "the job's background child survived the cancel"
    backend.scheduler.cancel(job)          # cancelling a finished job is fine


@pytest.mark.cluster_exclusive
def test_cancel_pending_job(backend: Backend):
    """The blocker holds both GPUs first, so the job surely waits (submitted first, a short job
    could start and end before the cancel on a busy machine: COMPLETED, not CANCELLED)."""
    blocker = backend.submit(SLEEPER, Resources(gpus=2))
    backend.wait(blocker, lambda i: i.state is JobState.RUNNING)
    job = backend.submit("#!/bin/bash\ntrue\n", Resources(gpus=2))
    backend.wait(job, lambda i: i.state is JobState.PENDING)
    backend.scheduler.cancel(job)
    assert backend.wait(job, terminal).state is JobState.CANCELLED
    backend.scheduler.cancel(blocker)


def test_an_id_with_another_folder_is_not_that_job(backend: Backend):
    """Job ids are reused after a reset of the cluster's state: a job we recorded as (id, folder)
    is not whatever job has that id now. Running or ended, the other job never answers for ours
    (it ended: LOST, or its own exit file)."""
    job = backend.submit(SLEEPER)
    backend.wait(job, lambda i: i.state is JobState.RUNNING)
    older = Job(job.id, backend.root / "an-older-job-with-this-id")
    for _ in range(2):
        # no answer (accounting cannot tell yet), or LOST: never the other job's state
        answer = backend.scheduler.query([older]).get(job.id)
        assert answer is None or answer.state is JobState.LOST, answer
        backend.scheduler.cancel(job)
        backend.wait(job, terminal, timeout=20)


def test_a_new_job_in_a_cancelled_jobs_folder_runs(backend: Backend):
    """A batch's resume submits its next job into the same folder: the earlier job's cancel
    must not end the new one."""
    first = backend.submit(SLEEPER)
    backend.wait(first, lambda i: i.state is JobState.RUNNING)
    backend.scheduler.cancel(first)
    assert backend.wait(first, terminal, timeout=20).state is JobState.CANCELLED
    again = backend.scheduler.submit(JobRequest("t", "#!/bin/bash\necho second run\n",
                                                first.folder, Resources()))
    backend.jobs.append(again)
    info = backend.wait(again, terminal)
    assert info.state is JobState.COMPLETED and info.exit_code == 0, info


def test_cancel_unknown_job_is_fine(backend: Backend, tmp_path):
    backend.scheduler.cancel(Job("99999999", tmp_path / "nowhere"))


def test_time_limit(backend: Backend):
    job = backend.submit(SLEEPER, Resources(time=backend.short_time))
    started = time.monotonic()
    info = backend.wait(job, terminal, timeout=backend.short_time_wait)
    assert info.state is JobState.TIMEOUT, info
    print(f"{backend.kind}: TIMEOUT after {time.monotonic() - started:.0f} s")


def test_gpu_request_sets_cuda_visible_devices(backend: Backend):
    job = backend.submit("#!/bin/bash\necho \"gpus=[$CUDA_VISIBLE_DEVICES]\"\n", Resources(gpus=1))
    assert backend.wait(job, terminal).state is JobState.COMPLETED
    log = backend.scheduler.output_path(job).read_text()
    assert "gpus=[0]" in log or "gpus=[1]" in log, log


def test_impossible_request_is_rejected(backend: Backend):
    with pytest.raises(errors.SubmitRejected):
        backend.submit("#!/bin/bash\ntrue\n", Resources(gpus=5))


def test_batch_query_of_many_jobs_in_one_call(backend: Backend):
    """One call per cycle however many jobs, counted by the backend itself (what the admin
    endpoint shows): squeue, pyslurm's Jobs.load, the local backend's own query."""
    jobs = [backend.submit("#!/bin/bash\ntrue\n") for _ in range(20)]
    before = backend.scheduler.calls
    answers = backend.scheduler.query(jobs)
    assert set(answers) == {j.id for j in jobs}
    assert all(a.state is not JobState.LOST for a in answers.values())
    assert _calls_since(backend, before) == 1
    for job in jobs:
        backend.wait(job, terminal)
    before = backend.scheduler.calls
    final = backend.scheduler.query(jobs)
    assert {a.state for a in final.values()} == {JobState.COMPLETED}
    assert _calls_since(backend, before) == 1


def test_new_instance_finds_jobs(backend: Backend):
    """What a restart of the Jupyter server looks like: a fresh backend, the same job handles."""
    running = backend.submit(SLEEPER)
    done = backend.submit("#!/bin/bash\nexit 4\n")
    backend.wait(running, lambda i: i.state is JobState.RUNNING)
    backend.wait(done, terminal)
    fresh = backend.make_fresh()
    answers = fresh.query([Job(running.id, running.folder), Job(done.id, done.folder)])
    assert answers[running.id].state is JobState.RUNNING
    assert (answers[done.id].state, answers[done.id].exit_code) == (JobState.FAILED, 4)
    fresh.cancel(Job(running.id, running.folder))
    assert backend.wait(running, terminal, timeout=20).state is JobState.CANCELLED


def test_job_that_ended_unobserved_has_definite_state(backend: Backend):
    """The scheduler forgot the job (Slurm purges it MinJobAge after the end; a local record can be
    lost): the exit status file decides, and says so; with no evidence at all, LOST."""
    ok = backend.submit("#!/bin/bash\ntrue\n")
    bad = backend.submit("#!/bin/bash\nexit 5\n")
    for job in (ok, bad):
        backend.wait(job, terminal)
    forgotten = [_forget(backend, ok), _forget(backend, bad)]
    nothing = _forget(backend, backend.submit("#!/bin/bash\ntrue\n"))
    (nothing.folder / "exit_status").unlink(missing_ok=True)
    answers = backend.scheduler.query(forgotten + [nothing])
    a_ok, a_bad = answers[forgotten[0].id], answers[forgotten[1].id]
    assert (a_ok.state, a_ok.evidence) == (JobState.COMPLETED, "exit-file")
    assert (a_bad.state, a_bad.exit_code, a_bad.evidence) == (JobState.FAILED, 5, "exit-file")
    assert (answers[nothing.id].state, answers[nothing.id].evidence) == (JobState.LOST, "none")


@pytest.mark.cluster_exclusive
def test_controller_outage_gives_typed_errors_then_recovers(backend: Backend):
    if backend.kind != "slurm":
        pytest.skip(f"{backend.kind} has no controller to stop (slurm only)")
    job = backend.submit(SLEEPER)
    backend.wait(job, lambda i: i.state is JobState.RUNNING)
    backend.scheduler.command_timeout = 3
    cluster("stop-ctld")
    try:
        started = time.monotonic()
        with pytest.raises((errors.SchedulerUnavailable, errors.SchedulerTimeout)):
            backend.scheduler.query([job])
        assert time.monotonic() - started < 10
        with pytest.raises((errors.SchedulerUnavailable, errors.SchedulerTimeout)):
            backend.submit("#!/bin/bash\ntrue\n")
    finally:
        cluster("start-ctld")
    backend.scheduler.command_timeout = 15
    assert backend.wait(job, lambda i: True).state is JobState.RUNNING


# ---------------------------------------------------------------- helpers

def _forget(backend: Backend, job: Job) -> Job:
    """Make the backend lose its record of ``job``, as purging does."""
    if backend.kind == "local":
        (job.folder / "local_job.json").unlink()
        return job
    # Slurm: an id the controller does not know is what a purged job looks like to squeue
    return Job(str(int(job.id) + 5_000_000), job.folder)


def _calls_since(backend: Backend, before: dict) -> int:
    after = backend.scheduler.calls
    return sum(after.values()) - sum(before.values())


ESCAPER = ("#!/bin/bash\nsetsid sleep 300 &\necho $! > escaped.pid\n"
           "sleep 0.5\n")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[-1][0] != "Z"
    except FileNotFoundError:
        return False


def test_processes_that_left_the_job_session_do_not_outlive_it(backend: Backend):
    """vLLM's engine runs in its own session (setsid); when the job ends, it must end too."""
    if backend.kind != "local":
        pytest.skip("on Slurm this is the site's proctrack plugin (proctrack/cgroup kills them); "
                    "the test cluster's proctrack/linuxproc does not, and our job script "
                    "ends the engine's group itself")
    job = backend.submit(ESCAPER)
    info = backend.wait(job, terminal)
    assert info.state is JobState.COMPLETED
    escaped = int((job.folder / "escaped.pid").read_text())
    deadline = time.monotonic() + 15
    while _alive(escaped) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive(escaped), "a process of the job outlived it"
