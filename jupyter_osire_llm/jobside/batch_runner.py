"""The job side of a batch: send each request of ``input.jsonl`` to the engine started next to it,
and append each answer to ``output.jsonl`` (or ``errors.jsonl``) the moment it arrives.

Runs on the compute node with the node's ``python3`` (standard library only: it is copied into
the job folder, like ``engine_guard.py``). Results are appended line by line and flushed, so a
job that is killed or hits its time limit keeps every answer it got; a resumed job skips every
``custom_id`` already answered. ``progress.json`` says how far it got (the monitor reads it).

The engine is reached over its Unix socket in a private folder (``--uds``) or over HTTPS pinned
to the certificate made for this run (``--url https://... --pin-cert``): another process on the
node that took a port gets neither the key nor a prompt. ``http.client`` is used directly, so no
environment proxy is ever involved. A request answered 429 or 5xx, or cut off, while the engine
process runs is tried again with backoff; when the process is gone the runner stops and leaves
the rest unanswered for a resume.

Lines are in the OpenAI Batch output format::

    {"id": "batch_req_...", "custom_id": "...", "response": {"status_code": 200,
     "request_id": "...", "body": {...}}, "error": null}
"""
from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import secrets
import socket
import ssl
import stat
import sys
import threading
import time
import urllib.parse
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any, Iterator, Optional

PROGRESS_EVERY = 1.0     # seconds between progress.json writes
#: Exit statuses (the server reads the phase in progress.json).
ENGINE_FAILED, ENGINE_DIED, ENGINE_IMPOSTOR = 3, 4, 5
#: A request answered 429 or 5xx, or cut off, while the engine runs is sent again so many times,
#: after RETRY_DELAY s, doubled each time (or the engine's Retry-After), at most MAX_WAIT s.
RETRIES, RETRY_DELAY, MAX_WAIT = 3, 1.0, 60.0


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


class Impostor(Exception):
    """Something other than this run's engine answered where it listens: nothing was sent."""


class _UnixConnection(http.client.HTTPConnection):
    """HTTP over the engine's Unix socket, connected only once its folder proved private."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.socket_path = path

    def connect(self) -> None:
        _check_private(self.socket_path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.socket_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class _PinnedConnection(http.client.HTTPSConnection):
    """HTTPS to the engine on the loopback, believed only with this run's certificate."""

    def __init__(self, host: str, port: int, fingerprint: str, timeout: float) -> None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE   # the pin below is the check
        super().__init__(host, port, timeout=timeout, context=context)
        self.fingerprint = fingerprint

    def connect(self) -> None:
        try:
            super().connect()
        except ssl.SSLEOFError:
            raise   # cut off mid-handshake (starting, stopping): try again
        except ssl.SSLError as exc:
            raise Impostor(f"the server on {self.host}:{self.port} does not speak TLS as the "
                           f"engine does ({exc.reason or exc})") from None
        der = self.sock.getpeercert(binary_form=True) or b""
        if hashlib.sha256(der).hexdigest() != self.fingerprint:
            self.close()
            raise Impostor(f"the server on {self.host}:{self.port} shows another certificate "
                           "than the one made for this run")


class Transport:
    """How the runner reaches its engine: a Unix socket in a private folder, HTTPS pinned to the
    run's certificate, or (an engine the catalog marks insecure) plain loopback HTTP. Never an
    environment proxy: ``http.client`` knows none."""

    def __init__(self, uds: Optional[str] = None, url: Optional[str] = None,
                 pin_cert: Optional[str] = None) -> None:
        self.uds, self.fingerprint = uds, None
        if uds is None:
            parts = urllib.parse.urlsplit(url or "")
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"not an engine URL: {url!r}")
            self.host, self.port = parts.hostname, parts.port or 80
            self.tls = parts.scheme == "https"
            if self.tls:
                if not pin_cert:
                    raise ValueError("an https engine needs --pin-cert (its run's certificate)")
                pem = Path(pin_cert).read_text()
                self.fingerprint = hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem)).hexdigest()

    def connect(self, timeout: float) -> http.client.HTTPConnection:
        """A connection to the engine, made and checked before anything is sent on it."""
        conn: http.client.HTTPConnection
        if self.uds is not None:
            conn = _UnixConnection(self.uds, timeout)
        elif self.fingerprint is not None:
            conn = _PinnedConnection(self.host, self.port, self.fingerprint, timeout)
        else:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        conn.connect()
        return conn

    def exchange(self, method: str, path: str, body: Optional[bytes], headers: dict[str, str],
                 timeout: float) -> tuple[int, Optional[str], bytes]:
        """One request: the status, the Retry-After header and the body."""
        conn = self.connect(timeout)
        try:
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            return response.status, response.getheader("Retry-After"), response.read()
        finally:
            conn.close()


def _check_private(path: str) -> None:
    """The socket's folder is a real folder of this user that no one else may enter, and the
    socket is this user's: no other user can have put it there."""
    folder = os.path.dirname(os.path.abspath(path))
    info = os.lstat(folder)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise Impostor(f"the engine's socket folder {folder} is not a private folder of this "
                       "user")
    sock = os.lstat(path)   # FileNotFoundError while the engine starts
    if not stat.S_ISSOCK(sock.st_mode) or sock.st_uid != os.getuid():
        raise Impostor(f"{path} is not this user's socket")


def _retryable(status: int) -> bool:
    return status == 429 or status >= 500


def _backoff(attempt: int, delay: float, retry_after: Optional[str]) -> float:
    """``delay`` doubled per attempt; a longer Retry-After (seconds) wins, up to MAX_WAIT."""
    wait_s = delay * 2 ** attempt
    if retry_after and retry_after.strip().isdigit():
        wait_s = max(wait_s, float(retry_after))
    return min(wait_s, MAX_WAIT)


