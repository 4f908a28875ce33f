"""A batch's engine: reached only through its Unix socket or its pinned certificate, never
through an environment proxy, and watched by its process; requests that fail while it runs are
tried again; a resume tries the failed ones again; a cancel during a slow submission cannot be
resumed into a second job; one "vanished" answer is not believed.

Core level (no Jupyter server): a BatchService and the Monitor on the real local backend or real
Slurm, jobs running the fake OpenAI engine (tests/fake_engine.py), some behind
tests/batches/squatter.py."""
from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Sequence

import pytest

from client.recorder import NO_PROXY_VARIABLES, PROXY_VARIABLES, Recorder
from jupyter_osire_llm.core.catalog import load_catalog
from jupyter_osire_llm.errors import Conflict
from jupyter_osire_llm.schedulers.base import Job, JobInfo, JobRequest, JobState
from jupyter_osire_llm.schedulers.local import LocalScheduler
from jupyter_osire_llm.schedulers.slurm.cli import SlurmCLI
from engine_tools import batch_engine_pid
from lifecycle_catalog import FAKE_ENGINE, dirs_with_catalog
from jupyter_osire_llm.server.settings import Timing
from service_factory import cycles_until, make_context

CHAT = "/v1/chat/completions"
SQUATTER = Path(__file__).resolve().parent / "squatter.py"
FORGED = "FORGED ANSWER"
ENGINES = f"""  fake-uds:
    command: {sys.executable} {FAKE_ENGINE}
    kind: openai
    guard: false
    key_env: VLLM_API_KEY
    tls_cert_flag: --ssl-certfile
    tls_key_flag: --ssl-keyfile
    uds_flag: --uds
  wrapped-uds:
    command: {sys.executable} {SQUATTER} {sys.executable} {FAKE_ENGINE}
    kind: openai
    guard: false
    key_env: VLLM_API_KEY
    tls_cert_flag: --ssl-certfile
    tls_key_flag: --ssl-keyfile
    uds_flag: --uds
  wrapped-tls:
    command: {sys.executable} {SQUATTER} {sys.executable} {FAKE_ENGINE}
    kind: openai
    guard: false
    key_env: VLLM_API_KEY
    tls_cert_flag: --ssl-certfile
    tls_key_flag: --ssl-keyfile
"""


def _models(tmp_path: Path) -> str:
    squat = {"OSIRE_SQUATTER_LOG": str(tmp_path / "squatter.jsonl")}
    fail = {"OSIRE_FAKE_FAIL_FILE": str(tmp_path / "failing")}
    flaky = {"OSIRE_FAKE_FAIL_FIRST": "4"}
    models = [("uds-chat", "fake-uds", {}), ("uds-flaky", "fake-uds", flaky),
              ("uds-failing", "fake-uds", fail), ("tls-flaky", "fake", flaky),
              ("squatted-uds", "wrapped-uds", squat), ("squatted-tls", "wrapped-tls", squat),
              ("wrapped-slow", "wrapped-uds", {"OSIRE_FAKE_TOKEN_DELAY": "0.5"})]
    return "".join(f"""  - name: {name}
    model: /models/fake
    engine: {engine}
    resources: {{time: "00:10:00", cpus: 1}}
    env: {json.dumps(env)}
""" for name, engine, env in models)


def _jsonl(model: str, count: int) -> bytes:
    return "".join(json.dumps({"custom_id": f"q{i}", "method": "POST", "url": CHAT,
                               "body": {"model": model, "max_tokens": 2, "messages": [
                                   {"role": "user", "content": f"secret prompt {i}"}]}}) + "\n"
                   for i in range(count)).encode()


class Setup:
    """A batch service and a monitor on one store and scheduler, with this file's catalog."""

    def __init__(self, tmp_path: Path, scheduler: Any, **options: Any) -> None:
        paths = dirs_with_catalog(tmp_path, ENGINES, _models(tmp_path))
        catalog = load_catalog(str(paths["catalog"]))
        assert not catalog.problems, catalog.problems
        context = make_context(tmp_path, catalog, scheduler, job_root=paths["jobs"],
                               batch_concurrency=2, monitor_fast_interval=0.2,
                               monitor_slow_interval=1.0,
                               timing=Timing(batch_retry_delay=0.05, **options))
        self.service, self.batches, self.monitor = \
            context.service, context.batches, context.monitor

    async def create(self, model: str, count: int = 4) -> Any:
        upload = await self.batches.upload("in.jsonl", "batch", _jsonl(model, count))
        return await self.batches.create({"input_file_id": upload["id"], "endpoint": CHAT})

    async def until(self, batch_id: str, done: Any, limit: int = 600) -> Any:
        await cycles_until(self.monitor, lambda: done(self.batches.get(batch_id)), limit=limit)
        return self.batches.get(batch_id)

    async def run(self, model: str, count: int = 4) -> Any:
        """A batch, until it has ended."""
        batch = await self.create(model, count)
        return await self.until(batch.id, lambda b: not b.live)


