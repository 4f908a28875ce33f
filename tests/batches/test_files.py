"""/osire/v1/files through a real Jupyter server: uploads stream to disk under the size limit
(a 10 GB body is answered 413 in the OpenAI shape while the server's memory stays small), result
downloads stream, files expire. The server's memory is its peak resident size (VmHWM) before and
after, so nothing here depends on timing. Expiry with a controlled clock is at core level."""
from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any, Iterator, Optional

import httpx
import pytest

from jupyter_osire_llm.core.catalog import load_catalog
from jupyter_osire_llm.errors import NotFound, RequestError
from jupyter_osire_llm.deployments.monitor import Monitor
from jupyter_osire_llm.schedulers.local import LocalScheduler
from lifecycle_catalog import write_catalog
from server_process import JupyterServer
from jupyter_osire_llm.server.settings import Timing
from service_factory import cycles_until, make_context

openai = pytest.importorskip("openai")
pytestmark = pytest.mark.timeout(300)
LIMIT = 8 * 1024 * 1024           # the server's max_batch_file_size here
GB = 1024 ** 3
MEMORY_SLACK = 64 * 1024 * 1024   # what the server may grow by while a big body passes
BOUNDARY = b"osire-test-boundary"
CHAT = "/v1/chat/completions"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("files")
    osire = {"scheduler": "local", "catalog": str(write_catalog(tmp / "c.yaml", policies=True)),
             "job_root": str(tmp / "jobs"), "db_path": str(tmp / "state.sqlite"),
             "monitor_fast_interval": 0.2, "monitor_slow_interval": 1.0, "local_gpus": 2,
             "batch_concurrency": 2, "max_batch_file_size": LIMIT}
    srv = JupyterServer(tmp / "server", osire).start()
    yield srv
    srv.stop()


def _sdk(server: JupyterServer) -> Any:
    return openai.OpenAI(base_url=server.url + "osire/v1", api_key=server.token, max_retries=0)


