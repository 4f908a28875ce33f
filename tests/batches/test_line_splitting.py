"""A batch input's lines are the same lines for the server's check (``batch_input``, before
anything is submitted) and for the job's runner (``batch_runner.read_requests``): split at
``\\n`` only. A bare ``\\r`` or U+2028 is either accepted by both or refused by both, never
accepted by the check and then read differently by the job (a text-mode read split at ``\\r``)."""
from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from jupyter_osire_llm.jobside import batch_runner
from jupyter_osire_llm.formats.batch_input import check_input, split_lines
from jupyter_osire_llm.core.catalog import load_catalog
from jupyter_osire_llm.errors import RequestError
from jupyter_osire_llm.schedulers.local import LocalScheduler
from lifecycle_catalog import write_catalog
from service_factory import cycles_until, make_context

CHAT = "/v1/chat/completions"


def _line(custom_id: str, content: str = "hi", sep: str = " ") -> str:
    """One request line, ``sep`` between its JSON members (JSON whitespace)."""
    return ('{"custom_id": %s,%s"method": "POST",%s"url": "%s", "body": {"model": "fake-chat", '
            '"max_tokens": 2, "messages": [{"role": "user", "content": %s}]}}'
            % (json.dumps(custom_id), sep, sep, CHAT, json.dumps(content, ensure_ascii=False)))


CASES = {
    "CR between tokens": _line("a", sep="\r") + "\n" + _line("b") + "\n",
    "CRLF line ends": _line("a") + "\r\n" + _line("b") + "\r\n",
    "U+2028 and U+2029 in a string": _line("a", "one\u2028two\u2029three") + "\n" + _line("b") + "\n",
    "NEL, VT and FF in a string": _line("a", "x\x85y") + "\n" + _line("b", "p\x0bq\x0cr") + "\n",
    "bare CR in a string": _line("a").replace('"hi"', '"h\ri"') + "\n" + _line("b") + "\n",
    "CR as the line end": _line("a") + "\r" + _line("b") + "\n",
}


def _server_sees(data: bytes) -> list[str] | None:
    """The custom_ids the server's check accepts (None: refused). It reads the upload as a
    binary file, as BatchService does."""
    try:
        check_input(split_lines(data), CHAT, ["fake-chat"])
    except RequestError:
        return None
    return [json.loads(raw)["custom_id"] for raw in split_lines(data) if raw.strip()]


def _runner_sees(path: Path) -> list[str] | None:
    try:
        return [request["custom_id"] for request in batch_runner.read_requests(path)]
    except ValueError:
        return None


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_check_and_the_runner_see_the_same_requests(tmp_path, name):
    data = CASES[name].encode()
    path = tmp_path / "input.jsonl"
    path.write_bytes(data)
    server, runner = _server_sees(data), _runner_sees(path)
    if server is not None:   # what the check accepts, the job must read the same way
        assert runner == server, (server, runner)
    refused = {"bare CR in a string", "CR as the line end"}
    assert (server is None) == (name in refused), server


def test_a_batch_with_cr_and_u2028_inside_its_lines_runs_every_request(tmp_path):
    """The real runner in a real job (local backend, fake engine): before, it split the first
    line at its CR, and the job failed on a line the check had accepted."""
    catalog = load_catalog(str(write_catalog(tmp_path / "c.yaml", policies=True)))
    context = make_context(tmp_path, catalog, LocalScheduler(tmp_path / "local"),
                           batch_concurrency=2, monitor_fast_interval=0.2,
                           monitor_slow_interval=1.0)
    batches, monitor = context.batches, context.monitor
    data = (_line("a", "one\u2028two", sep="\r") + "\n" + _line("b", "x\x85y") + "\r\n").encode()

    async def scenario() -> None:
        upload = await batches.upload("in.jsonl", "batch", data)
        batch = await batches.create({"input_file_id": upload["id"], "endpoint": CHAT})
        assert batch.total == 2
        await cycles_until(monitor, lambda: not batches.get(batch.id).live, limit=600)
        done = batches.get(batch.id)
        assert done.status == "completed", done
        assert (done.completed, done.failed) == (2, 0)
    asyncio.run(scenario())
