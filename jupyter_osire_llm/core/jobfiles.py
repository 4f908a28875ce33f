"""The files of a job folder that the server writes or reads: one module, one name for each.

An engine's folder (``<job_root>/<deployment>/r<index>``) holds its key (0600, a new one per
submission), the engine guard the job script runs the engine under, and the endpoint file the
job writes once the engine listens. A batch's folder (``<job_root>/batches/<id>``) holds its
input, its key, the batch runner and the guard. Folders are made private
(``private_folder.py``). The payloads (``jobside/``) are copied from the installed package: one
that is missing is an installation fault that stops the submission, since a job without its
guard would run its engine unguarded.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Optional

from ..errors import ConfigError
from .private_folder import private_folder

KEY_FILE = "key"
ENDPOINT_FILE = "endpoint.json"
BATCH_INPUT = "input.jsonl"
_PAYLOADS = Path(__file__).parents[1] / "jobside"
GUARD_SOURCE = _PAYLOADS / "engine_guard.py"
RUNNER_SOURCE = _PAYLOADS / "batch_runner.py"
ENGINE_PAYLOADS = (GUARD_SOURCE,)
BATCH_PAYLOADS = (RUNNER_SOURCE, GUARD_SOURCE)


def write_key(path: Path, key: str) -> None:
    """An engine's key, readable by the user alone (created 0600 before anything is written)."""
    path.touch(mode=0o600)
    path.write_text(key)


def read_key(folder: Path) -> Optional[str]:
    """The key in a job folder; None when there is none (yet) or it cannot be read."""
    try:
        return (folder / KEY_FILE).read_text().strip()
    except OSError:
        return None


def prepare_engine_folder(job_root: Path, job_dir: Path, key: str) -> None:
    """An engine's folder with a new key and the guard. A restart reuses its folder; one made
    under another server's root is checked there."""
    if job_dir.is_relative_to(job_root):
        private_folder(job_root, job_dir.relative_to(job_root))
    else:
        private_folder(job_dir.parent, job_dir.name)
    write_key(job_dir / KEY_FILE, key)
    copy_payloads(job_dir, ENGINE_PAYLOADS)


def prepare_batch_folder(folder: Path, source: Path) -> None:
    """A batch's folder (``<root>/batches/<id>``) with its input and payloads; its key is
    written for each run."""
    private_folder(folder.parent.parent, Path(folder.parent.name, folder.name))
    shutil.copyfile(source, folder / BATCH_INPUT)
    copy_payloads(folder, BATCH_PAYLOADS)


def copy_payloads(folder: Path, payloads: tuple[Path, ...]) -> None:
    """Copy job-side code into ``folder``; ``ConfigError`` when the installation lacks it."""
    for payload in payloads:
        if not payload.is_file():
            raise ConfigError(f"{payload} is missing from the installation (reinstall "
                              f"jupyter-osire-llm): no job is submitted without {payload.name}")
        shutil.copyfile(payload, folder / payload.name)
