"""The catalog says how big each model is and which requests hold it; a launch whose GPUs cannot
hold its model is refused before anything is submitted, unless it says ``force``.

The models are real configs (Llama 3 8B: 16.1 GB of bfloat16 weights) and the real small model;
the engine that runs is the fake one (no GPU here): what is checked is the decision."""
from __future__ import annotations

from pathlib import Path

import pytest

from lifecycle_catalog import dirs_with_catalog

CONFIGS = Path(__file__).resolve().parents[1] / "sizing" / "configs"
SMALL_MODEL = Path(__file__).resolve().parents[2] / ".osire" / "smollm2-135m-instruct"
MODELS = f"""  - name: llama-3-8b
    model: {CONFIGS / "llama-3-8b"}
    engine: fake
    resources: {{gpus: 1, time: "00:10:00", cpus: 1}}
  - name: unsized
    model: /nowhere/at/all
    engine: fake
    resources: {{gpus: 1, time: "00:10:00", cpus: 1}}
  - name: small
    model: {SMALL_MODEL}
    engine: fake
    engine_args: {{dtype: float32, max-model-len: 2048}}
    resources: {{time: "00:10:00", cpus: 1}}
"""


@pytest.fixture(params=["local"])
def backend(request) -> str:
    return request.param


@pytest.fixture
def osire_dirs(tmp_path) -> dict[str, Path]:
    return dirs_with_catalog(tmp_path, "", MODELS)


@pytest.fixture
def osire_config(osire_config):
    # 10 GiB GPUs: one holds 9.7 GB at 90 %, two hold the 8B model's 16.1 + 1.1 GB of KV cache
    return {**osire_config, "gpu_types": {"small": {"memory": "10G", "per_node": 2}}}


def _model(listing: dict, name: str) -> dict:
    return next(m for m in listing["models"] if m["name"] == name)


async def test_the_catalog_lists_each_model_s_size(api):
    code, listing = await api.call("GET", "catalog")
    assert code == 200
    size = _model(listing, "llama-3-8b")["size"]
    assert size["parameters"] == 8030261248 and size["weight_bytes"] == 16060522496
    assert size["kv_bytes_per_token"] == 131072 and size["min_gpus"] == 2
    assert size["summary"] == "16.1 GB of weights: 2 x SMALL 10G"
    assert size["options"] == [{"gpu_type": "small", "gpus": 2, "nodes": 1,
                                "context_tokens": int((2 * 10 * 2 ** 30 * 0.9 - 16060522496)
                                                      // 131072)}]
    unsized = _model(listing, "unsized")["size"]
    assert set(unsized) == {"note"} and "/nowhere/at/all" in unsized["note"]
    if SMALL_MODEL.exists():
        small = _model(listing, "small")["size"]
        assert (small["parameters"], small["weight_bytes"]) == (134515008, 538060032)


async def test_gpus_that_cannot_hold_the_model_are_refused_and_nothing_is_submitted(api,
                                                                                   osire_dirs):
    code, error = await api.call("POST", "deployments", body={"model": "llama-3-8b"})
    assert code == 400, error
    assert error["error"]["param"] == "resources.gpus"
    message = error["error"]["message"]
    assert message.startswith("model 'llama-3-8b' does not fit: 1 x SMALL 10G hold 9.7 GB")
    assert "ask for 2 x SMALL 10G" in message and '"force": true' in message
    assert (await api.call("GET", "deployments"))[1]["deployments"] == []
    assert not osire_dirs["jobs"].exists() or not any(osire_dirs["jobs"].iterdir())


async def test_enough_gpus_or_force_launch_and_an_unsized_model_launches(api):
    enough = await api.launch("llama-3-8b", resources={"gpus": 2})
    assert enough["resources"]["gpus"] == 2
    await api.call("DELETE", "deployments", enough["id"])
    forced = await api.launch("llama-3-8b", force=True)
    assert forced["resources"]["gpus"] == 1
    await api.call("DELETE", "deployments", forced["id"])
    await api.wait(forced["id"], {"stopped", "failed"})
    unsized = await api.launch("unsized")
    assert unsized["model"] == "unsized"


async def test_force_must_be_true_or_false(api):
    code, error = await api.call("POST", "deployments",
                                 body={"model": "llama-3-8b", "force": "yes"})
    assert code == 400 and error["error"]["param"] == "force"
