"""The pure parts of replicas across nodes: the job script, the engine's arguments, the catalog's
worker command, what a rank's end reads as, the partition's node count from real Slurm output,
and the requests refused before anything is submitted."""
from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest

from jupyter_osire_llm.core.catalog import parse_catalog
from jupyter_osire_llm.core.limits import parse_resources
from jupyter_osire_llm.core.logtail import rank_logs
from jupyter_osire_llm.core.render import ScriptContext, ScriptRenderer, engine_argv
from jupyter_osire_llm.deployments.states import Replica, failure_reason
from jupyter_osire_llm.errors import RequestError
from jupyter_osire_llm.schedulers.base import JobInfo, JobState
from jupyter_osire_llm.schedulers.slurm.parse import parse_partition

DATA = Path(__file__).resolve().parents[1] / "data" / "slurm"
CATALOG = {"engines": {"vllm": {"command": "vllm serve", "worker_command": "/opt/w serve"},
                       "other": {"command": "llama-server", "kind": "openai", "insecure": True}},
           "models": [{"name": "big", "model": "/m/big", "engine": "vllm",
                       "resources": {"gpus": 4, "nodes": 2, "time": "60"}},
                      {"name": "one", "model": "/m/one", "engine": "vllm",
                       "resources": {"gpus": 1, "time": "60"}},
                      {"name": "cpp", "model": "/m/x.gguf", "engine": "other",
                       "resources": {"nodes": 2, "time": "60"}}]}


def _script(name: str) -> str:
    entry = parse_catalog(CATALOG).models[name]
    return ScriptRenderer().render(entry, parse_resources(None, base=entry.resources),
                                   ScriptContext("d1", 0, Path("/jobs/d1/r0")))


def test_tensor_parallel_in_a_node_pipeline_parallel_across_nodes():
    entry = parse_catalog(CATALOG).models["big"]
    argv = engine_argv(entry, parse_resources(None, base=entry.resources), "0.0.0.0")
    assert argv[argv.index("--tensor-parallel-size") + 1] == "4"
    assert argv[argv.index("--pipeline-parallel-size") + 1] == "2"
    assert argv[argv.index("--distributed-executor-backend") + 1] == "mp"
    override = parse_catalog({**CATALOG, "models": [{**CATALOG["models"][0], "engine_args": {
        "tensor-parallel-size": 8, "pipeline-parallel-size": 1}}]}).models["big"]
    argv = engine_argv(override, parse_resources(None, base=override.resources), "0.0.0.0")
    assert argv[argv.index("--tensor-parallel-size") + 1] == "8"
    assert argv[argv.index("--pipeline-parallel-size") + 1] == "1"


def test_the_two_node_script_is_valid_bash_and_starts_a_headless_rank_per_other_node():
    script = _script("big")
    assert subprocess.run(["bash", "-n"], input=script, text=True).returncode == 0
    assert "srun --nodes=1 --ntasks=1 --ntasks-per-node=1 --relative=1" in script
    assert "--kill-on-bad-exit=1" in script
    assert "setsid /opt/w serve --model /m/big" in script and "--headless" in script
    assert '--nnodes 2 --node-rank 0 --master-addr "$MASTER_ADDR"' in script
    # the other ranks are started before the key is read: they never have it
    assert script.index("srun --nodes=") < script.index("VLLM_API_KEY=$(cat")
    one = _script("one")
    assert "srun" not in one and "--nnodes" not in one and "run_rank" not in one


def test_a_bad_worker_command_is_a_catalog_problem():
    bad = {**CATALOG, "engines": {"vllm": {"command": "vllm serve",
                                           "worker_command": "a\nrm -rf /"}}}
    assert any("worker_command" in p for p in parse_catalog(bad).problems)


@pytest.mark.parametrize("status, says", [
    (137, "rank 1 on node gpu07 ended (killed by signal 9)"),
    (1, "rank 1 on node gpu07 ended (exit code 1)")])
def test_a_rank_s_end_is_the_replica_s_reason(status, says):
    tail = f"INFO ...\nosire: rank 1 on gpu07 exited with status {status}; the end of its " \
           f"log:\n[rank 1] RuntimeError: boom"
    info = JobInfo("7", JobState.FAILED, exit_code=1)
    assert failure_reason(Replica(index=0, folder="/x"), info, tail) == says
    cancelled = JobInfo("7", JobState.CANCELLED)
    assert "cancelled outside" in failure_reason(Replica(index=0, folder="/x"), cancelled, tail)


