"""Users' own model folders (``c.OsireLLM.user_models``): launched with a catalog model's engine
and resources, checked before anything is submitted, and remembered with where their weights came
from. The fake engine runs them on the real local backend."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

CONFIG = Path(__file__).resolve().parents[1] / "sizing" / "configs" / "llama-3-8b"


@pytest.fixture(params=["local"])
def backend(request) -> str:
    return request.param


@pytest.fixture
def allowed(tmp_path) -> Path:
    folder = tmp_path / "projects" / "me"
    (folder / "run7").mkdir(parents=True)
    for name in ("config.json", "model.safetensors.index.json"):
        (folder / "run7" / name).write_text((CONFIG / name).read_text())
    return folder


@pytest.fixture
def osire_config(osire_config, allowed):
    return {**osire_config, "user_models": [str(allowed)]}


async def test_a_checkpoint_runs_with_a_catalog_engine_and_says_where_it_came_from(api, allowed):
    d = await api.launch("fake-chat", model_path=str(allowed / "run7"), name="my-finetune")
    assert d["model"] == "my-finetune" and d["base_model"] == "fake-chat"
    assert d["source"]["path"] == os.path.realpath(allowed / "run7")
    assert len(d["source"]["sha256"]) == 64
    ready = await api.wait(d["id"], {"ready", "failed"})
    assert ready["state"] == "ready", ready
    script = (Path(ready["replicas"][0]["folder"]) / "job.sh").read_text()
    assert f"--model {os.path.realpath(allowed / 'run7')}" in script
    assert "--served-model-name my-finetune" in script
    default = await api.launch("fake-chat", model_path=str(allowed / "run7"))
    assert default["model"] == "run7"     # the folder's name when none is given


@pytest.mark.parametrize("make, body, param, says", [
    (None, {"model_path": "/etc"}, "model_path", "outside the folders this site allows"),
    (lambda a: os.symlink("/etc", a / "escape"), {"model_path": "{allowed}/escape"},
     "model_path", "outside the folders"),
    (lambda a: (a / "empty").mkdir(), {"model_path": "{allowed}/empty"}, "model_path",
     "config.json"),
    (lambda a: ((a / "odd").mkdir(), (a / "odd" / "config.json").write_text("{}")),
     {"model_path": "{allowed}/odd"}, "model_path", "names no architecture"),
    (None, {"model_path": "{allowed}/run7", "name": "fake-gpu"}, "name", "catalog model"),
    (None, {"model_path": "{allowed}/run7", "name": "a b"}, "name", "letters, digits"),
    (None, {"name": "lonely"}, "name", "goes with 'model_path'"),
    (None, {"model_path": "{allowed}/run7\n#SBATCH --uid=0"}, "model_path", "path of a model"),
])
async def test_a_bad_folder_is_refused_and_nothing_is_submitted(api, osire_dirs, allowed, make,
                                                                body, param, says):
    if make:
        make(allowed)
    body = {k: v.format(allowed=allowed) for k, v in body.items()}
    code, error = await api.call("POST", "deployments", body={"model": "fake-chat", **body})
    assert code == 400, error
    assert error["error"]["param"] == param and says in error["error"]["message"]
    assert (await api.call("GET", "deployments"))[1]["deployments"] == []
    assert not osire_dirs["jobs"].exists() or not any(osire_dirs["jobs"].iterdir())


def test_off_by_default():
    from jupyter_osire_llm.core.catalog import Catalog
    from jupyter_osire_llm.deployments.user_models import UserModels
    from jupyter_osire_llm.errors import RequestError
    with pytest.raises(RequestError, match="does not let users launch their own model folders"):
        UserModels([]).check("/tmp", None, Catalog())
