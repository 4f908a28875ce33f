"""The Slurm CLI backend's pure functions, on output recorded from real Slurm 22.05
(``tests/data/slurm/record.sh`` re-records it)."""
from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from jupyter_osire_llm import errors
from jupyter_osire_llm.schedulers.base import (JobRequest, JobState, Resources,
                                               command_environment, job_environment)
from jupyter_osire_llm.schedulers.slurm.commands import Completed, sbatch_command, squeue_command
from jupyter_osire_llm.schedulers.slurm.parse import (classify_failure, parse_exit_code,
                                                      parse_sacct, parse_sbatch,
                                                      parse_scontrol_job, parse_squeue,
                                                      parse_state, parse_time)

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
    user, info = parse_squeue(recorded(name)).jobs[job_id]
    assert user == "root"
    assert (info.state, info.reason, info.node, info.exit_code) == (state, reason, node, exit_code)
    assert info.evidence == "squeue"


def test_squeue_pending_has_estimated_start_not_start():
    _, info = parse_squeue(recorded("squeue_mixed.txt")).jobs["9"]
    assert info.estimated_start == t("2026-11-23T05:14:20")
    assert info.start_time is None and info.end_time is None


def test_squeue_running_end_is_not_reported():
    # squeue's %e of a running job is the expected end (start + limit), not an end
    _, info = parse_squeue(recorded("squeue_mixed.txt")).jobs["7"]
    assert info.start_time == t("2026-11-23T05:09:20") and info.end_time is None


def test_squeue_never_started_has_no_estimate():
    _, info = parse_squeue(recorded("squeue_mixed.txt")).jobs["10"]
    assert info.estimated_start is None


def test_squeue_timeout_end_time():
    _, info = parse_squeue(recorded("squeue_later.txt")).jobs["8"]
    assert info.end_time - info.start_time == 65


def test_squeue_lines_carry_the_working_folder_even_with_the_separator_in_it():
    line = "7|RUNNING|None|vm|2026-11-23T05:09:20|2026-11-23T05:09:20|N/A|alice|/home/a|b/jobs/x"
    parsed = parse_squeue(line + "\n")
    assert parsed.jobs["7"][0] == "alice" and parsed.folders == {"7": "/home/a|b/jobs/x"}
    assert parse_squeue(recorded("squeue_mixed.txt")).folders == {}   # the format before %Z


@pytest.mark.parametrize("line, unreadable, anonymous", [
    ("garbage", set(), True), ("1|RUNNING|None", {"1"}, False),
    ("1|EXPLODED|None||N/A|N/A|N/A|u", {"1"}, False),
    ("1|RUNNING|None||yesterday|N/A|N/A|u", {"1"}, False),
    ("1|RUNNING|None||5 minutes ago|N/A|N/A|u", {"1"}, False),   # SLURM_TIME_FORMAT=relative
])
def test_parse_squeue_reports_unparsable_lines(line, unreadable, anonymous):
    parsed = parse_squeue(line + "\n")
    assert parsed.jobs == {} and len(parsed.problems) == 1
    assert (parsed.unreadable, parsed.anonymous) == (unreadable, anonymous)


def test_one_unknown_state_costs_only_its_own_job():
    """A state of a newer Slurm (or a garbled line) must not discard the good answers."""
    good = recorded("squeue_mixed.txt")
    lines = good.splitlines()
    odd = lines[2].split("|")
    odd[1] = "FROBNICATED"
    text = "\n".join(lines[:2] + ["|".join(odd)] + lines[3:] + ["CLUSTER: osire"]) + "\n"
    parsed = parse_squeue(text)
    assert parsed.unreadable == {odd[0]} and parsed.anonymous
    assert set(parsed.jobs) == set(parse_squeue(good).jobs) - {odd[0]}
    assert "FROBNICATED" in parsed.problems[0]


