"""The job root and the job folders are the user's alone: a shared or foreign root, or a symlink
planted where a job folder goes, is refused before any key or script is written (issue 17.11)."""
from __future__ import annotations

import asyncio
import os
import pwd

import pytest

from jupyter_osire_llm.errors import ConfigError
from jupyter_osire_llm.core.private_folder import expand_user, private_folder, private_root
from jupyter_osire_llm.schedulers.base import Job, JobRequest
from jupyter_osire_llm.schedulers.local import LocalScheduler
from service_factory import make_service, one_model_catalog

ME = pwd.getpwuid(os.geteuid()).pw_name


class CountingScheduler(LocalScheduler):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.submitted: list[Job] = []

    def submit(self, request: JobRequest) -> Job:
        job = super().submit(request)
        self.submitted.append(job)
        return job


@pytest.mark.parametrize("setting, expected", [
    ("/scratch/$USER/osire", f"/scratch/{ME}/osire"),
    ("/scratch/${USER}/jobs", f"/scratch/{ME}/jobs"),
    ("~/jobs", os.path.expanduser("~/jobs")),
    ("/scratch/$USERNAME/x", "/scratch/$USERNAME/x"),     # only $USER is this user's
])
def test_user_and_home_are_expanded(setting, expected, monkeypatch):
    monkeypatch.setenv("USER", "somebody-else")   # the login name, not what the env claims
    assert expand_user(setting) == expected


def test_a_missing_root_is_made_private(tmp_path):
    root = private_root(tmp_path / "a" / "jobs")
    assert root.is_dir() and root.stat().st_mode & 0o777 == 0o700


def test_a_root_writable_by_others_is_refused(tmp_path):
    root = tmp_path / "shared"
    root.mkdir()
    root.chmod(0o1777)
    with pytest.raises(ConfigError) as err:
        private_folder(root, "abc/r0")
    assert "writable by other users" in err.value.message and err.value.field == "OsireLLM.job_root"
    assert list(root.iterdir()) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to make a folder another user owns")
def test_a_root_owned_by_another_user_is_refused(tmp_path):
    root = tmp_path / "theirs"
    root.mkdir(mode=0o755)
    os.chown(root, 65534, 65534)
    with pytest.raises(ConfigError, match="owned by uid 65534"):
        private_folder(root, "abc")


def test_a_symlink_planted_for_a_job_folder_is_not_followed(tmp_path):
    root, elsewhere = tmp_path / "jobs", tmp_path / "elsewhere"
    root.mkdir(mode=0o700)
    elsewhere.mkdir(mode=0o700)
    (root / "abc").symlink_to(elsewhere)
    with pytest.raises(ConfigError, match="symlink"):
        private_folder(root, "abc/r0")
    assert list(elsewhere.iterdir()) == []


def test_a_job_folder_writable_by_others_is_refused(tmp_path):
    root = tmp_path / "jobs"
    (root / "abc").mkdir(parents=True)
    root.chmod(0o700)
    (root / "abc").chmod(0o777)
    with pytest.raises(ConfigError, match="writable by other users"):
        private_folder(root, "abc/r0")


def test_dot_dot_is_not_a_folder_name(tmp_path):
    with pytest.raises(ConfigError):
        private_folder(tmp_path, "../escape")


def test_a_launch_under_a_shared_root_submits_nothing_and_keeps_nothing(tmp_path):
    root = tmp_path / "jobs"
    root.mkdir()
    root.chmod(0o777)
    scheduler = CountingScheduler(tmp_path / "local")
    service = make_service(tmp_path, one_model_catalog("bash -c 'sleep 300' engine"), scheduler,
                           job_root=root)
    with pytest.raises(ConfigError) as err:
        asyncio.run(service.launch("m"))
    assert "writable by other users" in err.value.message
    assert scheduler.submitted == [] and service.all() == []
    assert service.store.load("deployments") == []
