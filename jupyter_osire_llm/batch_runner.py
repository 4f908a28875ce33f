"""The job side of a batch: send each request of ``input.jsonl`` to the engine started next to it,
and append each answer to ``output.jsonl`` (or ``errors.jsonl``) the moment it arrives.

Runs on the compute node with the node's ``python3`` (standard library only: it is copied into
the job folder, like ``engine_guard.py``). Results are appended line by line and flushed, so a
job that is killed or hits its time limit keeps every answer it got; a resumed job skips every
``custom_id`` already answered. ``progress.json`` says how far it got (the monitor reads it).

Lines are in the OpenAI Batch output format::

    {"id": "batch_req_...", "custom_id": "...", "response": {"status_code": 200,
     "request_id": "...", "body": {...}}, "error": null}
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import secrets
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Iterator, Optional

PROGRESS_EVERY = 1.0     # seconds between progress.json writes
ENGINE_FAILED, ENGINE_DIED = 3, 4   # exit statuses (the server reads the phase in progress.json)


class EngineGone(Exception):
    """The engine process ended: what is left stays unanswered (for a resume), not failed."""


class Results:
    """The two append-only result files and the counts, shared by the worker threads."""

    def __init__(self, output: Path, errors: Path, progress: Path, total: int) -> None:
        self.progress_path, self.total = progress, total
        self.done = {**_answered(output), **_answered(errors)}
        self.completed = sum(1 for ok in self.done.values() if ok)
        self.failed = len(self.done) - self.completed
        self._files = {True: output.open("a"), False: errors.open("a")}
        self._lock = threading.Lock()
        self._written = 0.0

    def add(self, custom_id: str, line: dict, ok: bool) -> None:
        with self._lock:
            out = self._files[ok]
            out.write(json.dumps(line) + "\n")
            out.flush()
            self.completed += ok
            self.failed += not ok
            if time.monotonic() - self._written >= PROGRESS_EVERY:
                self.write_progress("running")

    def write_progress(self, phase: str) -> None:
        self._written = time.monotonic()
        tmp = self.progress_path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"total": self.total, "completed": self.completed,
                                   "failed": self.failed, "phase": phase,
                                   "updated": time.time()}))
        tmp.replace(self.progress_path)

    def close(self) -> None:
        for out in self._files.values():
            out.close()


def _answered(path: Path) -> dict[str, bool]:
    """custom_id -> answered well, from a result file; a torn last line (the job was killed
    while writing it) is cut off so that appending goes on from a clean line."""
    if not path.exists():
        return {}
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        data = data[:data.rfind(b"\n") + 1]
        with path.open("r+b") as f:
            f.truncate(len(data))
    answered = {}
    for raw in data.splitlines():
        try:
            line = json.loads(raw)
            answered[line["custom_id"]] = line.get("error") is None
        except (ValueError, KeyError, TypeError):
            continue
    return answered


def read_requests(path: Path) -> Iterator[dict]:
    """The input's requests (validated by the server before the job was submitted), its lines
    split at b"\\n" only, as the server's check split them (batch_input.split_lines): a text-mode
    read would also split at a bare \\r and see other requests than the server checked."""
    with path.open("rb") as f:
        for raw in f:
            if raw.strip():
                yield json.loads(raw)


def call(base_url: str, key: str, request: dict, timeout: float,
         engine_pid: Optional[int] = None) -> tuple[dict, bool]:
    """One request to the engine; the result line, and whether it succeeded."""
    body = json.dumps(request["body"]).encode()
    outgoing = urllib.request.Request(base_url + request["url"], data=body, method="POST",
                                  headers={"Content-Type": "application/json",
                                           "Authorization": f"Bearer {key}"})
    request_id = f"req_{secrets.token_hex(12)}"
    line: dict = {"id": f"batch_req_{secrets.token_hex(12)}", "custom_id": request["custom_id"],
                  "response": None, "error": None}
    try:
        with urllib.request.urlopen(outgoing, timeout=timeout) as response:
            status, payload = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, payload = exc.code, exc.read()
    except (OSError, ValueError, http.client.HTTPException) as exc:   # refused, reset, cut off
        if engine_pid and _ending(engine_pid):
            raise EngineGone(str(exc)) from None
        line["error"] = {"code": "engine_unreachable", "message": str(exc)}
        return line, False
    try:
        answer = json.loads(payload)
    except ValueError:
        answer = {"raw": payload.decode(errors="replace")[:2000]}
    line["response"] = {"status_code": status, "request_id": request_id, "body": answer}
    if status != 200:
        message = answer.get("error", {}).get("message") if isinstance(answer, dict) and \
            isinstance(answer.get("error"), dict) else None
        line["error"] = {"code": f"http_{status}", "message": message or f"engine answered {status}"}
    return line, status == 200


def wait_healthy(base_url: str, deadline: float, engine_pid: Optional[int]) -> bool:
    while time.monotonic() < deadline:
        if engine_pid and not _alive(engine_pid):
            return False
        try:
            with urllib.request.urlopen(base_url + "/health", timeout=5) as response:
                if response.status == 200:
                    return True
        except (OSError, ValueError):
            pass
        time.sleep(1)
    return False


def _ending(pid: int, grace: float = 2.0) -> bool:
    """Whether the engine is gone, or going within ``grace`` seconds: a killed process closes
    its sockets (our request fails) a moment before it is seen to have exited."""
    deadline = time.monotonic() + grace
    while _alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True


def _alive(pid: int) -> bool:
    """Whether the process runs; a zombie (dead, not yet reaped by the job script) does not."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
    except (OSError, IndexError):
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def run(args: argparse.Namespace) -> int:
    folder = Path(args.folder)
    key = (folder / "key").read_text().strip()
    total = sum(1 for _ in read_requests(folder / "input.jsonl"))
    results = Results(folder / "output.jsonl", folder / "errors.jsonl",
                      folder / "progress.json", total)
    results.write_progress("starting")
    if not wait_healthy(args.url, time.monotonic() + args.startup_timeout, args.engine_pid):
        print("osire batch: the engine did not become healthy", file=sys.stderr)
        results.write_progress("engine-failed")
        return ENGINE_FAILED
    results.write_progress("running")
    try:
        _work_through(results, args, key, folder)
    except EngineGone as exc:
        print(f"osire batch: the engine stopped ({exc}); {total - len(results.done)} requests "
              "left unanswered", file=sys.stderr)
        results.write_progress("engine-died")
        results.close()
        return ENGINE_DIED
    results.write_progress("done")
    results.close()
    print(f"osire batch: {results.completed} completed, {results.failed} failed of {total}")
    return 0


