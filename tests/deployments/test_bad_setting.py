"""An invalid OsireLLM setting: Jupyter Server would only warn and run the extension on its
defaults (site limits not in force). The extension switches itself off and every /osire route
answers why, naming the setting; nothing is submitted."""
from __future__ import annotations

import pytest

#: case -> (setting, bad value)
BAD = {"max_gpus": ("max_gpus", -1),                     # our own check
       "max_total_gpus": ("max_total_gpus", "four"),     # traitlets' type check
       "max_time": ("max_time", "soon"),
       "max_time-empty": ("max_time", ""),               # no job may run without a limit
       "startup_timeout": ("startup_timeout", 0),        # nor wait forever to be ready
       "gpu_types": ("gpu_types", {"a100": {"memory": "lots"}})}


@pytest.fixture(params=["local"])
def backend(request) -> str:
    return request.param


@pytest.fixture(params=sorted(BAD))
def setting(request) -> str:
    return request.param


@pytest.fixture
def osire_config(osire_config, setting):
    name, value = BAD[setting]
    return {**osire_config, name: value}


async def test_every_route_says_which_setting_is_wrong(api, jp_fetch, osire_dirs, setting):
    setting = BAD[setting][0]
    for method, path, body in [("GET", ("health",), None), ("GET", ("catalog",), None),
                               ("GET", ("deployments",), None),
                               ("POST", ("deployments",), {"model": "fake-chat"})]:
        code, error = await api.call(method, *path, body=body)
        assert code == 500, (method, path, error)
        assert error["error"]["param"] == f"OsireLLM.{setting}", error
        assert error["error"]["code"] == "config_error"
        assert "jupyter-osire-llm is off" in error["error"]["message"]
    response = await jp_fetch("osire", "v1", "models", raise_error=False)
    assert response.code == 500 and f"OsireLLM.{setting}" in response.body.decode()
    assert not osire_dirs["jobs"].exists()                # nothing was submitted


@pytest.mark.parametrize("setting", ["max_gpus"], indirect=True)
async def test_the_switched_off_routes_still_require_a_login(jp_fetch, setting):
    response = await jp_fetch("osire", "api", "health", raise_error=False,
                              headers={"Authorization": "token wrong"})
    assert response.code == 403
