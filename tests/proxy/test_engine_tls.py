"""Engines behind TLS pinned to their job's certificate: nothing in clear on the wire, nothing
for whoever else answers at the advertised host:port (an impostor on a reused port)."""
from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
from pathlib import Path
from typing import Optional

import pytest

from engine_tools import fake_engine_command, free_port, start_process, stop_process_group
from jupyter_osire_llm.proxy.endpoints import Endpoint, EngineEndpoint
from jupyter_osire_llm.errors import UpstreamError
from jupyter_osire_llm.proxy.upstream import ProxyConfig, UpstreamProxy
from jupyter_osire_llm.proxy.router import Router
from jupyter_osire_llm.schedulers.base import JobInfo, JobState
from proxy_support import FakeSource
from jupyter_osire_llm.server.settings import Timing
from service_factory import cycles_until, make_context, one_model_catalog

KEY = "engine-key-that-must-never-show-7d1f"
PROMPT = "a-prompt-that-must-never-show-92ac"
TLS_FLAGS = {"tls_cert_flag": "--ssl-certfile", "tls_key_flag": "--ssl-keyfile"}


def make_certificate(folder: Path) -> tuple[Path, Path, str]:
    """A self-signed pair made as the job script makes it; returns cert, key, SHA-256 (hex)."""
    folder.mkdir(parents=True, exist_ok=True)
    crt, key = folder / "tls.crt", folder / "tls.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj", "/CN=t",
                    "-keyout", str(key), "-out", str(crt)], check=True, capture_output=True)
    der = subprocess.run(["openssl", "x509", "-in", str(crt), "-outform", "DER"], check=True,
                         capture_output=True).stdout
    return crt, key, hashlib.sha256(der).hexdigest()


async def wait_port(port: int, timeout: float = 30) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.1)


@pytest.fixture(scope="module")
def tls_engine(tmp_path_factory):
    """tests/fake_engine.py serving ``m`` over HTTPS with its own certificate and key KEY."""
    folder = tmp_path_factory.mktemp("engine")
    crt, key, fingerprint = make_certificate(folder)
    port = free_port()
    proc = start_process(fake_engine_command(port, "m") + ["--ssl-certfile", str(crt),
                                                           "--ssl-keyfile", str(key)],
                         env={**os.environ, "VLLM_API_KEY": KEY})
    asyncio.run(wait_port(port))
    yield {"port": port, "fingerprint": fingerprint, "folder": folder}
    stop_process_group(proc, grace=5)


class Recorder:
    """A TCP listener that records every byte it receives; it relays them to ``target`` (a
    capture on the engine's path) or answers like a web server that says yes to anything."""

    def __init__(self, port: int, target: Optional[int] = None, tls=None) -> None:
        self.port, self.target, self.tls = port, target, tls
        self.received = bytearray()
        self.server: Optional[asyncio.AbstractServer] = None

    async def start(self) -> "Recorder":
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port,
                                                 ssl=self.tls)
        return self

    async def close(self) -> None:
        if self.server:
            self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if self.target is None:
                data = await asyncio.wait_for(reader.read(65536), 5)
                self.received += data
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             b"Content-Length: 2\r\n\r\n{}")
                await writer.drain()
                return
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
            await asyncio.gather(self._pipe(reader, up_writer, record=True),
                                 self._pipe(up_reader, writer, record=False))
        except (OSError, asyncio.TimeoutError):
            pass
        finally:
            writer.close()

    async def _pipe(self, reader, writer, record: bool) -> None:
        while data := await reader.read(65536):
            if record:
                self.received += data
            writer.write(data)
            await writer.drain()
        writer.close()


def chat_body() -> bytes:
    return json.dumps({"model": "m", "max_tokens": 3,
                       "messages": [{"role": "user", "content": PROMPT}]}).encode()


def proxy_to(port: int, fingerprint: str) -> UpstreamProxy:
    endpoint = Endpoint("m", f"https://127.0.0.1:{port}", KEY, "d", "1", fingerprint=fingerprint)
    return UpstreamProxy(Router(FakeSource([endpoint])), ProxyConfig(retries=0, connect_timeout=3))


async def chat(proxy: UpstreamProxy) -> tuple[int, bytes]:
    async with proxy.for_model("m", None, chat_body(), "POST", "/v1/chat/completions",
                               {"Content-Type": "application/json"}) as upstream:
        return upstream.status, await upstream.read()


def test_traffic_on_the_engine_port_shows_no_key_and_no_prompt(tls_engine):
    async def scenario() -> bytes:
        capture = await Recorder(free_port(), target=tls_engine["port"]).start()
        proxy = proxy_to(capture.port, tls_engine["fingerprint"])
        try:
            for _ in range(2):
                status, body = await chat(proxy)
                assert status == 200 and json.loads(body)["choices"], body
        finally:
            await proxy.close()
            await capture.close()
        return bytes(capture.received)

    wire = asyncio.run(scenario())
    assert wire, "nothing went through the capture"
    for secret in (KEY, PROMPT, "Bearer", "chat/completions"):
        assert secret.encode() not in wire


