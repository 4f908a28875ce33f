"""Real Jupyter servers with the extension, and kernels they start, for the client-side tests.

No test hands a URL or a token to a kernel or to ``jupyter osire``: both find the server
(``jupyter_osire_llm._client.api.discover``) the way a user's would.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Optional

import yaml

import hostile

from lifecycle_catalog import write_catalog
from server_process import JupyterServer

# Variables that would tell the client where the server is: tests start from none of them.
DISCOVERY_ENV = ("OSIRE_URL", "OSIRE_TOKEN", "OSIRE_TOKEN_FILE", "JUPYTERHUB_API_TOKEN",
                 "JUPYTERHUB_SERVICE_PREFIX", "JUPYTERHUB_SERVICE_URL", "JPY_PARENT_PID",
                 "JUPYTER_RUNTIME_DIR", "JUPYTER_TOKEN")


def write_client_catalog(path: Path) -> Path:
    """The lifecycle tests' fake engine (its engine block, whatever it needs today) with models
    of our own: fake-chat streams one chunk per token with a small pause, so a stream is seen as
    one; fake-never-ready never gets healthy; fake-crash exits at start; fake-html answers and
    logs markup (tests/hostile.py)."""
    base = yaml.safe_load(write_catalog(path).read_text())
    engine = next(iter(base["engines"]))
    resources = {"time": "00:10:00", "cpus": 1}
    models = [
        {"name": "fake-chat", "model": "/models/fake-chat", "engine": engine,
         "description": "the fake OpenAI engine", "resources": resources,
         "env": {"OSIRE_FAKE_TOKEN_DELAY": "0.02"}},
        {"name": "fake-never-ready", "model": "/models/fake", "engine": engine,
         "description": "an engine that never gets healthy", "resources": resources,
         "env": {"OSIRE_FAKE_STARTUP_DELAY": "3600"}},
        {"name": "fake-crash", "model": "/models/fake", "engine": engine,
         "description": "an engine that exits at start", "resources": resources,
         "env": {"OSIRE_FAKE_EXIT_AT_START": "3"}},
        {"name": "fake-html", "model": "/models/fake", "engine": engine,
         "description": "an engine whose answer and log carry HTML and script",
         "resources": resources, "env": dict(hostile.ENV)},
    ]
    path.write_text(yaml.safe_dump({"engines": base["engines"], "models": models}))
    return path


class Server(JupyterServer):
    """A JupyterServer whose base URL can be set (``/node/<host>/<port>/`` as under OOD)."""

    def __init__(self, workdir: Path, osire: dict[str, Any], base_url: str = "/",
                 env: Optional[dict] = None) -> None:
        clean = {k: v for k, v in os.environ.items() if k not in DISCOVERY_ENV}
        super().__init__(workdir, osire, base_url=base_url)
        self.env = {**clean, **(env or {}), **{k: self.env[k] for k in (
            "JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR")}}

    @property
    def runtime_dir(self) -> Path:
        return Path(self.env["JUPYTER_RUNTIME_DIR"])

    def client_env(self, **extra: str) -> dict[str, str]:
        """The environment of a shell of this server's user: its runtime dir, nothing more."""
        return {**{k: v for k, v in os.environ.items() if k not in DISCOVERY_ENV},
                "JUPYTER_RUNTIME_DIR": str(self.runtime_dir), **extra}


def osire_config(tmp: Path, scheduler: str) -> dict[str, Any]:
    return {"scheduler": scheduler, "catalog": str(write_client_catalog(tmp / "catalog.yaml")),
            "job_root": str(tmp / "jobs"), "db_path": str(tmp / "state.sqlite"),
            "monitor_fast_interval": 0.2, "monitor_slow_interval": 1.0, "max_gpus": 2,
            "max_deployments": 4, "max_time": "01:00:00"}


def start_server(tmp: Path, scheduler: str = "local", **kwargs: Any) -> Server:
    server = Server(tmp / "server", osire_config(tmp, scheduler), **kwargs)
    try:
        return server.start()
    except BaseException:
        server.kill()           # a server that never answered is not left behind
        raise


