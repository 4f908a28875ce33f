"""A batch end to end: real vLLM (CPU build) serving the real small model (SmolLM2-135M-Instruct)
in a real Slurm job, a 50-line JSONL uploaded and run with the official ``openai`` SDK; the 50
results come back under their ``custom_id``s, and the questions that have an answer get it right.

The engine takes about 50 s to start on 2 idle cores (minutes under load); nothing here asserts
on time.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from jupyter_osire_llm.demo import SMALL_MODEL_NAME
from server_process import JupyterServer
from test_small_model_e2e import small_model_server

pytestmark = [pytest.mark.slurm, pytest.mark.vllm]
openai = pytest.importorskip("openai")
ENDPOINT = "/v1/chat/completions"
QUESTION = "What is the capital of France? Answer in one word."


@pytest.fixture(scope="module")
def server(slurm_cluster, tmp_path_factory):
    server = small_model_server(tmp_path_factory.mktemp("e2e-batch"), batch_concurrency=8)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _requests() -> list[dict]:
    """25 questions with one right answer, 25 open prompts: 50 lines."""
    lines = []
    for i in range(50):
        content = QUESTION if i % 2 == 0 else f"Write one short sentence about the number {i}."
        lines.append({"custom_id": f"{'capital' if i % 2 == 0 else 'open'}-{i}",
                      "method": "POST", "url": ENDPOINT,
                      "body": {"model": SMALL_MODEL_NAME, "temperature": 0, "max_tokens": 12,
                               "messages": [{"role": "user", "content": content}]}})
    return lines


def test_fifty_requests_on_the_real_small_model(server, tmp_path):
    client = openai.OpenAI(base_url=server.url + "osire/v1", api_key=server.token,
                           max_retries=0)
    lines = _requests()
    path = tmp_path / "questions.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    with path.open("rb") as f:
        upload = client.files.create(file=f, purpose="batch")
    batch = client.batches.create(input_file_id=upload.id, endpoint=ENDPOINT,
                                  completion_window="24h")
    assert batch.request_counts.total == 50
    deadline = time.monotonic() + 1500
    seen = []
    while batch.status not in ("completed", "failed", "expired", "cancelled"):
        assert time.monotonic() < deadline, batch
        time.sleep(2)
        batch = client.batches.retrieve(batch.id)
        progress = (batch.status, batch.request_counts.completed)
        if not seen or seen[-1] != progress:
            seen.append(progress)
    assert batch.status == "completed", (batch, _log(server, batch.id))
    assert batch.request_counts.completed == 50 and batch.request_counts.failed == 0
    results = {line["custom_id"]: line for line in
               map(json.loads, client.files.content(batch.output_file_id).text.splitlines())}
    assert sorted(results) == sorted(line["custom_id"] for line in lines)
    for custom_id, result in results.items():
        assert result["response"]["status_code"] == 200 and result["error"] is None
        answer = result["response"]["body"]["choices"][0]["message"]["content"]
        assert answer.strip(), custom_id
        if custom_id.startswith("capital"):
            assert "Paris" in answer, (custom_id, answer)
    # Progress was visible while it ran, not only at the end.
    assert any(status == "in_progress" for status, _ in seen), seen


def _log(server: JupyterServer, batch_id: str) -> str:
    log = Path(server.osire["job_root"]) / "batches" / batch_id / "job.log"
    return log.read_text()[-4000:] if log.exists() else "(no log)"
