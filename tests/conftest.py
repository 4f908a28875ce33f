"""Shared test set-up: the pytest-jupyter server fixtures, tests/ on sys.path, the Slurm cluster."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest_plugins = ["pytest_jupyter.jupyter_server"]

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))


def _cluster_script(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(REPO / "scripts" / "slurm-cluster.sh"), *args],
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="session")
def slurm_cluster() -> str:
    """The real single-node Slurm, started by the project's script (left running afterwards).

    Skipped, with the reason, when it cannot start here; in CI (CI=true) that is a failure.
    """
    if os.environ.get("OSIRE_SKIP_SLURM"):
        pytest.skip("OSIRE_SKIP_SLURM is set")
    result = _cluster_script("start")
    if result.returncode != 0 or shutil.which("sbatch") is None:
        message = f"Slurm test cluster did not start:\n{result.stdout}\n{result.stderr}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return "slurm"
