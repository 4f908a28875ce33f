"""The test catalog: models run by the fake engine (tests/fake_engine.py)."""
from __future__ import annotations

import sys
from pathlib import Path

FAKE_ENGINE = Path(__file__).resolve().parent / "fake_engine.py"


#: Models for the lifecycle policy tests (tests/deployments/test_policies.py), only where asked for:
#: other tests list the catalog exactly.
POLICY_MODELS = """
  - name: fake-two-minutes
    model: /models/fake
    engine: fake
    resources: {time: "2", cpus: 1}
  - name: fake-slow-tokens
    model: /models/fake
    engine: fake
    resources: {time: "00:10:00", cpus: 1}
    env: {OSIRE_FAKE_TOKEN_DELAY: "0.5"}
  - name: fake-pinned
    model: /models/fake
    engine: fake
    pinned: true
    resources: {time: "00:10:00", cpus: 1}
"""


def write_catalog(path: Path, policies: bool = False) -> Path:
    fake = f"{sys.executable} {FAKE_ENGINE}"
    path.write_text(f"""
engines:
  fake:
    command: {fake}
    kind: openai
    guard: false
    key_env: VLLM_API_KEY
    tls_cert_flag: --ssl-certfile
    tls_key_flag: --ssl-keyfile
models:
  - name: fake-chat
    model: /models/fake-chat
    engine: fake
    description: the fake OpenAI engine
    resources: {{time: "00:10:00", cpus: 1}}
  - name: fake-slow-start
    model: /models/fake
    engine: fake
    resources: {{time: "00:10:00", cpus: 1}}
    env: {{OSIRE_FAKE_STARTUP_DELAY: "2"}}
  - name: fake-crash
    model: /models/fake
    engine: fake
    resources: {{time: "00:10:00", cpus: 1}}
    env: {{OSIRE_FAKE_EXIT_AT_START: "3"}}
  - name: fake-one-minute
    model: /models/fake
    engine: fake
    resources: {{time: "1", cpus: 1}}
  - name: fake-gpu
    model: /models/fake
    engine: fake
    resources: {{gpus: 1, time: "00:10:00", cpus: 1}}
""" + (POLICY_MODELS if policies else ""))
    return path


def dirs_with_catalog(tmp_path: Path, engines: str, models: str) -> dict[str, Path]:
    """The lifecycle tests' folders, with the test catalog plus more engines and models (YAML
    text, indented as in the file)."""
    catalog = write_catalog(tmp_path / "catalog.yaml")
    catalog.write_text(catalog.read_text().replace("engines:\n", "engines:\n" + engines, 1)
                       + models)
    return {"jobs": tmp_path / "jobs", "db": tmp_path / "state" / "state.sqlite",
            "catalog": catalog}
