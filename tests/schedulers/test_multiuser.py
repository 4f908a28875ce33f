"""Two ordinary users on the real Slurm cluster (root only: it creates the users).

What "cannot see" means here: the SlurmCLI backend reports only the calling user's jobs (its
squeue asks for them alone, --user). Asked about another user's job it answers LOST (with the
reason "owned by <user>" where the listing showed it), never RUNNING, so the extension never
routes to or shows it as usable; squeue itself does show other users' jobs (as on most clusters,
unless the site sets PrivateData). Cancelling another user's job is PermissionDenied.
Job folders are private (0700, owned by their user).
"""
from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Iterator

import pytest

pytestmark = [pytest.mark.root, pytest.mark.slurm,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create two users")]

USERS = ("osire-test-a", "osire-test-b")
PYTHON = "/usr/bin/python3"
PACKAGE = Path(__file__).resolve().parents[2] / "jupyter_osire_llm"

AS_USER = r"""
import json, sys
from pathlib import Path
from jupyter_osire_llm import errors
from jupyter_osire_llm.schedulers.base import Job, JobRequest
from jupyter_osire_llm.schedulers.slurm.cli import SlurmCLI
op, job_id, folder = sys.argv[1:4]
s = SlurmCLI()
try:
    if op == "submit":
        out = s.submit(JobRequest("mu", "#!/bin/bash\nsleep 300\n", Path(folder))).id
    elif op == "query":
        info = s.query([Job(job_id, Path(folder))]).get(job_id)   # None: no answer this time
        out = info and {"state": info.state.value, "reason": info.reason,
                        "evidence": info.evidence}
    else:
        s.cancel(Job(job_id, Path(folder)))
        out = "cancelled"
    print(json.dumps({"result": out}))
except errors.OsireError as exc:
    print(json.dumps({"error": type(exc).__name__, "message": exc.message}))
"""


@pytest.fixture(scope="module")
def users() -> tuple[str, str]:
    if not os.access(PYTHON, os.X_OK):
        pytest.skip(f"{PYTHON} (a Python every user can run) is missing")
    for user in USERS:
        try:
            pwd.getpwnam(user)
        except KeyError:
            subprocess.run(["useradd", "--no-create-home", "--shell", "/bin/bash", user],
                           check=True, capture_output=True)
    return USERS


@pytest.fixture
def shared(users, slurm_cluster) -> Iterator[Path]:
    """A world-traversable dir holding a copy of the package (the checkout may be private) and
    one private job folder per user."""
    base = Path(tempfile.mkdtemp(prefix="osire-multiuser-", dir="/tmp"))
    base.chmod(0o755)
    shutil.copytree(PACKAGE, base / "pkg" / "jupyter_osire_llm",
                    ignore=shutil.ignore_patterns("__pycache__", "labextension"))
    for path in (base / "pkg", *(base / "pkg").rglob("*")):
        path.chmod(0o755 if path.is_dir() else 0o644)
    for user in users:
        folder = base / user
        folder.mkdir(mode=0o700)
        entry = pwd.getpwnam(user)
        os.chown(folder, entry.pw_uid, entry.pw_gid)
    yield base
    shutil.rmtree(base, ignore_errors=True)


def run_as(user: str, base: Path, op: str, job_id: str = "", folder: str = "") -> dict:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(base / "pkg")}
    proc = subprocess.run(["runuser", "-u", user, "--", "env", *[f"{k}={v}" for k, v in env.items()],
                           PYTHON, "-c", AS_USER, op, job_id, folder or str(base / user / "job")],
                          capture_output=True, text=True, timeout=60, cwd=base)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_other_user_cannot_cancel_or_use_my_job(users, shared):
    a, b = users
    job_id = run_as(a, shared, "submit")["result"]
    a_folder = str(shared / a / "job")
    live = ("PENDING", "RUNNING")   # a busy cluster may keep it pending: same rules apply
    try:
        assert run_as(a, shared, "query", job_id, a_folder)["result"]["state"] in live
        denied = run_as(b, shared, "cancel", job_id, a_folder)
        assert denied["error"] == "PermissionDenied", denied
        seen_by_b = run_as(b, shared, "query", job_id, a_folder)["result"]
        # squeue --user=b does not list a's job. Accounting may show it to b: "owned by a", or
        # no answer while accounting has not yet recorded where it runs; else a job gone from
        # Slurm. Never a job b may use.
        if seen_by_b is not None:
            assert seen_by_b["state"] == "LOST", seen_by_b
            assert seen_by_b["reason"] in (f"owned by {a}",
                                           "gone from Slurm, no exit status left")
        assert run_as(a, shared, "query", job_id, a_folder)["result"]["state"] in live
    finally:
        assert run_as(a, shared, "cancel", job_id, a_folder) == {"result": "cancelled"}
    deadline = time.monotonic() + 20
    while run_as(a, shared, "query", job_id, a_folder)["result"]["state"] != "CANCELLED":
        assert time.monotonic() < deadline
        time.sleep(0.3)


def test_job_folders_are_private(users, shared):
    a, b = users
    probe = subprocess.run(["runuser", "-u", b, "--", "ls", str(shared / a)],
                           capture_output=True, text=True)
    assert probe.returncode != 0 and "Permission denied" in probe.stderr
