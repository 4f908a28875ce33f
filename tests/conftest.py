"""Shared test set-up: the pytest-jupyter server fixtures, tests/ on sys.path, the Slurm cluster,
and what lets several pytest processes (``pytest -n``, other sessions) share that one cluster:

- ``slurm_cluster`` starts it under a file lock, so workers calling it at once start it once.
- Every test holds the cluster lock shared; a test marked ``cluster_exclusive`` (it stops the
  controller, or needs both fake GPUs free) holds it alone, so it runs while no other test does.
- Real-vLLM tests (marker ``vllm``) hold the ``vllm`` lock alone from their module's first test
  to its last one's teardown (module fixtures keep engines between tests), so at most one engine
  (about 3 GB and a core) runs at a time. Under ``--dist loadfile`` (scripts/test.sh) a module's
  tests stay on one worker. (Not ``xdist_group``: pytest-xdist 3.8 marks groups by rewriting
  ``item._nodeid``, which pytest 9.2 no longer reads, so ``--dist loadgroup`` splits modules.)
"""
from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

import pytest

pytest_plugins = ["pytest_jupyter.jupyter_server"]

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))


#: Lock files beside the cluster's folder (scripts/slurm-cluster.sh): one set per cluster.
LOCKS = Path(os.environ.get("OSIRE_SLURM_DIR", "/tmp/osire-slurm") + ".locks")


def _cluster_script(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(REPO / "scripts" / "slurm-cluster.sh"), *args],
                          capture_output=True, text=True, timeout=300)


@contextmanager
def _flock(name: str, mode: int) -> Iterator[None]:
    LOCKS.mkdir(parents=True, exist_ok=True)
    with open(LOCKS / name, "a") as handle:
        fcntl.flock(handle, mode)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextmanager
def cluster_lock(exclusive: bool) -> Iterator[None]:
    """Readers-writer lock on the test cluster across processes. A waiting writer holds the
    turnstile, so readers arriving after it wait too and it is not starved."""
    mode = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
    LOCKS.mkdir(parents=True, exist_ok=True)
    with open(LOCKS / "cluster", "a") as cluster:
        with _flock("turnstile", fcntl.LOCK_EX):
            fcntl.flock(cluster, mode)
        try:
            yield
        finally:
            fcntl.flock(cluster, fcntl.LOCK_UN)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "cluster_exclusive: stops the Slurm controller or needs "
                            "both fake GPUs free; runs while no other test holds the cluster")


_vllm_lock: list = []       # the open lock file while this process holds the vllm lock


def _module_of(item: Optional[pytest.Item]) -> Optional[str]:
    return item.nodeid.split("::")[0] if item is not None else None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: Optional[pytest.Item]) -> Iterator[None]:
    """Set-up, call and teardown (module fixtures included) under the cluster lock; a real-vLLM
    module under the vllm lock (taken before the cluster lock: one order, no deadlock)."""
    if item.get_closest_marker("vllm") and not _vllm_lock:
        LOCKS.mkdir(parents=True, exist_ok=True)
        handle = open(LOCKS / "vllm", "a")
        fcntl.flock(handle, fcntl.LOCK_EX)
        _vllm_lock.append(handle)
    try:
        with cluster_lock(item.get_closest_marker("cluster_exclusive") is not None):
            yield
    finally:
        if _vllm_lock and _module_of(nextitem) != _module_of(item):
            _vllm_lock.pop().close()        # closing the file releases the lock


@pytest.fixture(scope="session")
def slurm_cluster() -> str:
    """The real single-node Slurm, started by the project's script (left running afterwards).

    Skipped, with the reason, when it cannot start here; in CI (CI=true) that is a failure.
    """
    if os.environ.get("OSIRE_SKIP_SLURM"):
        pytest.skip("OSIRE_SKIP_SLURM is set")
    with _flock("start", fcntl.LOCK_EX):          # xdist workers ask at once: start it once
        result = _cluster_script("start")
    if result.returncode != 0 or shutil.which("sbatch") is None:
        message = f"Slurm test cluster did not start:\n{result.stdout}\n{result.stderr}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return "slurm"