def _work_through(results: Results, args: argparse.Namespace, key: str, folder: Path) -> None:
    """Every request not answered yet, ``args.concurrency`` at a time."""
    pending = (r for r in read_requests(folder / "input.jsonl")
               if r["custom_id"] not in results.done)
    with ThreadPoolExecutor(args.concurrency) as pool:
        running: set[Future] = set()
        try:
            for request in pending:
                if len(running) >= args.concurrency:
                    finished, running = wait(running, return_when=FIRST_COMPLETED)
                    _check(finished)
                running.add(pool.submit(_one, results, args, key, request))
            _check(wait(running)[0])
        finally:
            for future in running:
                future.cancel()


def _one(results: Results, args: argparse.Namespace, key: str, request: dict) -> None:
    line, ok = call(args.url, key, request, args.request_timeout, args.engine_pid)
    results.add(request["custom_id"], line, ok)


def _check(finished: set[Future]) -> None:
    for future in finished:
        future.result()   # a bug in the runner must not pass silently


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Run a batch's requests against a local engine.")
    parser.add_argument("--folder", required=True)
    parser.add_argument("--url", required=True, help="the engine, e.g. http://127.0.0.1:8000")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--startup-timeout", type=float, default=1800.0)
    parser.add_argument("--request-timeout", type=float, default=600.0)
    parser.add_argument("--engine-pid", type=int, default=None)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
