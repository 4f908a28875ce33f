"""The Jupyter token goes only to the user's own Jupyter server: with every proxy variable of a
login node set (and no ``no_proxy`` for loopback), the CLI, ``client()`` / ``async_client()``,
the ``%osire`` magics in a real kernel and the REST client never talk to the proxy, here a
recorder that must stay silent; a redirect to another origin never carries the token."""
from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest

from conftest import DISCOVERY_ENV, Kernel, errors_of, outputs, start_server, stop_server, text_of
from recorder import Recorder, Redirector, proxied_env

from jupyter_osire_llm._client.api import OsireClient, async_client, client
from jupyter_osire_llm._client.http import Server, call

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = start_server(tmp_path_factory.mktemp("credentials"), "local")
    yield srv
    stop_server(srv)


@pytest.fixture
def recorder():
    with Recorder() as rec:
        yield rec


def osire(env, *args):
    return subprocess.run([sys.executable, "-m", "jupyter_osire_llm.cli", *args],
                          capture_output=True, text=True, timeout=120, env=env)


def test_cli_never_uses_an_environment_proxy(server, recorder):
    env = proxied_env(server.client_env(), recorder.url)
    for args in (["models"], ["ps", "--json"], ["status"], ["batches"]):
        result = osire(env, *args)
        assert result.returncode == 0, (args, result.stderr)
    assert recorder.requests == []
    assert "fake-chat" in osire(env, "models").stdout


def test_client_and_async_client_never_use_an_environment_proxy(server, recorder,
                                                                  monkeypatch):
    for name, value in proxied_env(server.client_env(), recorder.url).items():
        monkeypatch.setenv(name, value)
    for name in DISCOVERY_ENV:
        if name != "JUPYTER_RUNTIME_DIR":
            monkeypatch.delenv(name, raising=False)
    assert client(max_retries=0).models.list().data == []

    async def listed():
        async with async_client(max_retries=0) as llm:
            return (await llm.models.list()).data
    assert asyncio.run(listed()) == []
    assert recorder.requests == []


@pytest.mark.parametrize("status", [302, 307])
def test_a_redirect_to_another_origin_never_carries_the_token(recorder, status):
    """urllib re-sends every header on a redirect, Authorization included: not any more."""
    secret = "SECRET-jupyter-token"
    with Redirector(recorder.url, status) as redirector:
        answer = call(Server(redirector.url, secret), "GET",
                      redirector.url + "osire/api/health")
        assert answer["status"] == "recorded"             # followed, to the other port
        assert redirector.requests[0]["headers"]["Authorization"] == f"token {secret}"
        OsireClient(Server(redirector.url, secret)).openai(max_retries=0).models.list()
    assert [r["target"] for r in recorder.requests] == ["/osire/api/health", "/osire/v1/models"]
    assert not recorder.saw(secret)


def test_magics_and_client_in_a_kernel_never_use_an_environment_proxy(tmp_path, recorder):
    """The kernel inherits the proxy variables, as a kernel on a login node would."""
    server = start_server(tmp_path, "local", env=proxied_env({}, recorder.url))
    kernel = None
    try:
        kernel = Kernel(server)

        def run_ok(code, timeout=120):
            messages = kernel.run(code, timeout)
            assert not errors_of(messages), text_of(messages)
            return messages

        seen = run_ok("import os; print(os.environ['http_proxy'])")
        assert recorder.url in text_of(seen)
        run_ok("%load_ext jupyter_osire_llm")
        models = run_ok("%osire models")
        assert "fake-chat" in outputs(models, "display_data")[0]["content"]["data"]["text/plain"]
        run_ok("%osire launch fake-chat --time 00:05:00 --wait --timeout 150", timeout=180)
        chat = run_ok("%%osire chat fake-chat --max-tokens 3\nSay hello.")
        assert outputs(chat, "display_data", "update_display_data")
        listed = run_ok("from jupyter_osire_llm import client\n"
                        "print([m.id for m in client().models.list().data])")
        assert "fake-chat" in text_of(listed)
        run_ok("%osire stop fake-chat")
        assert recorder.requests == []
        assert server.token not in text_of(chat + listed)
    finally:
        if kernel:
            kernel.close()
        stop_server(server)
