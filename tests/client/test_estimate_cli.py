"""The estimate from a terminal and a notebook's front end: ``jupyter osire launch --estimate``
prints it and launches nothing; a launch whose estimate crosses the site's cost threshold asks
first, and from a script (no terminal) is not launched unless ``--yes``. Real Slurm, the test
partition's billing weights, a real Jupyter server found by the CLI's discovery."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import Server, osire_config, stop_server

pytestmark = [pytest.mark.timeout(300), pytest.mark.slurm]


@pytest.fixture(scope="module")
def server(slurm_cluster, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("estimate-cli")
    # fake-chat: 1 CPU, 1 GB by default -> 1 billing unit; 10 minutes = 0.17 unit-hours > 0.01
    srv = Server(tmp / "server", {**osire_config(tmp, "slurm"), "confirm_cost": 0.01}).start()
    yield srv
    stop_server(srv)


def osire(server, *args):
    result = subprocess.run([sys.executable, "-m", "jupyter_osire_llm.cli", *args],
                            capture_output=True, text=True, timeout=120, env=server.client_env(),
                            stdin=subprocess.DEVNULL)
    assert server.token not in result.stdout + result.stderr
    return result


def test_estimate_prints_and_launches_nothing(server):
    text = osire(server, "launch", "fake-chat", "--time", "00:10:00", "--estimate")
    assert text.returncode == 0, text.stderr
    assert text.stdout.startswith("fake-chat: starts now on ") and "GPU-h" in text.stdout
    doc = json.loads(osire(server, "launch", "fake-chat", "--time", "00:10:00", "--estimate",
                           "--json").stdout)
    assert doc["within_limits"] is True and doc["billing"]["units"] >= 1
    assert doc["confirm"].startswith("it may cost ")
    assert server.request("GET", "osire/api/deployments")[1]["deployments"] == []


def test_a_launch_over_the_cost_threshold_asks_and_a_script_needs_yes(server):
    refused = osire(server, "launch", "fake-chat", "--time", "00:10:00")
    assert refused.returncode == 4, refused
    assert "not launched: it may cost" in refused.stderr and "--yes" in refused.stderr
    assert server.request("GET", "osire/api/deployments")[1]["deployments"] == []
    launched = osire(server, "launch", "fake-chat", "--time", "00:10:00", "--yes", "--json")
    assert launched.returncode == 0, launched.stderr
    deployment = json.loads(launched.stdout)
    server.request("DELETE", f"osire/api/deployments/{deployment['id']}")
    server.wait_state(deployment["id"], {"stopped", "failed"})
