"""A user's own checkpoint (the real small model placed in the user's project folder) launched
with the catalog's vllm-cpu engine through ``c.OsireLLM.user_models``, on real Slurm, asked with
the official ``openai`` client: it answers "Paris". A folder outside the allowed prefixes is
refused with nothing submitted."""
from __future__ import annotations

import os
import subprocess

import pytest

from jupyter_osire_llm.demo import SMALL_MODEL_NAME
from test_small_model_e2e import QUESTION, small_model_server

pytestmark = [pytest.mark.slurm, pytest.mark.vllm]


@pytest.fixture(scope="module")
def setup(slurm_cluster, tmp_path_factory):
    work = tmp_path_factory.mktemp("user-checkpoint")
    work.chmod(0o755)
    projects = work / "projects"
    server = small_model_server(work, user_models=[str(projects)])
    server.start()
    try:
        code, catalog = server.request("GET", "osire/api/catalog")
        model = next(m["model"] for m in catalog["models"] if m["name"] == SMALL_MODEL_NAME)
        run = projects / "finetune-run7"
        run.mkdir(parents=True)
        for name in os.listdir(model):       # the weights stay where they are (symlinks)
            (run / name).symlink_to(os.path.join(model, name))
        yield server, run
    finally:
        server.stop_all_deployments()
        server.stop()


def test_the_user_s_checkpoint_answers_paris(setup):
    server, run = setup
    openai = pytest.importorskip("openai")
    code, d = server.request("POST", "osire/api/deployments", {
        "model": SMALL_MODEL_NAME, "model_path": str(run), "name": "my-smollm"})
    assert code == 201, d
    assert d["source"]["path"] == str(run.resolve()) and d["base_model"] == SMALL_MODEL_NAME
    state = server.wait_state(d["id"], {"ready", "failed", "stopped"}, timeout=1200)
    assert state["state"] == "ready", state
    client = openai.OpenAI(base_url=server.url + "osire/v1", api_key=server.token, timeout=600,
                           max_retries=0)
    reply = client.chat.completions.create(
        model="my-smollm", messages=[{"role": "user", "content": QUESTION}], temperature=0,
        max_tokens=32)
    print(f"my-smollm: {reply.choices[0].message.content!r}")
    assert "paris" in reply.choices[0].message.content.lower()


def test_a_folder_outside_the_allowed_ones_is_refused(setup):
    server, _ = setup
    before = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True,
                            text=True).stdout.split()
    code, error = server.request("POST", "osire/api/deployments", {
        "model": SMALL_MODEL_NAME, "model_path": "/tmp", "name": "elsewhere"})
    assert code == 400 and error["error"]["param"] == "model_path", error
    after = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True,
                           text=True).stdout.split()
    assert set(after) <= set(before)
