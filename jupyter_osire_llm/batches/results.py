"""A batch's folder between runs: a new run's key and fresh files, the runner's progress, and
its results (counted, sized and served up to their last complete line: a killed job may have
torn the last one)."""
from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Optional

from ..core.jobfiles import KEY_FILE, read_key, write_key
from ..core.logtail import read_tail

OUTPUT, ERRORS, PROGRESS, LOG = "output.jsonl", "errors.jsonl", "progress.json", "job.log"


def ended_run(folder: Path) -> tuple[tuple[int, int], Optional[str], str]:
    """What a finished job left: its counts, the runner's last phase, its log's tail."""
    try:
        phase = json.loads((folder / PROGRESS).read_text()).get("phase")
    except (OSError, ValueError, AttributeError):
        phase = None
    tail = read_tail(folder / LOG, 20) or ""
    key = read_key(folder)
    return count_results(folder), phase, tail.replace(key, "***") if key else tail


def new_run(folder: Path, retry_failed: bool = False) -> Optional[Path]:
    """A fresh key, and no exit status, progress or log of an earlier run taken for this one's.
    With ``retry_failed`` the earlier errors move to ``errors.<n>.jsonl`` (returned), so that
    the runner asks those requests again."""
    write_key(folder / KEY_FILE, secrets.token_urlsafe(32))
    (folder / "exit_status").unlink(missing_ok=True)
    (folder / PROGRESS).unlink(missing_ok=True)
    log_file = folder / LOG
    if log_file.exists():
        runs = len(list(folder.glob("job.*.log")))
        log_file.rename(folder / f"job.{runs + 1}.log")
    errors = folder / ERRORS
    if not retry_failed or not errors.exists():
        return None
    earlier = folder / f"errors.{len(list(folder.glob('errors.*.jsonl'))) + 1}.jsonl"
    errors.rename(earlier)
    return earlier


def restore_errors(folder: Path, earlier: Optional[Path]) -> None:
    """Undo ``new_run``'s move of the errors: the run was never submitted."""
    if earlier is not None and not (folder / ERRORS).exists():
        earlier.rename(folder / ERRORS)


def read_all_progress(folders: list[Path]) -> list[Optional[tuple[int, int]]]:
    return [_read_progress(folder) for folder in folders]


def _read_progress(folder: Path) -> Optional[tuple[int, int]]:
    try:
        doc = json.loads((folder / PROGRESS).read_text())
        return int(doc["completed"]), int(doc["failed"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def count_results(folder: Path) -> tuple[int, int]:
    """Requests answered well and badly: distinct ``custom_id``s of complete result lines."""
    return len(_ids(folder / OUTPUT)), len(_ids(folder / ERRORS))


def _ids(path: Path) -> set[str]:
    ids = set()
    for raw in _complete_lines(path).splitlines():
        try:
            ids.add(json.loads(raw)["custom_id"])
        except (ValueError, KeyError, TypeError):
            continue
    return ids


def _complete_lines(path: Path) -> bytes:
    """A result file up to its last complete line (a killed job may have torn the last one)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return b""
    return data[:data.rfind(b"\n") + 1]


def complete_size(path: Path, chunk: int = 65536) -> int:
    """``len(_complete_lines(path))`` from the file's end: a batch listing (polled by the
    sidebar) must not read every result file whole."""
    try:
        with path.open("rb") as f:
            end = f.seek(0, 2)
            while end > 0:
                start = max(0, end - chunk)
                f.seek(start)
                newline = f.read(end - start).rfind(b"\n")
                if newline >= 0:
                    return start + newline + 1
                end = start
    except FileNotFoundError:
        pass
    return 0