def test_newer_hold_states_are_pending():
    _, info = parse_squeue("3|RESV_DEL_HOLD|ReservationDeleted||2026-01-01T10:00:00|N/A|N/A|u\n"
                           ).jobs["3"]
    assert (info.state, info.reason) == (JobState.PENDING, "ReservationDeleted")


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


SACCT_12 = ("12|CANCELLED by 1000|0:15|gpu01|2026-01-01T10:00:00|2026-01-01T10:00:05|"
            "2026-01-01T10:09:00|alice|None|/home/alice/.osire/jobs/a\n")
SACCT_13 = ("13|FAILED|3:0|gpu02|2026-01-01T10:00:00|2026-01-01T10:00:05|"
            "2026-01-01T10:00:09|alice|NonZeroExitCode|/home/alice/.osire/jobs/b\n")


def test_parse_sacct_documented_format():
    # Hand-written in sacct's documented --parsable2 shape (real output: sacct_accounting.txt).
    out = parse_sacct(SACCT_12 + SACCT_13).jobs
    assert out["12"][1].state is JobState.CANCELLED and out["12"][1].signal == 15
    assert out["13"][1].exit_code == 3 and out["13"][0] == "alice"
    assert out["13"][1].evidence == "sacct"


@pytest.mark.parametrize("job_id, state, exit_code, reason, node, started", [
    ("136", JobState.COMPLETED, 0, None, "vm", True),
    ("137", JobState.FAILED, 3, "NonZeroExitCode", "vm", True),
    ("138", JobState.CANCELLED, 0, None, "vm", True),           # cancelled while running
    ("139", JobState.CANCELLED, 0, "BeginTime", None, False),   # cancelled while pending
])
def test_parse_sacct_recorded(job_id, state, exit_code, reason, node, started):
    """Real sacct output (slurm-cluster.sh with MariaDB + slurmdbd, Slurm 22.05)."""
    parsed = parse_sacct(recorded("sacct_accounting.txt"), {job_id: "/tmp/osire-record"})
    assert not parsed.problems
    user, info = parsed.jobs[job_id]
    assert (user, info.state, info.exit_code, info.reason, info.node) == (
        "root", state, exit_code, reason, node)
    assert (info.start_time is not None) == started and info.end_time and info.evidence == "sacct"


def test_parse_sacct_keeps_good_lines_and_reports_bad_ones():
    parsed = parse_sacct(SACCT_12 + SACCT_13.replace("FAILED", "FROBNICATED")
                         + "sacct: error: something\n")
    assert set(parsed.jobs) == {"12"} and parsed.unreadable == {"13"} and parsed.anonymous
    assert len(parsed.problems) == 2


def test_parse_sacct_workdir_may_contain_the_separator():
    parsed = parse_sacct(SACCT_12.replace("/jobs/a", "/jobs/a|b"),
                         {"12": "/home/alice/.osire/jobs/a|b"})
    assert parsed.jobs["12"][1].state is JobState.CANCELLED


def test_parse_sacct_reused_id_prefers_the_job_run_in_our_folder():
    """Ids restart when a cluster's state is reset; accounting keeps every record."""
    ours = SACCT_13.replace("13|", "12|", 1).replace("/jobs/b", "/jobs/a")
    other = SACCT_12.replace("/jobs/a", "/elsewhere")
    for text in (ours + other, other + ours):
        parsed = parse_sacct(text, {"12": "/home/alice/.osire/jobs/a"})
        assert parsed.jobs["12"][1].state is JobState.FAILED
    assert parse_sacct(ours + other).jobs["12"][1].state is JobState.CANCELLED   # newest


def test_parse_sacct_leaves_out_another_jobs_record_under_our_id():
    """Our job's own record may not have reached accounting yet: an older job that had the same
    id (another user's, or ours in another folder) is no answer about it."""
    other = SACCT_12.replace("/jobs/a", "/elsewhere")
    assert "12" not in parse_sacct(other, {"12": "/home/alice/.osire/jobs/a"}).jobs
    same = parse_sacct(SACCT_12, {"12": "/home/alice/.osire/x/../jobs/a/"})   # one folder, spelt
    assert same.jobs["12"][1].state is JobState.CANCELLED                     # another way