@pytest.mark.parametrize("impostor", ["plain", "own-certificate"])
def test_an_impostor_on_the_port_gets_no_request_and_no_key(tls_engine, tmp_path, impostor):
    async def scenario() -> tuple[bytes, Exception]:
        tls = None
        if impostor == "own-certificate":
            import ssl
            crt, key, _ = make_certificate(tmp_path / "impostor")
            tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            tls.load_cert_chain(str(crt), str(key))
        fake = await Recorder(free_port(), tls=tls).start()
        proxy = proxy_to(fake.port, tls_engine["fingerprint"])
        try:
            with pytest.raises(UpstreamError) as info:
                await chat(proxy)
            assert proxy.router.failed(), "the impostor must leave the rotation"
            await proxy.probe_failed()           # its /health answers 200: still not trusted
            assert proxy.router.failed()
        finally:
            await proxy.close()
            await fake.close()
        return bytes(fake.received), info.value

    received, error = asyncio.run(scenario())
    for secret in (KEY, PROMPT, "Authorization", "chat/completions", "/health"):
        assert secret.encode() not in received
    assert "certificate" in error.message or "connect" in error.message


def never_listening_engine(tmp_path: Path):
    """A job whose engine never binds its port: whatever answers there is someone else."""
    return make_context(tmp_path, one_model_catalog("bash -c 'sleep 300' engine", **TLS_FLAGS),
                        engine_host="127.0.0.1", monitor_fast_interval=0.1,
                        timing=Timing(health_timeout=1))


@pytest.mark.parametrize("impostor", ["plain", "own-certificate"])
def test_an_impostor_never_makes_a_replica_ready(tmp_path, impostor):
    context = never_listening_engine(tmp_path)
    service, monitor = context.service, context.monitor

    async def scenario() -> bytes:
        d = await service.launch("m")
        await cycles_until(monitor, lambda: service.get(d.id).replicas[0].port)
        replica = service.get(d.id).replicas[0]
        assert replica.state == "starting" and replica.url.startswith("https://")
        tls = None
        if impostor == "own-certificate":
            import ssl
            crt, key, _ = make_certificate(tmp_path / "impostor")
            tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            tls.load_cert_chain(str(crt), str(key))
        fake = await Recorder(replica.port, tls=tls).start()   # takes the engine's port
        try:
            for _ in range(15):
                await monitor.cycle()
                await asyncio.sleep(0.1)
            assert service.get(d.id).state == "starting"
            assert service.ready_endpoints("m") == []
        finally:
            await fake.close()
            await service.stop(d.id)
            await monitor.stop()
        return bytes(fake.received)

    received = asyncio.run(scenario())
    key = (Path(service.all()[0].replicas[0].folder) / "key").read_text()
    assert key.encode() not in received and b"GET /health" not in received


def test_a_stale_endpoint_file_never_makes_a_replica_ready(tls_engine, tmp_path):
    """An endpoint file of another job, or of a run that ended, pointing at a healthy engine
    with a valid certificate: ignored."""
    context = never_listening_engine(tmp_path)
    service, monitor = context.service, context.monitor

    async def scenario() -> None:
        d = await service.launch("m")
        await cycles_until(monitor, lambda: service.get(d.id).replicas[0].run)
        replica = service.get(d.id).replicas[0]
        other_job = {"host": "127.0.0.1", "port": tls_engine["port"], "job_id": "999999",
                     "run": "0-abc", "fingerprint": tls_engine["fingerprint"]}
        (Path(replica.folder) / "endpoint.json").write_text(json.dumps(other_job))
        for _ in range(10):
            await monitor.cycle()
            await asyncio.sleep(0.1)
        assert service.get(d.id).replicas[0].port == replica.port   # not the other job's
        assert service.get(d.id).state == "starting"
        await service.stop(d.id)
        await monitor.stop()

    asyncio.run(scenario())


def test_a_requeued_replica_forgets_its_run_and_ignores_its_old_endpoint(tmp_path):
    service = never_listening_engine(tmp_path).service

    async def scenario() -> None:
        d = await service.launch("m")
        job = d.replicas[0].job_id
        run_a = EngineEndpoint("127.0.0.1", 4001, job, "0-aaaa", "ab" * 32)
        await service.observe_job(d.id, 0, JobInfo(job, JobState.RUNNING))
        await service.observe_endpoint(d.id, 0, run_a)
        await service.observe_health(d.id, 0, True)
        assert service.get(d.id).state == "ready"
        await service.observe_job(d.id, 0, JobInfo(job, JobState.PENDING, reason="BeginTime"))
        r = service.get(d.id).replicas[0]
        assert (r.state, r.host, r.port, r.fingerprint, r.healthy) == \
            ("queued", None, None, None, False)
        await service.observe_endpoint(d.id, 0, run_a)                 # the file of the old run
        assert service.get(d.id).replicas[0].port is None
        run_b = EngineEndpoint("127.0.0.1", 4002, job, "1-bbbb", "cd" * 32)
        await service.observe_endpoint(d.id, 0, run_b)
        r = service.get(d.id).replicas[0]
        assert (r.state, r.port, r.healthy) == ("starting", 4002, False)
        await service.stop(d.id)

    asyncio.run(scenario())


def test_each_replica_has_its_own_key(tmp_path):
    service = never_listening_engine(tmp_path).service

    async def scenario() -> list[str]:
        d = await service.launch("m", replicas=2)
        keys = [(Path(r.folder) / "key").read_text() for r in d.replicas]
        await service.stop(d.id)
        return keys

    first, second = asyncio.run(scenario())
    assert first != second and len(first) >= 32
