"""``jupyter osire`` against a real server on the local backend."""
from __future__ import annotations

import subprocess
import sys

import pytest

from lifecycle_catalog import write_catalog
from server_process import JupyterServer


@pytest.fixture
def server(tmp_path):
    srv = JupyterServer(tmp_path / "server", {
        "scheduler": "local", "catalog": str(write_catalog(tmp_path / "c.yaml")),
        "job_root": str(tmp_path / "jobs"), "db_path": str(tmp_path / "state.sqlite"),
        "monitor_fast_interval": 0.2})
    srv.start()
    yield srv
    srv.stop_all_deployments()
    srv.stop()


def osire(server, *args):
    return subprocess.run([sys.executable, "-m", "jupyter_osire_llm.cli", "--url", server.url,
                           "--token", server.token, *args], capture_output=True, text=True,
                          timeout=60)


def test_cli_launch_list_logs_stop(server):
    assert "fake-chat" in osire(server, "catalog").stdout
    launched = osire(server, "launch", "fake-chat", "--time", "00:05:00")
    assert launched.returncode == 0, launched.stderr
    deployment_id = launched.stdout.split()[0]
    server.wait_state(deployment_id, {"ready"})
    assert "ready" in osire(server, "list").stdout
    assert "starting engine" in osire(server, "logs", deployment_id).stdout
    assert "stopp" in osire(server, "stop", deployment_id).stdout


def test_cli_reports_errors_plainly(server):
    bad = osire(server, "launch", "fake-chat", "--gpus", "99")
    assert bad.returncode != 0 and "resources.gpus" in bad.stderr
    unknown = osire(server, "launch", "nope")
    assert "error 404" in unknown.stderr and "fake-chat" in unknown.stderr
