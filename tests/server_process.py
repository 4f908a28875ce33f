"""A real ``jupyter server`` subprocess with the extension, for restart and end-to-end tests."""
from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Optional

from engine_tools import free_port


class JupyterServer:
    """``base_url``: as under Open OnDemand (``/node/<host>/<port>/``); default ``/``."""

    def __init__(self, workdir: Path, osire: dict[str, Any], env: Optional[dict] = None,
                 base_url: str = "/") -> None:
        self.workdir, self.osire, self.base_url = workdir, osire, base_url
        self.token = secrets.token_hex(16)
        self.port = free_port()
        self.env = {**os.environ, **(env or {}), "JUPYTER_CONFIG_DIR": str(workdir / "config"),
                    "JUPYTER_DATA_DIR": str(workdir / "data"),
                    "JUPYTER_RUNTIME_DIR": str(workdir / "runtime")}
        self.proc: Optional[subprocess.Popen] = None
        self.log_path = workdir / "jupyter-server.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.base_url}"

    def start(self, timeout: float = 60) -> "JupyterServer":
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = {"ServerApp": {"jpserver_extensions": {"jupyter_osire_llm": True}},
                  "IdentityProvider": {"token": self.token}, "OsireLLM": self.osire}
        (self.workdir / "server_config.json").write_text(json.dumps(config))
        argv = [sys.executable, "-m", "jupyter_server", "--no-browser", "--allow-root",
                f"--port={self.port}", "--ServerApp.port_retries=0", "--ip=127.0.0.1",
                f"--ServerApp.base_url={self.base_url}", f"--ServerApp.root_dir={self.workdir}",
                f"--config={self.workdir / 'server_config.json'}"]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                         env=self.env, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"jupyter server exited: {self.log_path.read_text()[-3000:]}")
            try:
                if self.request("GET", "osire/api/health")[0] == 200:
                    return self
            except (urllib.error.URLError, ConnectionError, ValueError):
                pass
            time.sleep(0.2)
        raise RuntimeError(f"jupyter server not up in {timeout}s: {self.log_path.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None

    def stop_all_deployments(self) -> None:
        """Test teardown: leave no job behind, even after a failure (restarts the server)."""
        if self.proc is None:
            self.start()
        code, listing = self.request("GET", "osire/api/deployments")
        for d in listing.get("deployments", []) if code == 200 else []:
            if d["state"] not in ("stopped", "failed"):
                self.request("DELETE", f"osire/api/deployments/{d['id']}")

    def kill(self) -> None:
        """An abrupt end (as when a login node reboots or OOD kills the session)."""
        if self.proc:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            self.proc = None

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Authorization": f"token {self.token}",
                                              "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read() or b"null")

    def wait_state(self, deployment_id: str, states: set[str], timeout: float = 90) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            code, body = self.request("GET", f"osire/api/deployments/{deployment_id}")
            assert code == 200, body
            if body["state"] in states:
                return body
            if time.monotonic() > deadline:
                raise AssertionError(f"still {body['state']} after {timeout}s: {body}")
            time.sleep(0.2)
