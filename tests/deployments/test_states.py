from jupyter_osire_llm.schedulers.base import JobInfo, JobState
from jupyter_osire_llm.deployments.states import (FAILED, QUEUED, READY, STARTING, STOPPED, STOPPING,
                                      Replica, apply_job_info, deployment_state)

R = Replica(index=0, folder="/jobs/d/r0", job_id="7")


def info(state, **kw):
    return JobInfo("7", state, **kw)


def test_pending_is_queued_with_reason_and_estimate():
    r = apply_job_info(R, info(JobState.PENDING, reason="Resources", estimated_start=99.0),
                       stop_requested=False)
    assert (r.state, r.reason, r.estimated_start) == (QUEUED, "Resources", 99.0)


def test_running_is_starting_until_healthy_and_stays_ready():
    r = apply_job_info(R, info(JobState.RUNNING, node="n1", start_time=5.0), stop_requested=False)
    assert (r.state, r.node, r.started_at) == (STARTING, "n1", 5.0)
    ready = apply_job_info(r.__class__(**{**vars(r), "state": READY}), info(JobState.RUNNING),
                           stop_requested=False)
    assert ready.state == READY


def test_failure_reasons():
    cases = {
        JobState.TIMEOUT: "time limit", JobState.OUT_OF_MEMORY: "out of memory",
        JobState.NODE_FAIL: "node failure", JobState.CANCELLED: "cancelled outside",
        JobState.LOST: "vanished", JobState.FAILED: "start-up (exit code 3)",
    }
    for state, fragment in cases.items():
        r = apply_job_info(R, info(state, exit_code=3), stop_requested=False, log_tail="boom")
        assert r.state == FAILED and fragment in r.reason, (state, r.reason)
        assert r.log_tail == "boom"


def test_crash_after_ready_and_oom_in_log():
    ready = Replica(index=0, folder="f", job_id="7", state=READY)
    r = apply_job_info(ready, info(JobState.FAILED, exit_code=1), stop_requested=False)
    assert r.reason == "engine crashed (exit code 1)"
    r = apply_job_info(R, info(JobState.FAILED, exit_code=1), stop_requested=False,
                       log_tail="torch.OutOfMemoryError: CUDA out of memory")
    assert r.reason == "out of memory"


def test_stop_requested_ends_in_stopped_whatever_the_exit():
    for state in (JobState.CANCELLED, JobState.FAILED, JobState.COMPLETED):
        r = apply_job_info(R, info(state), stop_requested=True)
        assert (r.state, r.reason) == (STOPPED, "stopped by user")
    assert apply_job_info(R, info(JobState.RUNNING), stop_requested=True).state == STOPPING


def test_deployment_state_is_its_best_replica():
    q = Replica(index=0, folder="a", state=QUEUED, reason="Priority")
    s = Replica(index=1, folder="b", state=STARTING)
    f = Replica(index=2, folder="c", state=FAILED, reason="time limit")
    assert deployment_state([q, s, f], False) == (STARTING, None)
    assert deployment_state([q, f], False) == (QUEUED, "Priority")
    assert deployment_state([f], False) == (FAILED, "time limit")
    assert deployment_state([q, s], True) == (STOPPING, None)
    assert deployment_state([Replica(index=0, folder="a", state=STOPPED)], True)[0] == STOPPED