def _lines(folder: str, name: str) -> list[dict]:
    path = Path(folder) / name
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture(params=["slurm", "local"])
def scheduler(request, tmp_path) -> Any:
    if request.param == "slurm":
        request.getfixturevalue("slurm_cluster")
        return SlurmCLI(command_timeout=10)
    return LocalScheduler(tmp_path / "local", gpus=2)


# -- item 2: the engine cannot be impersonated ----------------------------------------------

def test_a_batch_engine_listens_on_a_unix_socket_in_a_private_folder(tmp_path):
    """vLLM's (and the fake engine's) --uds: no port in the job script, answers recorded."""
    setup = Setup(tmp_path, LocalScheduler(tmp_path / "local"))
    batch = asyncio.run(setup.run("uds-chat"))
    assert batch.status == "completed" and batch.completed == 4, batch
    log = (Path(batch.folder) / "job.log").read_text()
    assert "starting engine on unix:/tmp/osire-" in log and "PORT" not in log
    assert all(l["response"]["body"]["choices"][0]["message"]["content"] == "t0 t1 "
               for l in _lines(batch.folder, "output.jsonl"))


@pytest.mark.parametrize("model", ["squatted-uds", "squatted-tls"])
def test_a_squatter_on_the_port_gets_neither_the_key_nor_a_prompt(scheduler, tmp_path, model):
    """Another process holds the loopback port the job picked (or, for a socket engine, a
    port of its own) before the engine gets it, and forges answers. Over the socket the batch
    completes with the engine's answers; over TLS the runner sees another certificate and stops
    before sending anything. Either way nothing forged is recorded."""
    setup = Setup(tmp_path, scheduler)
    batch = asyncio.run(setup.run(model))
    received = (tmp_path / "squatter.jsonl").read_text().splitlines() \
        if (tmp_path / "squatter.jsonl").exists() else []
    assert received == [], received                       # not even a health check
    answers = (Path(batch.folder) / "output.jsonl").read_text() \
        if (Path(batch.folder) / "output.jsonl").exists() else ""
    assert FORGED not in answers
    if model == "squatted-uds":
        assert batch.status == "completed" and batch.completed == 4, batch
    else:
        assert batch.status == "failed" and batch.completed == 0, batch
        assert batch.reason.startswith("another process answered in the engine's place"), \
            batch.reason


def test_the_engine_process_gone_stops_the_runner_though_something_still_answers(tmp_path):
    """The engine's process ends while a process it left behind still serves: the runner
    stops on the process, not on the answers; what was answered stays, the rest is left for a
    resume."""
    setup = Setup(tmp_path, LocalScheduler(tmp_path / "local"))

    async def scenario() -> Any:
        batch = await setup.create("wrapped-slow", 20)
        await setup.until(batch.id, lambda b: b.completed >= 2)
        os.kill(batch_engine_pid(batch.folder), signal.SIGKILL)   # its child, the server, runs on
        batch = await setup.until(batch.id, lambda b: not b.live)
        await setup.monitor.stop()
        return batch
    batch = asyncio.run(scenario())
    assert batch.status == "failed", batch
    assert batch.reason.startswith("the engine stopped while the batch ran"), batch.reason
    assert batch.failed == 0 and 2 <= batch.completed < 20 and batch.left > 0
    assert "engine process" in (Path(batch.folder) / "job.log").read_text()


# -- item 3: never an environment proxy -----------------------------------------------------

@pytest.mark.parametrize("model", ["uds-chat", "fake-chat"])
def test_the_runner_never_uses_an_environment_proxy(scheduler, tmp_path, monkeypatch, model):
    """Every proxy variable points at a recorder, loopback not exempted: the batch runs as
    without them (over the socket, or pinned TLS for fake-chat) and the recorder hears
    nothing."""
    with Recorder() as recorder:
        for name in PROXY_VARIABLES:
            monkeypatch.setenv(name, recorder.url)
        for name in NO_PROXY_VARIABLES:
            monkeypatch.delenv(name, raising=False)
        setup = Setup(tmp_path, scheduler)
        batch = asyncio.run(setup.run(model))
    assert recorder.requests == [], recorder.requests
    assert batch.status == "completed" and batch.completed == 4, batch


# -- item 6: failing and resuming honestly --------------------------------------------------

@pytest.mark.parametrize("model", ["uds-flaky", "tls-flaky"])
def test_requests_that_fail_while_the_engine_runs_are_tried_again(tmp_path, model):
    """The engine answers 503, 429 (Retry-After: 1), 500 and cuts one connection, then works:
    every request is answered, none recorded as failed."""
    setup = Setup(tmp_path, LocalScheduler(tmp_path / "local"))
    batch = asyncio.run(setup.run(model))
    assert (batch.status, batch.completed, batch.failed) == ("completed", 4, 0), batch
    assert _lines(batch.folder, "errors.jsonl") == []


