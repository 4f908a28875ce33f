"""Batches through a real Jupyter server, on real Slurm and on the local backend, driven by the
official ``openai`` SDK; the engine is the fake OpenAI engine (tests/fake_engine.py). The same
machinery on real vLLM with the real small model: tests/e2e/test_batch_e2e.py."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import pytest

from jupyter_osire_llm.schedulers.local import read_state
from lifecycle_catalog import write_catalog
from server_process import JupyterServer

openai = pytest.importorskip("openai")
ENDPOINT = "/v1/chat/completions"


@pytest.fixture(params=["slurm", "local"])
def server(request, tmp_path):
    if request.param == "slurm":
        request.getfixturevalue("slurm_cluster")
    osire = {"scheduler": request.param,
             "catalog": str(write_catalog(tmp_path / "c.yaml", policies=True)),
             "job_root": str(tmp_path / "jobs"), "db_path": str(tmp_path / "state.sqlite"),
             "monitor_fast_interval": 0.2, "monitor_slow_interval": 1.0, "local_gpus": 2,
             "batch_concurrency": 2, "max_batches": 2}
    srv = JupyterServer(tmp_path / "server", osire)
    srv.start()
    yield srv
    if srv.proc is None:
        srv.start()
    for batch in _sdk(srv).batches.list().data:   # leave no job behind
        if batch.status in ("queued", "in_progress", "validating"):
            _sdk(srv).batches.cancel(batch.id)
    srv.stop()


def _sdk(server: JupyterServer) -> Any:
    return openai.OpenAI(base_url=server.url + "osire/v1", api_key=server.token, max_retries=0)


def _lines(model: str, count: int, max_tokens: int = 4) -> list[dict]:
    return [{"custom_id": f"q{i}", "method": "POST", "url": ENDPOINT,
             "body": {"model": model, "max_tokens": max_tokens,
                      "messages": [{"role": "user", "content": f"question {i}"}]}}
            for i in range(count)]


def _upload(client: Any, tmp_path: Path, lines: list[Any], name: str = "in.jsonl") -> Any:
    path = tmp_path / name
    path.write_text("".join((l if isinstance(l, str) else json.dumps(l)) + "\n" for l in lines))
    with path.open("rb") as f:
        return client.files.create(file=f, purpose="batch")


def _wait(client: Any, batch_id: str, done: Callable[[Any], bool], timeout: float = 120) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        batch = client.batches.retrieve(batch_id)
        if done(batch):
            return batch
        if time.monotonic() > deadline:
            raise AssertionError(f"batch {batch_id} still {batch.status}: {batch}")
        time.sleep(0.3)


def _ended(batch: Any) -> bool:
    return batch.status in ("completed", "failed", "expired", "cancelled")


def _results(client: Any, file_id: str) -> dict[str, dict]:
    return {line["custom_id"]: line for line in
            map(json.loads, client.files.content(file_id).text.splitlines())}


def _slurm_job_live(job_id: str) -> bool:
    out = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True,
                         text=True).stdout.strip()
    return out in ("PENDING", "RUNNING", "COMPLETING")


def test_sdk_upload_create_wait_download(server, tmp_path):
    client = _sdk(server)
    upload = _upload(client, tmp_path, _lines("fake-chat", 20))
    assert upload.purpose == "batch" and upload.bytes > 0
    assert client.files.retrieve(upload.id).filename == "in.jsonl"
    batch = client.batches.create(input_file_id=upload.id, endpoint=ENDPOINT,
                                  completion_window="24h", metadata={"run": "test"})
    assert batch.status in ("queued", "in_progress") and batch.request_counts.total == 20
    assert batch.metadata == {"run": "test"}
    seen = {batch.status}
    batch = _wait(client, batch.id, lambda b: seen.add(b.status) or _ended(b))
    assert batch.status == "completed", batch
    assert "in_progress" in seen or "queued" in seen
    assert batch.request_counts.completed == 20 and batch.request_counts.failed == 0
    assert batch.error_file_id is None and batch.completed_at
    results = _results(client, batch.output_file_id)
    assert sorted(results) == sorted(f"q{i}" for i in range(20))
    answer = results["q3"]["response"]
    assert answer["status_code"] == 200
    assert answer["body"]["choices"][0]["message"]["content"].split() == ["t0", "t1", "t2", "t3"]
    assert [b.id for b in client.batches.list().data] == [batch.id]
    # The key the job gave its engine is nowhere the user can read.
    folder = Path(server.osire["job_root"]) / "batches" / batch.id
    key = (folder / "key").read_text()
    assert key not in client.files.content(batch.output_file_id).text
    assert key not in (folder / "job.log").read_text() + (folder / "job.sh").read_text()
    assert key not in server.log_path.read_text()
    assert oct((folder / "key").stat().st_mode & 0o777) == "0o600"
    assert oct(folder.stat().st_mode & 0o777) == "0o700"
    assert key not in json.dumps(server.request("GET", f"osire/v1/batches/{batch.id}")[1])


def _line(custom_id: str = "a", method: str = "POST", url: str = ENDPOINT,
          model: str = "fake-chat") -> dict:
    return {"custom_id": custom_id, "method": method, "url": url, "body": {"model": model}}


@pytest.mark.parametrize("lines, expected", [
    ([_line("a"), _line("b"), "{not json"], "line 3: not valid JSON"),
    ([_line("a"), _line("b"), _line("c"), _line("a")], "line 4: duplicate custom_id 'a'"),
    ([_line("a"), _line("b", url="/v1/images")],
     "line 2: 'url' '/v1/images' is not the batch's endpoint"),
    ([_line("a", model="no-such")], "line 1: model 'no-such' is not in the catalog (known: "),
    ([_line("a"), _line("b", model="fake-slow-start")], "line 2: body.model 'fake-slow-start' "
                                                         "differs from 'fake-chat'"),
    ([_line("a"), _line("b", method="GET")], "line 2: 'method' must be \"POST\""),
    ([], "the file has no requests"),
])
def test_malformed_input_names_the_line_and_submits_nothing(server, tmp_path, lines, expected):
    client = _sdk(server)
    upload = _upload(client, tmp_path, lines)
    with pytest.raises(openai.BadRequestError) as err:
        client.batches.create(input_file_id=upload.id, endpoint=ENDPOINT,
                              completion_window="24h")
    message = err.value.body["message"]
    assert expected in message, message
    assert err.value.body["param"] == "input_file_id"
    assert client.batches.list().data == []
    assert not (Path(server.osire["job_root"]) / "batches").exists() or \
        not any((Path(server.osire["job_root"]) / "batches").iterdir())
    if server.osire["scheduler"] == "slurm":   # this test's jobs only: others may still end
        out = subprocess.run(["squeue", "-h", "-o", "%j %Z"], capture_output=True,
                             text=True).stdout
        assert not [l for l in out.splitlines() if server.osire["job_root"] in l], out


def test_bad_fields_are_refused_by_name(server, tmp_path):
    client = _sdk(server)
    upload = _upload(client, tmp_path, _lines("fake-chat", 1))
    for kwargs, field in [({"endpoint": "/v1/moderations"}, "endpoint"),
                          ({"completion_window": "1h"}, "completion_window"),
                          ({"extra_body": {"resources": {"gpus": 9}}}, "resources.gpus"),
                          ({"input_file_id": "file-nope"}, "file_id")]:
        args = {"input_file_id": upload.id, "endpoint": ENDPOINT, "completion_window": "24h",
                **kwargs}
        with pytest.raises((openai.BadRequestError, openai.NotFoundError)) as err:
            client.batches.create(**args)
        assert err.value.body["param"] == field, err.value.body
    with pytest.raises(openai.BadRequestError) as err:
        _upload(client, tmp_path, _lines("fake-chat", 1)) and client.files.create(
            file=("x.jsonl", b"{}\n"), purpose="fine-tune")
    assert err.value.body["param"] == "purpose"
    assert client.batches.list().data == []


def test_cancel_while_running_stops_the_job_and_keeps_what_it_got(server, tmp_path):
    client = _sdk(server)
    upload = _upload(client, tmp_path, _lines("fake-slow-tokens", 40, max_tokens=4))
    batch = client.batches.create(input_file_id=upload.id, endpoint=ENDPOINT,
                                  completion_window="24h")
    running = _wait(client, batch.id, lambda b: b.request_counts.completed >= 2)
    # (Seen once in CI, not understood yet: the job ended FAILED with exit 4, the runner's
    # "engine gone", seconds in. Say so with the batch's reason and log tail if it recurs.)
    assert not _ended(running), (running.status, running.model_extra["osire"]["reason"],
                                 running.model_extra["osire"]["log_tail"])
    with pytest.raises(openai.ConflictError, match="cancel it first"):   # a live batch stays
        client.delete(f"/batches/{batch.id}", cast_to=object)
    cancelled = client.batches.cancel(batch.id)
    assert cancelled.status in ("cancelling", "cancelled")
    batch = _wait(client, batch.id, _ended)
    assert batch.status == "cancelled" and batch.cancelled_at
    done = batch.request_counts.completed
    assert 2 <= done < 40
    assert len(_results(client, batch.output_file_id)) == done
    if server.osire["scheduler"] == "slurm":
        assert not _slurm_job_live(batch.model_extra["osire"]["job_id"])
    # Ended: deleting it removes the record and its results; the input file stays.
    folder = Path(server.osire["job_root"]) / "batches" / batch.id
    assert folder.is_dir()
    assert server.request("POST", f"osire/v1/batches/{batch.id}")[0] == 405   # no action
    assert client.delete(f"/batches/{batch.id}", cast_to=object) == {
        "id": batch.id, "object": "batch.deleted", "deleted": True}
    assert not folder.exists() and client.batches.list().data == []
    with pytest.raises(openai.NotFoundError):
        client.batches.retrieve(batch.id)
    with pytest.raises(openai.NotFoundError):
        client.files.content(batch.output_file_id)
    assert client.files.retrieve(upload.id).id == upload.id


def test_restart_while_running_loses_no_batch_and_no_result(server, tmp_path):
    client = _sdk(server)
    upload = _upload(client, tmp_path, _lines("fake-slow-tokens", 12, max_tokens=2))
    batch = client.batches.create(input_file_id=upload.id, endpoint=ENDPOINT,
                                  completion_window="24h")
    _wait(client, batch.id, lambda b: b.status == "in_progress")
    server.kill()
    server.start()
    client = _sdk(server)
    assert [b.id for b in client.batches.list().data] == [batch.id]
    batch = _wait(client, batch.id, _ended)
    assert batch.status == "completed", batch
    assert sorted(_results(client, batch.output_file_id)) == sorted(f"q{i}" for i in range(12))


def test_killed_job_keeps_partial_output_and_resumes_for_the_rest(server, tmp_path):
    client = _sdk(server)
    upload = _upload(client, tmp_path, _lines("fake-slow-tokens", 30, max_tokens=2))
    batch = client.batches.create(input_file_id=upload.id, endpoint=ENDPOINT,
                                  completion_window="24h")
    batch = _wait(client, batch.id, lambda b: b.request_counts.completed >= 3)
    job_id = batch.model_extra["osire"]["job_id"]
    _kill_job(server, job_id, Path(server.osire["job_root"]) / "batches" / batch.id)
    batch = _wait(client, batch.id, _ended)
    assert batch.status == "failed", batch
    done = batch.request_counts.completed
    assert 3 <= done < 30 and str(done) in batch.errors.data[0].message
    assert batch.model_extra["osire"]["resumable"]
    partial = _results(client, batch.output_file_id)
    assert len(partial) == done
    resumed = client.post(f"/batches/{batch.id}/resume", cast_to=openai.types.Batch)
    assert resumed.status in ("queued", "in_progress")
    batch = _wait(client, batch.id, _ended)
    assert batch.status == "completed", batch
    results = _results(client, batch.output_file_id)
    assert sorted(results) == sorted(f"q{i}" for i in range(30))   # each exactly once
    assert all(results[k] == v for k, v in partial.items())   # earlier answers kept as they were
    assert len(batch.model_extra["osire"]["jobs"]) == 2


def _kill_job(server: JupyterServer, job_id: str, folder: Path) -> None:
    """As a node failure or an admin would: the job dies without our cancel."""
    if server.osire["scheduler"] == "slurm":
        subprocess.run(["scancel", "--signal=KILL", "--full", job_id], check=True)
        return
    os.killpg(read_state(folder)["job_pgid"], signal.SIGKILL)


def test_a_resume_body_and_the_cli_flag_are_checked(server, tmp_path):
    """``{"retry_failed": false}`` (REST) and ``--no-retry-failed`` (CLI) leave failed requests
    failed; a wrong value or an unknown field is refused by name and nothing is submitted."""
    client = _sdk(server)
    upload = _upload(client, tmp_path, _lines("fake-chat", 2))
    batch = _wait(client, client.batches.create(input_file_id=upload.id, endpoint=ENDPOINT,
                                                completion_window="24h").id, _ended)
    assert batch.status == "completed" and batch.request_counts.failed == 0, batch
    resume = f"osire/v1/batches/{batch.id}/resume"
    for body, param in (({"retry_failed": "no"}, "retry_failed"), ({"retry": False}, "retry")):
        status, answer = server.request("POST", resume, body)
        assert status == 400 and answer["error"]["param"] == param, answer
    status, answer = server.request("POST", resume, {"retry_failed": False})
    assert status == 409 and "not to be retried" in answer["error"]["message"], answer
    cli = subprocess.run([sys.executable, "-m", "jupyter_osire_llm.cli", "batch", batch.id,
                          "--resume", "--no-retry-failed", "--no-wait"], capture_output=True,
                         text=True, timeout=120,
                         env={**os.environ, "OSIRE_URL": server.url, "OSIRE_TOKEN": server.token})
    assert cli.returncode != 0 and "not to be retried" in cli.stderr, cli
    assert client.batches.retrieve(batch.id).model_extra["osire"]["jobs"] == \
        batch.model_extra["osire"]["jobs"]                     # nothing submitted again