def _peak_memory(server: JupyterServer) -> int:
    """The server process's peak resident size so far, in bytes."""
    assert server.proc is not None
    for line in Path(f"/proc/{server.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def _form(file_bytes: int, block: int = 1024 * 1024) -> tuple[Iterator[bytes], int]:
    """A multipart upload (purpose batch) whose file is ``file_bytes`` long, made as it is sent;
    the body and its length."""
    head = (b"--" + BOUNDARY + b'\r\nContent-Disposition: form-data; name="purpose"\r\n\r\n'
            b"batch\r\n--" + BOUNDARY + b'\r\nContent-Disposition: form-data; name="file"; '
            b'filename="big.jsonl"\r\nContent-Type: application/octet-stream\r\n\r\n')
    tail = b"\r\n--" + BOUNDARY + b"--\r\n"
    piece = b"x" * block

    def body() -> Iterator[bytes]:
        yield head
        left = file_bytes
        while left > 0:
            yield piece if left >= block else piece[:left]
            left -= block
        yield tail
    return body(), len(head) + file_bytes + len(tail)


def _post_form(server: JupyterServer, body: Iterator[bytes],
               length: Optional[int]) -> httpx.Response:
    headers = {"Authorization": f"token {server.token}",
               "Content-Type": f"multipart/form-data; boundary={BOUNDARY.decode()}"}
    if length is not None:
        headers["Content-Length"] = str(length)   # else httpx sends it chunked
    return httpx.post(server.url + "osire/v1/files", content=body, headers=headers,
                      timeout=120)


def _assert_too_large(response: httpx.Response) -> None:
    assert response.status_code == 413, response.text
    error = response.json()["error"]
    assert error["code"] == "request_too_large" and error["param"] == "file"
    assert error["type"] == "invalid_request_error" and str(LIMIT) in error["message"]


def _stored(server: JupyterServer) -> list[str]:
    """What is in the server's files folder (uploads, and any half-received one)."""
    folder = Path(server.osire["job_root"]) / "files"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_a_10_gb_upload_is_answered_413_before_it_is_read(server):
    before, stored = _peak_memory(server), _stored(server)
    body, length = _form(10 * GB)
    _assert_too_large(_post_form(server, body, length))
    assert _peak_memory(server) - before < MEMORY_SLACK
    assert _stored(server) == stored


def test_a_chunked_upload_is_refused_413_the_moment_it_passes_the_limit(server):
    before, stored = _peak_memory(server), _stored(server)
    body, _ = _form(10 * GB)   # no Content-Length: only counting can stop it
    _assert_too_large(_post_form(server, body, None))
    assert _peak_memory(server) - before < MEMORY_SLACK
    assert _stored(server) == stored


def test_a_chunked_upload_of_exactly_the_limit_is_kept_one_byte_more_is_not(server):
    body, _ = _form(LIMIT, block=65536)
    kept = _post_form(server, body, None)
    assert kept.status_code == 200, kept.text
    assert kept.json()["bytes"] == LIMIT
    assert (Path(server.osire["job_root"]) / "files" / kept.json()["id"]).stat().st_size == LIMIT
    stored = _stored(server)
    body, _ = _form(LIMIT + 1, block=65536)
    _assert_too_large(_post_form(server, body, None))
    assert _stored(server) == stored
    _sdk(server).files.delete(kept.json()["id"])


def test_a_large_result_is_downloaded_in_chunks(server, tmp_path):
    client = _sdk(server)
    lines = [{"custom_id": f"q{i}", "method": "POST", "url": CHAT,
              "body": {"model": "fake-chat", "max_tokens": 2,
                       "messages": [{"role": "user", "content": "hi"}]}} for i in range(3)]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    with (tmp_path / "in.jsonl").open("rb") as f:
        upload = client.files.create(file=f, purpose="batch")
    batch = client.batches.create(input_file_id=upload.id, endpoint=CHAT,
                                  completion_window="24h")
    deadline = time.monotonic() + 120
    while batch.status not in ("completed", "failed", "expired", "cancelled"):
        assert time.monotonic() < deadline, batch
        time.sleep(0.3)
        batch = client.batches.retrieve(batch.id)
    assert batch.status == "completed", batch
    # The job's own lines, then 160 MB more of complete lines and a torn one, as a killed job
    # leaves them: all but the torn line are the result.
    output = Path(server.osire["job_root"]) / "batches" / batch.id / "output.jsonl"
    filler = (json.dumps({"custom_id": "pad", "response": {"body": "y" * 4000}}) + "\n").encode()
    with output.open("ab") as f:
        for _ in range(160 * 1024 * 1024 // len(filler)):
            f.write(filler)
        f.write(b'{"custom_id": "torn", "resp')
    expected = output.read_bytes()
    expected = expected[:expected.rfind(b"\n") + 1]
    before, digest, size = _peak_memory(server), hashlib.sha256(), 0
    with httpx.stream("GET", server.url + f"osire/v1/files/{batch.output_file_id}/content",
                      headers={"Authorization": f"token {server.token}"}, timeout=120) as r:
        assert r.status_code == 200
        assert int(r.headers["Content-Length"]) == len(expected)
        for chunk in r.iter_bytes():
            digest.update(chunk)
            size += len(chunk)
    assert size == len(expected) and digest.digest() == hashlib.sha256(expected).digest()
    assert _peak_memory(server) - before < MEMORY_SLACK
    assert server.request("DELETE", f"osire/v1/batches/{batch.id}")[0] == 200


def test_uploads_expire_as_asked_or_by_the_site_default(server, tmp_path):
    client = _sdk(server)
    path = tmp_path / "in.jsonl"
    path.write_text("{}\n")
    with path.open("rb") as f:
        plain = client.files.create(file=f, purpose="batch")
    assert plain.expires_at == plain.created_at + 30 * 86400        # file_expiry_days = 30
    with path.open("rb") as f:
        asked = client.files.create(file=f, purpose="batch",
                                    expires_after={"anchor": "created_at", "seconds": 3600})
    assert asked.expires_at == asked.created_at + 3600
    assert client.files.retrieve(asked.id).expires_at == asked.expires_at
    assert {f.id: f.expires_at for f in client.files.list()}[asked.id] == asked.expires_at
    stored = _stored(server)
    for bad, param in [({"anchor": "created_at", "seconds": 60}, "expires_after.seconds"),
                       ({"anchor": "created_at", "seconds": 2592001}, "expires_after.seconds"),
                       ({"anchor": "last_active_at", "seconds": 3600}, "expires_after.anchor")]:
        with path.open("rb") as f, pytest.raises(openai.BadRequestError) as err:
            client.files.create(file=f, purpose="batch", expires_after=bad)
        assert err.value.body["param"] == param, err.value.body
    assert _stored(server) == stored
    for file_id in (plain.id, asked.id):
        client.files.delete(file_id)


# -- expiry with a clock the test moves (core level, the local backend) -----------------------

class Clock:
    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


def _batch_service(tmp_path: Path, clock: Clock, file_expiry: float) -> tuple[Any, Monitor]:
    catalog = load_catalog(str(write_catalog(tmp_path / "c.yaml", policies=True)))
    context = make_context(tmp_path, catalog, LocalScheduler(tmp_path / "local"),
                           batch_concurrency=2, file_expiry_days=file_expiry / 86400,
                           monitor_fast_interval=0.2, monitor_slow_interval=1.0,
                           timing=Timing(clock=clock))
    return context.batches, context.monitor


def _request_line(custom_id: str, model: str = "fake-slow-start") -> bytes:
    return (json.dumps({"custom_id": custom_id, "method": "POST", "url": CHAT,
                        "body": {"model": model, "max_tokens": 2,
                                 "messages": [{"role": "user", "content": "hi"}]}})
            + "\n").encode()


def test_expired_files_are_deleted_but_a_live_batchs_input_waits_for_its_end(tmp_path):
    clock = Clock()
    batches, monitor = _batch_service(tmp_path, clock, file_expiry=2 * 86400)
    hour = {"anchor": "created_at", "seconds": 3600}

    async def scenario() -> None:
        lasting = await batches.upload("a.jsonl", "user_data", b"{}\n")
        assert lasting["expires_at"] == lasting["created_at"] + 2 * 86400   # the site default
        short = await batches.upload("b.jsonl", "batch", _request_line("a"), hour)
        used = await batches.upload("c.jsonl", "batch", _request_line("a"), hour)
        batch = await batches.create({"input_file_id": used["id"], "endpoint": CHAT})
        clock.offset = 3601
        assert await batches.sweep_files() == [short["id"]]
        with pytest.raises(NotFound):
            await batches.file(short["id"])
        assert not (tmp_path / "jobs" / "files" / short["id"]).exists()
        assert [f["id"] for f in await batches.files()] == [lasting["id"], used["id"]]
        assert batches.get(batch.id).live                  # its input stays while it runs
        await batches.cancel(batch.id)
        await cycles_until(monitor, lambda: not batches.get(batch.id).live, limit=300)
        assert [f["id"] for f in await batches.files()] == [lasting["id"]]   # listing sweeps
        assert not (tmp_path / "jobs" / "files" / used["id"]).exists()
        clock.offset = 2 * 86400 + 1
        with pytest.raises(NotFound):                       # looked up: gone, not served
            await batches.file(lasting["id"])
        assert await batches.files() == []
        assert sorted(os.listdir(tmp_path / "jobs" / "files")) == []
    asyncio.run(scenario())


def test_a_zero_site_default_keeps_files_and_bad_expiry_names_the_field(tmp_path):
    batches, _ = _batch_service(tmp_path, Clock(), file_expiry=0)

    async def scenario() -> None:
        kept = await batches.upload("a.jsonl", "batch", b"{}\n")
        assert kept["expires_at"] is None
        for bad, field in [({"anchor": "created_at"}, "expires_after"),
                           ({"anchor": "created_at", "seconds": "soon"}, "expires_after.seconds"),
                           ({"anchor": "created_at", "seconds": True}, "expires_after.seconds")]:
            with pytest.raises(RequestError) as err:
                await batches.upload("b.jsonl", "batch", b"{}\n", bad)
            assert err.value.field == field
        assert [f["id"] for f in await batches.files()] == [kept["id"]]
        assert sorted(os.listdir(tmp_path / "jobs" / "files")) == [kept["id"]]
    asyncio.run(scenario())
