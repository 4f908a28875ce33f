"""The two-node test cluster (``OSIRE_SLURM_NODES=2 scripts/slurm-cluster.sh start``, issue 19):
a ``--nodes=2`` job runs, ``srun`` inside it starts one task on each namespaced node, and the
nodes reach each other over TCP by their addresses.

A separate cluster (its own folder, munge socket, ports and config via SLURM_CONF): the default
cluster and /etc/slurm/slurm.conf are left alone. Started, never stopped (like the default one).
Needs root (network namespaces); skipped otherwise.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from two_nodes import start_two_nodes

pytestmark = pytest.mark.root

JOB = """#!/bin/bash
#SBATCH --nodes=2 --ntasks-per-node=1 --time=2
set -e
srun hostname | sort > {out}/hosts
srun bash -c 'echo "$SLURM_NODEID $(hostname)"' | sort > {out}/ranks
srun --nodes=1 --ntasks=1 -w node2 {py} -c '
import socket
s = socket.socket(); s.bind(("10.77.0.12", 7777)); s.listen()
open("{out}/listening", "w").close()
c, peer = s.accept(); print(c.recv(5).decode(), peer[0])' > {out}/tcp &
for i in $(seq 100); do [ -e {out}/listening ] && break; sleep 0.1; done
srun --nodes=1 --ntasks=1 -w node1 {py} -c '
import socket
socket.create_connection(("10.77.0.12", 7777), timeout=10).sendall(b"hello")'
wait
"""


@pytest.fixture(scope="module")
def two_nodes() -> dict:
    return start_two_nodes()


def test_srun_reaches_both_nodes_and_they_talk_tcp(two_nodes: dict, tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    script = tmp_path / "job.sh"
    script.write_text(JOB.format(out=tmp_path, py=sys.executable))
    run = subprocess.run(["sbatch", "--wait", "--parsable", "-o", str(tmp_path / "job.out"),
                          str(script)], env=two_nodes, capture_output=True, text=True,
                         timeout=120, check=False)
    log = (tmp_path / "job.out").read_text() if (tmp_path / "job.out").exists() else ""
    assert run.returncode == 0, f"{run.stdout}{run.stderr}\n{log}"
    assert (tmp_path / "hosts").read_text().split() == ["node1", "node2"], log
    assert (tmp_path / "ranks").read_text().splitlines() == ["0 node1", "1 node2"], log
    assert (tmp_path / "tcp").read_text().split() == ["hello", "10.77.0.11"], log