def test_each_rank_s_log_in_rank_order(tmp_path):
    for rank in (2, 1, 10):
        (tmp_path / f"rank-{rank}.log").write_text(f"a\nrank {rank} says hi\n")
    (tmp_path / "rank-x.log").write_text("not a rank")
    assert rank_logs(tmp_path, 1) == [(1, "rank 1 says hi"), (2, "rank 2 says hi"),
                                      (10, "rank 10 says hi")]
    assert rank_logs(tmp_path / "missing", 5) == []


def test_the_partition_s_node_count_from_real_scontrol_output():
    two = (DATA / "scontrol_partition_two_nodes.txt").read_text()
    one = (DATA / "scontrol_partition_one_node.txt").read_text()
    assert parse_partition(two, None).nodes == 2 and parse_partition(two, "debug").nodes == 2
    assert parse_partition(one, None).nodes == 1
    assert parse_partition(one, None).billing_weights == {"cpu": "1.0", "mem": "0.25G",
                                                          "gres/gpu": "2.0"}
    assert parse_partition(two, "gpu") is None and parse_partition("", None) is None


def test_an_engine_that_cannot_span_nodes_and_a_multi_node_batch_are_refused(tmp_path):
    from jupyter_osire_llm.schedulers.local import LocalScheduler
    from service_factory import make_context

    context = make_context(tmp_path, parse_catalog(CATALOG), LocalScheduler(tmp_path / "l"))

    async def launch(model: str) -> RequestError:
        with pytest.raises(RequestError) as caught:
            await context.service.launch(model)
        return caught.value
    cpp = asyncio.run(launch("cpp"))
    assert cpp.field == "resources.nodes" and "runs on one node" in cpp.message
    big = asyncio.run(launch("big"))   # the local backend is one machine
    assert big.field == "resources.nodes" and "has 1 node(s)" in big.message
    assert context.service.all() == []

    async def batch() -> RequestError:
        line = b'{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", ' \
               b'"body": {"model": "one", "messages": [{"role": "user", "content": "hi"}]}}\n'
        upload = await context.batches.upload("in.jsonl", "batch", line)
        with pytest.raises(RequestError) as caught:
            await context.batches.create({"input_file_id": upload["id"], "completion_window":
                                          "24h", "endpoint": "/v1/chat/completions",
                                          "resources": {"nodes": 2}})
        return caught.value
    refused = asyncio.run(batch())
    assert refused.field == "resources.nodes" and "a batch runs on one node" in refused.message
    assert context.batches.all() == []


def test_the_ray_launch_starts_a_ray_cluster_and_the_engine_on_rank_0_only():
    ray = {**CATALOG, "engines": {"vllm": {"command": "/opt/vllm/bin/python -m vllm.entrypoints"
                                           ".openai.api_server", "distributed": "ray"}}}
    entry = parse_catalog(ray).models["big"]
    assert entry.engine.distributed == "ray"
    argv = engine_argv(entry, parse_resources(None, base=entry.resources), "0.0.0.0")
    assert argv[argv.index("--distributed-executor-backend") + 1] == "ray"
    script = ScriptRenderer().render(entry, parse_resources(None, base=entry.resources),
                                     ScriptContext("d1", 0, Path("/jobs/d1/r0")))
    assert subprocess.run(["bash", "-n"], input=script, text=True).returncode == 0
    assert "local program=/opt/vllm/bin/python " in script
    assert '"$RAY_PY" -m ray.scripts.scripts start --head --node-ip-address "$MASTER_ADDR" ' \
           '--port "$MASTER_PORT"' in script
    assert '"$RAY_PY" -m ray.scripts.scripts start --address ' \
           '"$OSIRE_MASTER_ADDR:$OSIRE_MASTER_PORT"' in script
    assert "--include-dashboard=false" in script and "RAY_AUTH_MODE=token" in script
    assert "srun --nodes=1 --ntasks=1 --ntasks-per-node=1 --relative=1" in script
    # the engine runs on rank 0 alone; Ray places the workers: no multi-node flags, no headless
    assert "--nnodes" not in script and "--headless" not in script and "--master-addr" not in script
    assert "DIST_ARGS=()" in script
    # Ray is up on every node before the key is read, and the key stays off the Ray workers
    assert script.index("ray.init(address=address") < script.index("VLLM_API_KEY=$(cat")
    assert '["VLLM_API_KEY"]' in script and "ray_non_carry_over_env_vars.json" in script
    # the default (mp) launch has no Ray in it
    assert "ray" not in _script("big").lower().replace("array", "")


@pytest.mark.parametrize("value", ["Ray", "slurm", 1, None])
def test_a_bad_distributed_value_is_a_catalog_problem(value):
    bad = {**CATALOG, "engines": {"vllm": {"command": "vllm serve", "distributed": value}}}
    problems = parse_catalog(bad).problems
    assert any("distributed" in p for p in problems), problems
