"""The Slurm CLI backend's pure functions, on output recorded from real Slurm 22.05
(``tests/data/slurm/record.sh`` re-records it)."""
from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from jupyter_osire_llm import errors
from jupyter_osire_llm.schedulers.base import JobRequest, JobState, Resources, job_environment
from jupyter_osire_llm.schedulers.slurm import (Completed, classify_failure, parse_exit_code,
                                                parse_sacct, parse_sbatch, parse_scontrol_job,
                                                parse_squeue, parse_state, parse_time,
                                                sbatch_command, squeue_command)

DATA = Path(__file__).parent.parent / "data" / "slurm"


def recorded(name: str) -> str:
    return (DATA / name).read_text()


def t(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S").timestamp()


@pytest.mark.parametrize("name, job_id, state, reason, node, exit_code", [
    ("squeue_mixed.txt", "5", JobState.COMPLETED, None, "vm", None),
    ("squeue_mixed.txt", "6", JobState.FAILED, "NonZeroExitCode", "vm", None),
    ("squeue_mixed.txt", "7", JobState.RUNNING, None, "vm", None),
    ("squeue_mixed.txt", "9", JobState.PENDING, "Resources", None, None),
    ("squeue_mixed.txt", "10", JobState.PENDING, "PartitionConfig", None, None),
    ("squeue_mixed.txt", "11", JobState.CANCELLED, "Priority", None, None),
    ("squeue_later.txt", "8", JobState.TIMEOUT, "TimeLimit", "vm", None),
])
def test_parse_squeue_states(name, job_id, state, reason, node, exit_code):
    user, info = parse_squeue(recorded(name))[job_id]
    assert user == "root"
    assert (info.state, info.reason, info.node, info.exit_code) == (state, reason, node, exit_code)
    assert info.evidence == "squeue"


def test_squeue_pending_has_estimated_start_not_start():
    _, info = parse_squeue(recorded("squeue_mixed.txt"))["9"]
    assert info.estimated_start == t("2026-11-23T05:14:20")
    assert info.start_time is None and info.end_time is None


def test_squeue_running_end_is_not_reported():
    # squeue's %e of a running job is the expected end (start + limit), not an end
    _, info = parse_squeue(recorded("squeue_mixed.txt"))["7"]
    assert info.start_time == t("2026-11-23T05:09:20") and info.end_time is None


def test_squeue_never_started_has_no_estimate():
    _, info = parse_squeue(recorded("squeue_mixed.txt"))["10"]
    assert info.estimated_start is None


def test_squeue_timeout_end_time():
    _, info = parse_squeue(recorded("squeue_later.txt"))["8"]
    assert info.end_time - info.start_time == 65


@pytest.mark.parametrize("line", ["garbage", "1|RUNNING|None", "1|EXPLODED|None||N/A|N/A|N/A|u",
                                  "1|RUNNING|None||yesterday|N/A|N/A|u"])
def test_parse_squeue_rejects_unparsable(line):
    with pytest.raises(errors.SchedulerOutputError):
        parse_squeue(line + "\n")


@pytest.mark.parametrize("name, state, exit_code, signal, reason", [
    ("scontrol_failed.txt", JobState.FAILED, 3, None, "NonZeroExitCode"),
    ("scontrol_timeout.txt", JobState.TIMEOUT, 0, 15, "TimeLimit"),
    ("scontrol_cancelled.txt", JobState.CANCELLED, 0, None, "Priority"),
    ("scontrol_running.txt", JobState.RUNNING, 0, None, None),
    ("scontrol_pending.txt", JobState.PENDING, 0, None, "Resources"),
])
def test_parse_scontrol(name, state, exit_code, signal, reason):
    info = parse_scontrol_job(recorded(name))
    assert (info.state, info.exit_code, info.signal, info.reason) == (state, exit_code, signal,
                                                                      reason)
    assert info.evidence == "scontrol"


def test_parse_scontrol_node_and_times():
    info = parse_scontrol_job(recorded("scontrol_timeout.txt"))
    assert info.node == "vm"
    assert info.end_time - info.start_time == 65


def test_parse_scontrol_rejects_garbage():
    with pytest.raises(errors.SchedulerOutputError):
        parse_scontrol_job("slurm_load_jobs error: Invalid job id specified\n")


@pytest.mark.parametrize("text, expected", [
    (recorded("sbatch_parsable.txt"), "5"), ("1234;osire\n", "1234"), ("77\n", "77")])
def test_parse_sbatch(text, expected):
    assert parse_sbatch(text) == expected


@pytest.mark.parametrize("text", ["", "Submitted batch job 5\n", "sbatch: error\n"])
def test_parse_sbatch_rejects(text):
    with pytest.raises(errors.SchedulerOutputError):
        parse_sbatch(text)


@pytest.mark.parametrize("line", recorded("sbatch_rejected.txt").splitlines())
def test_sbatch_refusals_are_submit_rejected(line):
    err = classify_failure(Completed(1, "", line + "\n"), "sbatch")
    assert isinstance(err, errors.SubmitRejected)
    assert not err.message.startswith("sbatch: error: ")


@pytest.mark.parametrize("message, action, kind", [
    ("slurm_load_jobs error: Unable to contact slurm controller (connect failure)", "squeue",
     errors.SchedulerUnavailable),
    ("sbatch: error: Batch job submission failed: Unable to contact slurm controller "
     "(connect failure)", "sbatch", errors.SchedulerUnavailable),
    ("scancel: error: Kill job error on job id 5: Access/permission denied", "scancel",
     errors.PermissionDenied),
    ("something else", "squeue", errors.SchedulerError),
])
def test_classify_failure(message, action, kind):
    assert type(classify_failure(Completed(1, "", message), action)) is kind


def test_sacct_disabled_message_recorded():
    assert "accounting storage is disabled" in recorded("sacct_disabled.txt").lower()


def test_parse_sacct_documented_format():
    # Hand-written in sacct's documented --parsable2 shape: no slurmdbd here to record from.
    out = parse_sacct("12|CANCELLED by 1000|0:15|gpu01|2026-01-01T10:00:00|2026-01-01T10:00:05|"
                      "2026-01-01T10:09:00|alice|None\n"
                      "13|FAILED|3:0|gpu02|2026-01-01T10:00:00|2026-01-01T10:00:05|"
                      "2026-01-01T10:00:09|alice|NonZeroExitCode\n")
    assert out["12"][1].state is JobState.CANCELLED and out["12"][1].signal == 15
    assert out["13"][1].exit_code == 3 and out["13"][0] == "alice"
    assert out["13"][1].evidence == "sacct"


@pytest.mark.parametrize("text, state, reason", [
    ("RUNNING", JobState.RUNNING, None), ("CANCELLED by 0", JobState.CANCELLED, None),
    ("CONFIGURING", JobState.PENDING, "CONFIGURING"), ("BOOT_FAIL", JobState.NODE_FAIL, "BOOT_FAIL"),
    ("OUT_OF_MEMORY", JobState.OUT_OF_MEMORY, None)])
def test_parse_state(text, state, reason):
    assert parse_state(text) == (state, reason)


@pytest.mark.parametrize("text, expected", [("3:0", (3, None)), ("0:15", (0, 15)),
                                            ("0:0", (0, None))])
def test_parse_exit_code(text, expected):
    assert parse_exit_code(text) == expected


@pytest.mark.parametrize("text", ["N/A", "Unknown", "NONE", ""])
def test_parse_time_unknown(text):
    assert parse_time(text) is None


def test_sbatch_command(tmp_path):
    req = JobRequest("llama 8b", "#!/bin/bash\n", tmp_path,
                     Resources(gpus=2, gpu_type="a100", cpus=8, memory="64G", time="04:00:00",
                               partition="gpu", account="proj"),
                     env={"SECRETISH": "x,y"})
    argv = sbatch_command(req, tmp_path / "job.sh")
    assert argv[:2] == ["sbatch", "--parsable"]
    assert f"--output={tmp_path}/job.log" in argv and f"--chdir={tmp_path}" in argv
    assert "--job-name=llama 8b" in argv and "--gres=gpu:a100:2" in argv
    assert {"--cpus-per-task=8", "--mem=64G", "--time=04:00:00", "--partition=gpu",
            "--account=proj", "--export=ALL"} <= set(argv)
    assert argv[-1] == str(tmp_path / "job.sh")
    assert not any("x,y" in a for a in argv)   # env values never reach argv


def test_squeue_command_one_call_for_many():
    argv = squeue_command([str(i) for i in range(1, 21)])
    assert argv[0] == "squeue" and "--states=all" in argv
    assert "--jobs=" + ",".join(str(i) for i in range(1, 21)) in argv


def test_job_environment_drops_server_credentials():
    env = job_environment({"PATH": "/bin", "JUPYTERHUB_API_TOKEN": "s", "JPY_API_TOKEN": "s",
                           "JUPYTER_TOKEN": "s"}, {"OSIRE_MODEL": "m"})
    assert env == {"PATH": "/bin", "OSIRE_MODEL": "m"}


@pytest.mark.parametrize("name", ["SBATCH_TIMELIMIT", "SLURM_CONF", "A-B", "1X", ""])
def test_job_environment_refuses_names(name):
    with pytest.raises(errors.RequestError):
        job_environment({}, {name: "v"})
