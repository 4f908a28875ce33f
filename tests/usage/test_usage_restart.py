"""Usage lives in the state file: it survives a restart of the Jupyter server (a clean stop
writes what the proxy counted; a kill loses nothing that was already written) and covers every
Jupyter server of the user sharing that file. Real ``jupyter server`` processes, the official
``openai`` client."""
from __future__ import annotations

import signal

import openai
import pytest

from jupyter_osire_llm._client.api import OsireClient, Server
from jupyter_osire_llm.errors import RequestError
from server_process import JupyterServer
from usage_support import static_config

MESSAGES = [{"role": "user", "content": "hello there"}]


def call(server: JupyterServer, tokens: int, stream: bool) -> tuple[int, int]:
    client = openai.OpenAI(base_url=server.url + "osire/v1", api_key=server.token, max_retries=0)
    if not stream:
        usage = client.chat.completions.create(model="fake", messages=MESSAGES,
                                               max_tokens=tokens).usage
        return usage.prompt_tokens, usage.completion_tokens
    chunks = list(client.chat.completions.create(model="fake", messages=MESSAGES,
                                                 max_tokens=tokens, stream=True))
    assert all(c.choices for c in chunks)        # no usage chunk: it did not ask for one
    return 6, tokens                             # 2 words + 4, as the fake engine counts


def stop_cleanly(server: JupyterServer) -> None:
    """SIGTERM, as systemd, JupyterHub and batch systems end a server (SIGINT would ask for a
    confirmation first): the extension's stop hook runs."""
    assert server.proc is not None
    server.proc.send_signal(signal.SIGTERM)
    server.proc.wait(30)
    server.proc = None


def totals(server: JupyterServer) -> dict:
    code, body = server.request("GET", "osire/api/usage")
    assert code == 200, body
    return {k: body["totals"][k] for k in ("requests", "prompt_tokens", "completion_tokens")}


@pytest.fixture
def servers(tmp_path, fake_engine):
    config = {"scheduler": "local", "job_root": str(tmp_path / "jobs"),
              "db_path": str(tmp_path / "state" / "state.sqlite"),
              "static_endpoints": static_config(fake_engine)}
    made = [JupyterServer(tmp_path / f"server{i}", config) for i in (1, 2)]
    yield made
    for server in made:
        server.stop()


def test_usage_survives_restarts_and_covers_every_server(servers):
    first, second = servers
    first.start()
    expected = {"requests": 0, "prompt_tokens": 0, "completion_tokens": 0}

    def add(counts: tuple[int, int]) -> None:
        expected["requests"] += 1
        expected["prompt_tokens"] += counts[0]
        expected["completion_tokens"] += counts[1]

    add(call(first, 5, stream=False))
    add(call(first, 3, stream=True))
    stop_cleanly(first)                   # a clean stop writes what was counted
    first.start()
    assert totals(first) == expected

    add(call(first, 4, stream=True))
    assert totals(first) == expected      # asking writes this server's counts first
    first.kill()                          # so a kill afterwards loses none of them
    first.start()
    assert totals(first) == expected

    second.start()                        # another server of the user, the same state file
    add(call(second, 2, stream=False))
    add(call(first, 1, stream=False))
    stop_cleanly(second)
    assert totals(first) == expected

    # the notebook client's view: the same rows
    osire = OsireClient(Server(first.url, first.token))
    report = osire.usage()
    assert {k: report["totals"][k] for k in expected} == expected
    assert [r["model"] for r in report["usage"]] == ["fake"]
    assert osire.usage(since="2999-01-01")["usage"] == []
    with pytest.raises(RequestError) as refused:
        osire.usage(since="last week")
    assert refused.value.field == "since"
    print("counted over restarts and two servers:", expected)