def test_parse_sacct_a_record_with_no_folder_yet_answers_nothing_about_a_known_folder():
    """Accounting fills WorkDir when it sees the job start: until then a record may be ours or
    the job that has our id now. No answer this time (the caller keeps the last state)."""
    fresh = SACCT_12.replace("CANCELLED by 1000", "PENDING").replace("/home/alice/.osire/jobs/a",
                                                                      "")
    other = SACCT_12.replace("/jobs/a", "/elsewhere")
    parsed = parse_sacct(other + fresh, {"12": "/home/alice/.osire/jobs/a"})
    assert "12" not in parsed.jobs and parsed.unreadable == {"12"}
    ours = parse_sacct(fresh + SACCT_12, {"12": "/home/alice/.osire/jobs/a"})
    assert ours.jobs["12"][1].state is JobState.CANCELLED and not ours.unreadable
    assert parse_sacct(fresh).jobs["12"][1].state is JobState.PENDING      # no folder known


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
    argv = squeue_command([str(i) for i in range(1, 21)], "alice")
    assert argv[0] == "squeue" and "--states=all" in argv
    assert "--jobs=" + ",".join(str(i) for i in range(1, 21)) in argv
    assert "--user=alice" in argv   # the controller sends this user's jobs, not its whole table


SERVER_ENV = {
    "PATH": "/bin", "HOME": "/home/u", "LANG": "C.UTF-8", "LC_TIME": "de_DE.UTF-8",
    "SLURM_CONF": "/etc/slurm/slurm.conf", "LD_LIBRARY_PATH": "/opt/slurm/lib", "HF_HOME": "/h",
    # the server's credentials
    "JUPYTERHUB_API_TOKEN": "s", "JUPYTERHUB_API_URL": "s", "JPY_API_TOKEN": "s",
    "JUPYTER_TOKEN": "s", "JUPYTER_SERVER_URL": "s", "OSIRE_TOKEN": "s", "OSIRE_URL": "s",
    "OSIRE_API_KEY": "s", "password": "s",
    # an enclosing job (Open OnDemand) and the user's Slurm preferences
    "SLURM_JOB_ID": "77", "SLURM_JOBID": "77", "SLURM_MEM_PER_NODE": "4000",
    "SLURM_CPUS_ON_NODE": "4", "SLURM_TIME_FORMAT": "relative", "SLURM_CLUSTERS": "other",
    "SBATCH_PARTITION": "debug", "SBATCH_TIMELIMIT": "1", "SBATCH_EXPORT": "NONE",
    "SQUEUE_USERS": "nobody", "SQUEUE_FORMAT": "%i", "SACCT_FORMAT": "JobID",
    "SCONTROL_ALL": "1", "SALLOC_PARTITION": "p", "SRUN_CPUS_PER_TASK": "4", "PMI_RANK": "0",
}
KEPT = {"PATH", "HOME", "LANG", "LC_TIME", "SLURM_CONF", "LD_LIBRARY_PATH", "HF_HOME"}


def test_job_environment_drops_server_credentials_and_slurm_inputs():
    env = job_environment(SERVER_ENV, {"OSIRE_MODEL": "m"})
    assert env == {**{k: SERVER_ENV[k] for k in KEPT}, "OSIRE_MODEL": "m"}


def test_command_environment_keeps_what_slurm_needs_only():
    assert set(command_environment(SERVER_ENV)) == KEPT


@pytest.mark.parametrize("name", ["SBATCH_TIMELIMIT", "SLURM_CONF", "A-B", "1X", ""])
def test_job_environment_refuses_names(name):
    with pytest.raises(errors.RequestError):
        job_environment({}, {name: "v"})
