"""The rules both Slurm backends share (schedulers/slurm/reconcile.py), without any Slurm."""
from __future__ import annotations

from pathlib import Path

from jupyter_osire_llm import errors
from jupyter_osire_llm.schedulers.base import Job, JobInfo, JobState
from jupyter_osire_llm.schedulers.slurm.reconcile import (ExitDetails, Listing, Reconciler,
                                                          pick_by_folder)


def test_pick_by_folder_takes_the_record_run_in_the_jobs_folder():
    records = [("5", "/jobs/5", "ours"), ("5", "/elsewhere", "another's"), ("6", "/x", "old"),
               ("6", "/y", "newest"), ("7", "", "not started"), ("8", "", "not started"),
               ("8", "/jobs/8/", "ours")]
    chosen, undecided = pick_by_folder(records, {"5": "/jobs/5", "7": "/jobs/7", "8": "/jobs/8"})
    assert chosen == {"5": "ours", "6": "newest", "8": "ours"} and undecided == {"7"}


class Accounting:
    """A stand-in for "accounting records for these ids", recording what was asked."""

    def __init__(self, answer: Listing | None | Exception) -> None:
        self.answer, self.asked = answer, 0

    def __call__(self, jobs: list[Job]) -> Listing | None:
        self.asked += 1
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def _reconciler(accounting: Accounting, logged: list, grace: float = 3600) -> Reconciler:
    return Reconciler("alice", accounting, log=logged.extend, grace=grace)


def test_live_answers_other_users_and_jobs_of_another_folder(tmp_path: Path):
    owners = {"1": "alice", "2": "bob", "3": "alice"}
    live = Listing("squeue", jobs={i: (user, JobInfo(i, JobState.RUNNING))
                                   for i, user in owners.items()}, folders={"3": "/another"})
    answers = _reconciler(Accounting(None), []).answers(
        [Job("1", tmp_path), Job("2", tmp_path), Job("3", tmp_path)], live)
    assert answers["1"].state is JobState.RUNNING
    assert (answers["2"].state, answers["2"].reason, answers["2"].evidence) == (
        JobState.LOST, "owned by bob", "squeue")
    assert (answers["3"].state, answers["3"].evidence) == (JobState.LOST, "none")


def test_failing_accounting_keeps_the_last_state_then_the_exit_file_decides(tmp_path: Path):
    (tmp_path / "exit_status").write_text("0\n")
    logged: list = []
    accounting = Accounting(errors.SchedulerError("sacct failed: down"))
    reconciler = _reconciler(accounting, logged)
    assert reconciler.answers([Job("5", tmp_path)], Listing("squeue")) == {}
    assert logged == ["sacct failed: down"] and reconciler.accounting is None
    reconciler.grace = 0
    info = reconciler.answers([Job("5", tmp_path)], Listing("squeue"))["5"]
    assert (info.state, info.evidence) == (JobState.COMPLETED, "exit-file")


def test_a_cluster_without_accounting_is_asked_once(tmp_path: Path):
    accounting = Accounting(None)
    reconciler = _reconciler(accounting, [])
    for _ in range(3):
        info = reconciler.answers([Job("5", tmp_path)], Listing("squeue"))["5"]
        assert (info.state, info.reason) == (JobState.LOST, "gone from Slurm, no exit status left")
    assert accounting.asked == 1 and reconciler.accounting is False


def test_an_entry_without_a_job_id_leaves_every_missing_job_unanswered(tmp_path: Path):
    accounting = Accounting(Listing("sacct"))
    live = Listing("squeue")
    live.problem("unexpected squeue line 'garbage'", None)
    assert _reconciler(accounting, []).answers([Job("5", tmp_path)], live) == {}
    assert accounting.asked == 0


def test_exit_details_are_asked_once_and_remembered(tmp_path: Path):
    asked: list = []

    def ask(job: Job) -> JobInfo:
        asked.append(job.id)
        return JobInfo(job.id, JobState.FAILED, exit_code=3, end_time=9.0)
    details = ExitDetails(ask)
    failed = JobInfo("5", JobState.FAILED, evidence="squeue")
    for _ in range(2):
        info = details.complete(Job("5", tmp_path), failed)
        assert (info.exit_code, info.end_time, info.evidence) == (3, 9.0, "squeue")
    assert asked == ["5"]
    assert details.complete(Job("6", tmp_path), JobInfo("6", JobState.CANCELLED)).exit_code is None
    assert details.complete(Job("7", tmp_path), JobInfo("7", JobState.COMPLETED)).exit_code == 0
    assert asked == ["5"]
