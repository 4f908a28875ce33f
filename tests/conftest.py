"""Shared test set-up: the pytest-jupyter server fixtures, tests/ on sys.path, the Slurm cluster,
and what lets several pytest processes (``pytest -n``, other sessions) share that one cluster:

- ``slurm_cluster`` starts it under a file lock, so workers calling it at once start it once.
- Every test holds the cluster lock shared; a test marked ``cluster_exclusive`` (it stops the
  controller, or needs both fake GPUs free) holds it alone, so it runs while no other test does.
- Under ``--dist loadgroup`` (scripts/test.sh) a module's tests stay on one worker (its module
  fixtures start once), and all real-vLLM tests (marker ``vllm``) share one worker, so at most
  one engine (about 3 GB and a core) runs at a time.
"""
from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

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


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Before xdist reads ``xdist_group``: real-vLLM tests in one group, others by module."""
    for item in items:
        if item.get_closest_marker("xdist_group") is None:
            group = "vllm" if item.get_closest_marker("vllm") else item.nodeid.split("::")[0]
            item.add_marker(pytest.mark.xdist_group(group))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: object) -> Iterator[None]:
    """Set-up, call and teardown (module fixtures included) under the cluster lock."""
    with cluster_lock(item.get_closest_marker("cluster_exclusive") is not None):
        yield


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
