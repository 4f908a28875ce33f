"""The pure parts of batches: input checks, state folding, YAML specs, and the job-side runner
(resuming after a killed job, a torn last line) against a small live HTTP engine."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from jupyter_osire_llm.jobside import batch_runner
from jupyter_osire_llm.formats.batch_input import check_input
from jupyter_osire_llm._client.batch_spec import parse_spec
from jupyter_osire_llm.batches.states import (Batch, apply_counts, apply_job_info, error_file_id,
                                            output_file_id)
from jupyter_osire_llm.batches.results import count_results
from jupyter_osire_llm.errors import RequestError
from jupyter_osire_llm.schedulers.base import JobInfo, JobState

CHAT = "/v1/chat/completions"


def _line(custom_id: str, model: str = "m", **extra) -> bytes:
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": CHAT,
                       "body": {"model": model, **extra}}).encode()


# -- input checks ---------------------------------------------------------------------------

def test_a_good_file_gives_its_model_and_count_blank_lines_aside():
    parsed = check_input([_line("a"), b"\n", _line("b")], CHAT, ["m"])
    assert (parsed.model, parsed.total) == ("m", 2)


@pytest.mark.parametrize("lines, words", [
    ([b"[1, 2]"], "line 1: not a JSON object"),
    ([_line("a"), b"\xff\xfe"], "line 2: not valid JSON"),
    ([_line("")], "line 1: 'custom_id' must be a non-empty string"),
    ([_line("x" * 513)], "line 1: 'custom_id' must be"),
    ([_line("a", stream=True)], "line 1: 'body.stream' cannot be true"),
    ([b'{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": []}'],
     "line 1: 'body' must be a JSON object"),
    ([], "the file has no requests"),
])
def test_each_bad_line_is_named(lines, words):
    with pytest.raises(RequestError) as err:
        check_input(lines, CHAT, ["m"])
    assert words in err.value.message and err.value.field == "input_file_id"


def test_at_most_ten_problems_are_listed():
    with pytest.raises(RequestError) as err:
        check_input([b"nope"] * 50, CHAT, ["m"])
    assert err.value.message.count("line ") == 10 and "maybe more" in err.value.message


# -- states ---------------------------------------------------------------------------------

def _batch(**changes) -> Batch:
    return Batch(id="batch_1", model="m", endpoint=CHAT, input_file_id="file-1",
                 folder="/tmp/b", created_at=100, total=10, job_id="7", **changes)


def test_queued_with_reason_then_in_progress_then_completed():
    b = apply_job_info(_batch(), JobInfo("7", JobState.PENDING, reason="Resources"), 101)
    assert (b.status, b.reason) == ("queued", "Resources")
    b = apply_job_info(b, JobInfo("7", JobState.RUNNING, start_time=105), 106)
    assert (b.status, b.in_progress_at, b.reason) == ("in_progress", 105, None)
    b = apply_job_info(apply_counts(b, 9, 1), JobInfo("7", JobState.COMPLETED, end_time=120), 121)
    assert (b.status, b.completed_at) == ("completed", 120)
    view = b.to_openai(output_bytes=10, error_bytes=5)
    assert view["output_file_id"] == output_file_id("batch_1")
    assert view["error_file_id"] == error_file_id("batch_1")
    assert view["request_counts"] == {"total": 10, "completed": 9, "failed": 1}


@pytest.mark.parametrize("state, status, words", [
    (JobState.TIMEOUT, "expired", "time limit ended it after 4 of 10 requests"),
    (JobState.OUT_OF_MEMORY, "failed", "out of memory; 4 of 10 requests answered"),
    (JobState.NODE_FAIL, "failed", "node failure"),
    (JobState.CANCELLED, "failed", "cancelled outside jupyter-osire-llm"),
    (JobState.LOST, "failed", "vanished"),
    (JobState.COMPLETED, "failed", "ended before every request was answered"),
    (JobState.FAILED, "failed", "exit code 3"),
])
def test_an_unfinished_job_says_how_far_it_got_and_can_resume(state, status, words):
    b = apply_job_info(apply_counts(_batch(), 4, 0), JobInfo("7", state, exit_code=3), 200)
    assert b.status == status and words in b.reason
    assert b.to_openai()["osire"]["resumable"] and b.left == 6


def test_a_cancel_wins_over_how_the_job_ended():
    b = replace_cancel = _batch(cancel_requested=True)
    b = apply_job_info(b, JobInfo("7", JobState.RUNNING), 300)
    assert b.status == "cancelling"
    b = apply_job_info(b, JobInfo("7", JobState.CANCELLED, end_time=301), 302)
    assert (b.status, b.cancelled_at) == ("cancelled", 301)
    assert replace_cancel.status == "validating"


def test_counts_never_go_backwards():
    assert apply_counts(_batch(completed=5, failed=1), 3, 0).completed == 5


def test_records_from_other_versions_load():
    doc = {**_batch().to_doc(), "from_the_future": 1, "jobs": ["1", "2"]}
    b = Batch.from_doc(doc, 4)
    assert b.version == 4 and b.jobs == ("1", "2")


# -- YAML specs -----------------------------------------------------------------------------

def test_prompts_become_chat_lines_with_system_and_params(tmp_path):
    spec = parse_spec({"model": "m", "system": "Be brief.", "params": {"max_tokens": 5},
                       "prompts": ["a", {"id": "q2", "messages": [{"role": "user",
                                                                   "content": "b"}]}],
                       "output": "out.jsonl", "resources": {"time": "00:10:00"}}, tmp_path)
    first, second = spec.lines
    assert first["custom_id"] == "prompt-1" and second["custom_id"] == "q2"
    assert first["body"] == {"max_tokens": 5, "model": "m", "messages": [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "a"}]}
    assert spec.output == tmp_path / "out.jsonl" and spec.resources == {"time": "00:10:00"}
    assert spec.jsonl().count(b"\n") == 2


def test_completions_and_embeddings_take_text(tmp_path):
    spec = parse_spec({"model": "m", "endpoint": "/v1/completions", "prompts": ["x"]}, tmp_path)
    assert spec.lines[0]["body"] == {"model": "m", "prompt": "x"}
    spec = parse_spec({"model": "m", "endpoint": "/v1/embeddings", "prompts": ["x"]}, tmp_path)
    assert spec.lines[0]["body"] == {"model": "m", "input": "x"}


def test_an_input_file_gets_the_model_and_params_where_it_has_none(tmp_path):
    (tmp_path / "in.jsonl").write_text(json.dumps({"custom_id": "a", "method": "POST",
                                                   "url": CHAT, "body": {"max_tokens": 1}}))
    spec = parse_spec({"model": "m", "input": "in.jsonl", "params": {"max_tokens": 9,
                                                                      "temperature": 0}},
                      tmp_path)
    assert spec.lines[0]["body"] == {"max_tokens": 1, "temperature": 0, "model": "m"}


@pytest.mark.parametrize("doc, field", [
    ([1], "spec"), ({"model": "m", "prompts": []}, "prompts"),
    ({"model": "m", "prompts": [{"text": "x"}]}, "prompts"),
    ({"model": "m", "prompts": ["x"], "params": [1]}, "params"),
    ({"model": "m", "prompts": ["x"], "endpoint": "/v1/images"}, "endpoint"),
    ({"model": "m", "input": "missing.jsonl"}, "input"),
    ({"model": "m", "prompts": ["x"], "output": 3}, "output"),
])
def test_bad_specs_name_the_field(tmp_path, doc, field):
    with pytest.raises(RequestError) as err:
        parse_spec(doc, tmp_path)
    assert err.value.field == field


# -- the job-side runner --------------------------------------------------------------------

class _Engine(BaseHTTPRequestHandler):
    """Answers chat requests; refuses a wrong key; a body with "fail" gets a 400."""
    key = "k"
    seen: list[str] = []

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        self._reply(200, {"status": "ok"})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.headers.get("Authorization") != f"Bearer {self.key}":
            return self._reply(401, {"error": {"message": "bad key"}})
        _Engine.seen.append(body["messages"][0]["content"])
        if body["messages"][0]["content"] == "fail":
            return self._reply(400, {"error": {"message": "too long"}})
        self._reply(200, {"choices": [{"message": {"content": "ok " + body["messages"][0][
            "content"]}}]})

    def _reply(self, status: int, doc: dict) -> None:
        data = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def engine():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Engine)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Engine.seen = []
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def _folder(tmp_path: Path, contents: list[str]) -> Path:
    (tmp_path / "key").write_text("k\n")
    (tmp_path / "input.jsonl").write_text("".join(
        json.dumps({"custom_id": c, "method": "POST", "url": CHAT,
                    "body": {"model": "m", "messages": [{"role": "user", "content": c}]}}) + "\n"
        for c in contents))
    return tmp_path


def test_runner_answers_each_request_once_and_sorts_out_failures(tmp_path, engine):
    folder = _folder(tmp_path, ["a", "b", "fail", "c"])
    assert batch_runner.main(["--folder", str(folder), "--url", engine,
                              "--concurrency", "2"]) == 0
    assert count_results(folder) == (3, 1)
    error = json.loads((folder / "errors.jsonl").read_text())
    assert error["custom_id"] == "fail" and error["response"]["status_code"] == 400
    assert error["error"] == {"code": "http_400", "message": "too long"}
    progress = json.loads((folder / "progress.json").read_text())
    assert (progress["completed"], progress["failed"], progress["phase"]) == (3, 1, "done")


def test_runner_resumes_after_a_killed_job_and_mends_a_torn_line(tmp_path, engine):
    folder = _folder(tmp_path, ["a", "b", "c", "d"])
    done = {"custom_id": "a", "response": {"status_code": 200, "body": {}}, "error": None}
    (folder / "output.jsonl").write_text(json.dumps(done) + "\n" + '{"custom_id": "b", "resp')
    assert count_results(folder) == (1, 0)            # the torn line does not count
    assert batch_runner.main(["--folder", str(folder), "--url", engine]) == 0
    assert sorted(_Engine.seen) == ["b", "c", "d"]    # "a" was not asked again
    lines = [json.loads(l) for l in (folder / "output.jsonl").read_text().splitlines()]
    assert sorted(l["custom_id"] for l in lines) == ["a", "b", "c", "d"]


def test_runner_gives_up_when_the_engine_never_gets_healthy(tmp_path):
    folder = _folder(tmp_path, ["a"])
    assert batch_runner.main(["--folder", str(folder), "--url", "http://127.0.0.1:9",
                              "--startup-timeout", "0.5"]) == 3
    assert json.loads((folder / "progress.json").read_text())["phase"] == "engine-failed"