def stop_server(server: Server) -> None:
    try:
        server.stop_all_deployments()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            code, listing = server.request("GET", "osire/api/deployments")
            if code != 200 or all(d["state"] in ("stopped", "failed")
                                  for d in listing["deployments"]):
                break
            time.sleep(0.2)
    finally:
        server.stop()


class Kernel:
    """A kernel started by the server through its REST API, driven over its ZMQ channels."""

    def __init__(self, server: Server, path: str = "osire-test.ipynb") -> None:
        from jupyter_client import BlockingKernelClient

        self.server = server
        code, session = server.request("POST", "api/sessions", {
            "path": path, "type": "notebook", "name": path, "kernel": {"name": "python3"}})
        assert code == 201, session
        self.kernel_id = session["kernel"]["id"]
        connection = server.runtime_dir / f"kernel-{self.kernel_id}.json"
        deadline = time.monotonic() + 30
        while not connection.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        self.kc = BlockingKernelClient(connection_file=str(connection))
        self.kc.load_connection_file()
        self.kc.start_channels()
        self._wait_for_kernel_info(timeout=180)

    def _wait_for_kernel_info(self, timeout: float) -> None:
        """Ready once a kernel_info request is answered on shell AND its status messages arrive
        on IOPub, as ``jupyter_client``'s ``wait_for_ready`` checks. A kernel answers on shell
        before the client's IOPub subscription is live (ZMQ's slow joiner): what it publishes
        until then is lost, so an ``execute`` sent after the shell reply alone can have all its
        output dropped. Each try sends a new kernel_info until one's IOPub status comes back.
        Not ``wait_for_ready`` itself: that calls a kernel dead when one heartbeat is late
        (1 s), which a loaded 2-core CI machine makes happen."""
        from queue import Empty
        deadline = time.monotonic() + timeout
        sent: set[str] = set()
        while time.monotonic() < deadline:
            msg_id = self.kc.kernel_info()
            sent.add(msg_id)
            try:
                if self._replied(msg_id) and self._published(sent):
                    break
            except Empty:
                continue
        else:
            raise TimeoutError(f"kernel {self.kernel_id} did not answer on shell and IOPub "
                               f"in {timeout} s")
        while True:                     # flush what the tries published before this one
            try:
                self.kc.get_iopub_msg(timeout=0.2)
            except Empty:
                return

    def _replied(self, msg_id: str) -> bool:
        """The shell reply to ``msg_id`` (raises Empty when none comes in 5 s)."""
        while True:
            if self.kc.get_shell_msg(timeout=5)["parent_header"].get("msg_id") == msg_id:
                return True

    def _published(self, sent: set[str]) -> bool:
        """A status message of one of the kernel_info requests ``sent`` on IOPub (raises Empty
        when none comes in 1 s)."""
        while True:
            msg = self.kc.get_iopub_msg(timeout=1)
            if msg["parent_header"].get("msg_id") in sent and msg["msg_type"] == "status":
                return True

    def run(self, code: str, timeout: float = 120) -> list[dict[str, Any]]:
        """Execute ``code``; every IOPub message it caused, until the kernel is idle again."""
        msg_id = self.kc.execute(code)
        messages = []
        deadline = time.monotonic() + timeout
        while True:
            msg = self.kc.get_iopub_msg(timeout=max(1, deadline - time.monotonic()))
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            messages.append(msg)
            if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                return messages

    def close(self) -> None:
        self.kc.stop_channels()
        self.server.request("DELETE", f"api/kernels/{self.kernel_id}")


def outputs(messages: list[dict[str, Any]], *types: str) -> list[dict[str, Any]]:
    return [m for m in messages if m["msg_type"] in types]


def text_of(messages: list[dict[str, Any]]) -> str:
    """All that a notebook would show for these messages, as text."""
    parts = []
    for m in messages:
        c = m["content"]
        if m["msg_type"] == "stream":
            parts.append(c["text"])
        elif m["msg_type"] in ("display_data", "update_display_data", "execute_result"):
            parts.append(c["data"].get("text/plain", ""))
        elif m["msg_type"] == "error":
            parts.append("\n".join(c["traceback"]))
    return "\n".join(parts)


def errors_of(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return outputs(messages, "error")
