"""A broken site configuration: the server still starts and says exactly what is wrong."""
from __future__ import annotations

import pytest


@pytest.fixture
def osire_config(osire_config, tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("engines:\n  e: {command: x}\nmodels:\n  - {name: ok, model: /m, engine: e}\n"
                      "  - {name: bad, model: /m, engine: e, resources: {gpus: lots}}\n")
    return {**osire_config, "catalog": str(broken),
            "static_endpoints": {"site-llm": {"url": "http://127.0.0.1:9/v1", "api_key": "sekrit-key-123"},
                                 "broken": {"url": "ftp://nope"}}}


@pytest.fixture(params=["local"])
def backend(request) -> str:
    return request.param


async def test_health_reports_every_problem_and_good_parts_work(api):
    code, health = await api.call("GET", "health")
    assert code == 200
    assert health["catalog"]["models"] == 1
    assert any("bad" in p and "resources.gpus" in p for p in health["catalog"]["problems"])
    assert health["static_endpoints"]["models"] == ["site-llm"]
    assert any("broken" in p for p in health["static_endpoints"]["problems"])
    assert "sekrit-key-123" not in str(health)                # no key in the report
    code, catalog = await api.call("GET", "catalog")
    assert [m["name"] for m in catalog["models"]] == ["ok"]
