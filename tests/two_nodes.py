"""The two-node test cluster (``OSIRE_SLURM_NODES=2 scripts/slurm-cluster.sh start``): node1 and
node2, each a slurmd in its own network, UTS and mount namespace, 2 fake GPUs each. A separate
cluster (its own folder, munge socket, ports, config via SLURM_CONF): the default one is left
alone. Started once by whichever test needs it first (a file lock: parallel workers), never
stopped. Needs root; skipped otherwise (failed under CI=true, where it must run)."""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DIR = "/tmp/osire-slurm-2n"
CONF = f"{DIR}/etc/slurm.conf"


def start_two_nodes() -> dict:
    """The environment that points Slurm's commands at the two-node cluster, started if needed."""
    if os.geteuid() != 0:
        pytest.skip("the two-node cluster needs root (network namespaces)")
    missing = [t for t in ("ip", "unshare", "nsenter", "sbatch") if shutil.which(t) is None]
    if missing:
        pytest.skip(f"missing {missing}")
    env = {**os.environ, "OSIRE_SLURM_NODES": "2", "OSIRE_SLURM_DIR": DIR}
    Path(DIR + ".locks").mkdir(parents=True, exist_ok=True)
    with open(DIR + ".locks/start", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        result = subprocess.run(["bash", str(REPO / "scripts" / "slurm-cluster.sh"), "start"],
                                env=env, capture_output=True, text=True, timeout=300,
                                check=False)
    if result.returncode != 0:
        message = f"two-node cluster did not start:\n{result.stdout}\n{result.stderr}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    assert f"export SLURM_CONF={CONF}" in result.stdout
    return {**os.environ, "SLURM_CONF": CONF}


def rank_info(folder: Path, rank: int, timeout: float = 10) -> dict:
    """``{"rank", "node", "pid"}`` of a multi-node replica's rank, as its job wrote it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (folder / f"rank-{rank}.json").exists():
            return json.loads((folder / f"rank-{rank}.json").read_text())
        time.sleep(0.1)
    raise AssertionError(f"rank {rank} never started: {sorted(os.listdir(folder))}")
