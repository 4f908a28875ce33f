"""Folders only the user can change: the job root and the job folders made under it.

A job folder holds the engine's key and the endpoint file the proxy trusts. Under a root that
another user can write to (a site-wide scratch folder, say), they could plant a symlink or a
folder of their own where our next job folder goes, and read the key or forge the endpoint. So
the root must be the user's and writable by nobody else, and every folder below it is made
without following a symlink and checked the same way, on every use (a root can change after
start-up).
"""
from __future__ import annotations

import os
import pwd
import re
import stat
from pathlib import Path

from ..errors import ConfigError

_USER_VARIABLE = re.compile(r"\$(?:USER\b|\{USER\})")


def login_name() -> str:
    """The user this server runs as (not ``$USER``, which the environment could say otherwise)."""
    return pwd.getpwuid(os.geteuid()).pw_name


def expand_user(value: str) -> str:
    """``$USER``/``${USER}`` and a leading ``~`` made this user's, so one site setting such as
    ``/scratch/$USER/osire`` gives every user a root of their own."""
    return os.path.expanduser(_USER_VARIABLE.sub(login_name(), value))


def private_root(root: Path) -> Path:
    """The job root, made 0700 if missing; refused if it is not the user's or others may write."""
    try:
        root.mkdir(parents=True, mode=0o700, exist_ok=True)
        _check(root, os.stat(root), what="the job root")
    except OSError as exc:
        raise _problem(root, f"cannot be made or read: {exc.strerror or exc}") from exc
    return root


def private_folder(root: Path, relative: Path | str) -> Path:
    """``root/relative``, each folder below the root made 0700 or found private, none a symlink."""
    folder = private_root(root)
    for part in Path(relative).parts:
        if part in ("", ".", "..") or os.sep in part:
            raise _problem(root / relative, f"{part!r} is not a folder name")
        folder = folder / part
        try:
            os.mkdir(folder, 0o700)
        except FileExistsError:
            pass
        except OSError as exc:
            raise _problem(folder, f"cannot be made: {exc.strerror or exc}") from exc
        _check(folder, os.lstat(folder), what="a job folder")
    return folder


def _check(path: Path, found: os.stat_result, *, what: str) -> None:
    if stat.S_ISLNK(found.st_mode):
        raise _problem(path, f"{what} is a symlink; refusing to follow it")
    if not stat.S_ISDIR(found.st_mode):
        raise _problem(path, f"{what} is not a folder")
    if found.st_uid != os.geteuid():
        raise _problem(path, f"{what} is owned by uid {found.st_uid}, not by {login_name()}")
    if found.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise _problem(path, f"{what} is writable by other users "
                             f"(mode {stat.S_IMODE(found.st_mode):o}); make it 0700")


def _problem(path: Path, reason: str) -> ConfigError:
    return ConfigError(f"{path}: {reason} (check c.OsireLLM.job_root)", field="OsireLLM.job_root")