def test_a_resume_tries_the_failed_requests_again_unless_asked_not_to(tmp_path):
    setup = Setup(tmp_path, LocalScheduler(tmp_path / "local"))
    failing = tmp_path / "failing"
    failing.touch()                                       # every request answers 503

    async def scenario() -> tuple[Any, Any]:
        first = await setup.run("uds-failing", 3)
        with pytest.raises(Conflict, match="nothing to resume"):
            await setup.batches.resume(first.id, retry_failed=False)
        failing.unlink()
        resumed = await setup.batches.resume(first.id)
        assert resumed.status == "queued" and resumed.failed == 0 and len(resumed.jobs) == 2
        done = await setup.until(first.id, lambda b: not b.live)
        await setup.monitor.stop()
        return first, done
    first, done = asyncio.run(scenario())
    assert (first.status, first.completed, first.failed) == ("completed", 0, 3), first
    assert first.to_openai()["osire"]["resumable"]
    assert (done.status, done.completed, done.failed) == ("completed", 3, 0), done
    assert not done.to_openai()["osire"]["resumable"]
    earlier = _lines(done.folder, "errors.1.jsonl")      # the first run's errors are kept
    assert sorted(l["custom_id"] for l in earlier) == ["q0", "q1", "q2"]
    assert all(l["error"]["code"] == "http_503" for l in earlier)
    assert _lines(done.folder, "errors.jsonl") == []


class GatedSubmit:
    """The real scheduler, whose submits wait until the test opens the gate (a slow sbatch)."""

    def __init__(self, real: Any) -> None:
        self.real, self.started, self.gate = real, threading.Event(), threading.Event()
        self.submitted: list[str] = []

    def submit(self, request: JobRequest) -> Job:
        self.started.set()
        self.gate.wait(60)
        job = self.real.submit(request)
        self.submitted.append(job.id)
        return job

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


def test_cancel_then_resume_while_sbatch_is_slow_never_makes_two_jobs(slurm_cluster, tmp_path):
    """A cancel while the job is being submitted leaves the batch cancelling, not resumable;
    once the submission answers, its job is cancelled, and only then may a resume submit."""
    scheduler = GatedSubmit(SlurmCLI(command_timeout=10))
    setup = Setup(tmp_path, scheduler)

    async def scenario() -> Any:
        creating = asyncio.ensure_future(setup.create("wrapped-slow", 20))
        await asyncio.to_thread(scheduler.started.wait, 30)
        batch = setup.batches.all()[0]
        cancelled = await setup.batches.cancel(batch.id)
        assert cancelled.status == "cancelling"
        assert not cancelled.to_openai()["osire"]["resumable"]
        with pytest.raises(Conflict):
            await setup.batches.resume(batch.id)
        scheduler.gate.set()
        await creating
        ended = await setup.until(batch.id, lambda b: not b.live)
        assert ended.status == "cancelled" and len(scheduler.submitted) == 1, ended
        resumed = await setup.batches.resume(batch.id)
        assert resumed.jobs == (scheduler.submitted[0], scheduler.submitted[1])
        live = _live_jobs(scheduler.submitted)
        assert live == [scheduler.submitted[1]], live
        await setup.batches.cancel(batch.id)
        await setup.until(batch.id, lambda b: not b.live)
        await setup.monitor.stop()
    asyncio.run(scenario())


def _live_jobs(ids: list[str]) -> list[str]:
    out = subprocess.run(["squeue", "-h", "-j", ",".join(ids), "-o", "%i"],
                         capture_output=True, text=True).stdout
    return out.split()


class Vanishing(LocalScheduler):
    """The local backend, answering LOST ("no record anywhere") while ``lost`` is set."""

    lost = False
    answers = 0

    def query(self, jobs: Sequence[Job]) -> dict[str, JobInfo]:
        if not self.lost:
            return super().query(jobs)
        self.answers += 1
        return {j.id: JobInfo(j.id, JobState.LOST, evidence="none") for j in jobs}


class Clock:
    now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_one_vanished_verdict_does_not_fail_a_batch(tmp_path):
    """As for deployments: "vanished" is believed only after it held for lost_grace (60 s)."""
    scheduler, clock = Vanishing(tmp_path / "local"), Clock()
    setup = Setup(tmp_path, scheduler, clock=clock)

    async def scenario() -> None:
        batch = await setup.create("wrapped-slow", 20)
        await setup.until(batch.id, lambda b: b.status == "in_progress")
        scheduler.lost = True
        await cycles_until(setup.monitor, lambda: scheduler.answers >= 3)
        assert setup.batches.get(batch.id).status == "in_progress"     # the job still runs
        scheduler.lost = False
        await cycles_until(setup.monitor, lambda: setup.batches.get(batch.id).lost_since is None)
        scheduler.lost, scheduler.answers = True, 0
        await cycles_until(setup.monitor, lambda: scheduler.answers >= 1)
        clock.now += 61
        ended = await setup.until(batch.id, lambda b: not b.live)
        assert ended.status == "failed" and "vanished" in ended.reason, ended
        scheduler.lost = False
        scheduler.cancel(Job(ended.job_id, Path(ended.folder)))
        await setup.monitor.stop()
    asyncio.run(scenario())
