"""An engine whose flags are not vLLM's: the catalog names them and the job uses them, no wrapper
script. Here llama.cpp's llama-server spellings (-m, --alias, --api-key-file, --ssl-cert-file),
which the fake engine understands as llama-server does; the key reaches it only by file."""
from __future__ import annotations

import json
import sys

import pytest

from lifecycle_catalog import FAKE_ENGINE, dirs_with_catalog


@pytest.fixture
def backend() -> str:
    return "local"


@pytest.fixture
def osire_dirs(tmp_path):
    return dirs_with_catalog(tmp_path, f"""\
  llama-style:
    command: {sys.executable} {FAKE_ENGINE}
    kind: openai
    model_flag: -m
    name_flag: --alias
    key_file_flag: --api-key-file
    tls_cert_flag: --ssl-cert-file
    tls_key_flag: --ssl-key-file
""", """
  - name: fake-llama
    model: /models/fake.gguf
    engine: llama-style
    resources: {time: "00:10:00", cpus: 1}
    engine_args: {ctx-size: 4096}
""")


async def test_a_llama_cpp_style_engine_starts_and_answers_under_its_catalog_name(api, jp_fetch,
                                                                                 osire_dirs):
    d = await api.launch("fake-llama")
    try:
        ready = await api.wait(d["id"], {"ready", "failed"})
        assert ready["state"] == "ready", ready
        script = (osire_dirs["jobs"] / d["id"] / "r0" / "job.sh").read_text()
        assert "-m /models/fake.gguf --ctx-size 4096 --host 127.0.0.1 --alias fake-llama" in script
        assert '--port "$PORT"' in script and "VLLM_API_KEY" not in script
        response = await jp_fetch("osire", "v1", "chat", "completions", method="POST",
                                  headers={"Content-Type": "application/json"},
                                  body=json.dumps({"model": "fake-llama", "max_tokens": 2,
                                                   "messages": [{"role": "user",
                                                                 "content": "hi"}]}),
                                  raise_error=False)
        assert response.code == 200, response.body
        answer = json.loads(response.body)
        assert answer["model"] == "fake-llama" and answer["choices"][0]["message"]["content"]
    finally:
        await api.call("DELETE", "deployments", d["id"])
        await api.wait(d["id"], {"stopped"})
