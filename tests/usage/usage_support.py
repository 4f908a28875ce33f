"""Shared by the usage tests: the fake engine's key and the static endpoint leading to it."""
from __future__ import annotations

ENGINE_KEY = "usage-engine-key"


def static_config(engine_url: str) -> dict:
    return {"fake": {"url": engine_url + "/v1", "api_key": ENGINE_KEY}}