def call(engine: Transport, key: str, request: dict, timeout: float,
         engine_pid: Optional[int] = None, retries: int = RETRIES,
         retry_delay: float = RETRY_DELAY) -> tuple[dict, bool]:
    """One request to the engine, tried again (``retries`` times, with backoff) after a 429,
    a 5xx or a connection error while the engine runs; the result line, and whether it
    succeeded. Raises EngineGone when the engine process is gone, Impostor when something else
    answers."""
    body = json.dumps(request["body"]).encode()
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
    for attempt in range(retries + 1):
        last = attempt == retries
        _check_engine(engine_pid)
        try:
            status, retry_after, payload = engine.exchange("POST", request["url"], body,
                                                           headers, timeout)
        except (OSError, ValueError, http.client.HTTPException) as exc:   # refused, reset
            if engine_pid and _ending(engine_pid):
                raise EngineGone(str(exc)) from None
            if last:
                return _line(request, None, None, {"code": "engine_unreachable",
                                                   "message": str(exc)}), False
            time.sleep(_backoff(attempt, retry_delay, None))
            continue
        if not _retryable(status):
            return _answer(request, status, payload)
        _check_engine(engine_pid)   # a dying engine's 5xx is not the request's failure
        if last:
            return _answer(request, status, payload)
        time.sleep(_backoff(attempt, retry_delay, retry_after))
    raise ValueError(f"retries must be 0 or more, got {retries}")


def _check_engine(engine_pid: Optional[int]) -> None:
    if engine_pid and not _alive(engine_pid):
        raise EngineGone(f"engine process {engine_pid} is gone")


def _answer(request: dict, status: int, payload: bytes) -> tuple[dict, bool]:
    try:
        answer = json.loads(payload)
    except ValueError:
        answer = {"raw": payload.decode(errors="replace")[:2000]}
    error = None
    if status != 200:
        message = answer.get("error", {}).get("message") if isinstance(answer, dict) and \
            isinstance(answer.get("error"), dict) else None
        error = {"code": f"http_{status}", "message": message or f"engine answered {status}"}
    return _line(request, status, answer, error), status == 200


def _line(request: dict, status: Optional[int], answer: Any, error: Optional[dict]) -> dict:
    response = None if status is None else {
        "status_code": status, "request_id": f"req_{secrets.token_hex(12)}", "body": answer}
    return {"id": f"batch_req_{secrets.token_hex(12)}", "custom_id": request["custom_id"],
            "response": response, "error": error}


def wait_healthy(engine: Transport, deadline: float, engine_pid: Optional[int]) -> bool:
    """Whether the engine answers ``/health`` (no key is sent) before ``deadline``, while its
    process runs. Raises Impostor when something else answers where it listens."""
    while time.monotonic() < deadline:
        if engine_pid and not _alive(engine_pid):
            return False
        try:
            if engine.exchange("GET", "/health", None, {}, 5)[0] == 200:
                return True
        except (OSError, ValueError, http.client.HTTPException):
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
    engine = Transport(uds=args.uds, url=args.url, pin_cert=args.pin_cert)
    total = sum(1 for _ in read_requests(folder / "input.jsonl"))
    results = Results(folder / "output.jsonl", folder / "errors.jsonl",
                      folder / "progress.json", total)
    results.write_progress("starting")
    try:
        if not wait_healthy(engine, time.monotonic() + args.startup_timeout, args.engine_pid):
            print("osire batch: the engine did not become healthy", file=sys.stderr)
            results.write_progress("engine-failed")
            return ENGINE_FAILED
        results.write_progress("running")
        _work_through(results, args, engine, key, folder)
    except EngineGone as exc:
        print(f"osire batch: the engine stopped ({exc}); {total - len(results.done)} requests "
              "left unanswered", file=sys.stderr)
        results.write_progress("engine-died")
        results.close()
        return ENGINE_DIED
    except Impostor as exc:
        print(f"osire batch: not the batch's engine, nothing sent to it: {exc}", file=sys.stderr)
        results.write_progress("engine-impostor")
        results.close()
        return ENGINE_IMPOSTOR
    results.write_progress("done")
    results.close()
    print(f"osire batch: {results.completed} completed, {results.failed} failed of {total}")
    return 0


def _work_through(results: Results, args: argparse.Namespace, engine: Transport, key: str,
                  folder: Path) -> None:
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
                running.add(pool.submit(_one, results, args, engine, key, request))
            _check(wait(running)[0])
        finally:
            for future in running:
                future.cancel()


def _one(results: Results, args: argparse.Namespace, engine: Transport, key: str,
         request: dict) -> None:
    line, ok = call(engine, key, request, args.request_timeout, args.engine_pid, args.retries,
                    args.retry_delay)
    results.add(request["custom_id"], line, ok)


def _check(finished: set[Future]) -> None:
    for future in finished:
        future.result()   # a bug in the runner must not pass silently


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Run a batch's requests against a local engine.")
    parser.add_argument("--folder", required=True)
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--uds", help="the engine's Unix socket, in a private folder")
    where.add_argument("--url", help="the engine on the loopback, e.g. https://127.0.0.1:8000")
    parser.add_argument("--pin-cert", help="the run's certificate an https engine must show")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--startup-timeout", type=float, default=1800.0)
    parser.add_argument("--request-timeout", type=float, default=600.0)
    parser.add_argument("--engine-pid", type=int, default=None)
    parser.add_argument("--retries", type=int, default=RETRIES)
    parser.add_argument("--retry-delay", type=float, default=RETRY_DELAY)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
