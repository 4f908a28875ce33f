"""The admin endpoint shows how many scheduler calls this server has made, by command."""
from __future__ import annotations

import json

import pytest

from jupyter_osire_llm.schedulers.base import Job


@pytest.fixture
def jp_server_config(tmp_path):
    return {"ServerApp": {"jpserver_extensions": {"jupyter_osire_llm": True}},
            "OsireLLM": {"scheduler": "local", "job_root": str(tmp_path / "jobs"),
                         "db_path": str(tmp_path / "state.sqlite")}}


async def test_admin_and_health_show_scheduler_calls(jp_fetch, jp_serverapp, tmp_path):
    async def get(route: str) -> dict:
        return json.loads((await jp_fetch("osire", "api", route, method="GET")).body)

    assert (await get("admin"))["scheduler_calls"] == {}
    scheduler = jp_serverapp.web_app.settings["osire"].scheduler
    scheduler.query([Job("1", tmp_path / "a"), Job("2", tmp_path / "b")])   # one call, two jobs
    scheduler.cancel(Job("1", tmp_path / "a"))
    assert (await get("admin"))["scheduler_calls"] == {"cancel": 1, "query": 1}
    assert (await get("health"))["scheduler"]["calls"] == {"cancel": 1, "query": 1}
