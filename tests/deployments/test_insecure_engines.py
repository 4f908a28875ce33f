"""An engine with no way to take a key or a certificate runs only when the admin says so, and
then it is flagged where users and admins look: the catalog listing and the health report."""
from __future__ import annotations

import sys

import pytest

from lifecycle_catalog import FAKE_ENGINE, dirs_with_catalog


@pytest.fixture
def backend() -> str:
    return "local"


@pytest.fixture
def osire_dirs(tmp_path):
    return dirs_with_catalog(tmp_path, f"""\
  open-server:
    command: {sys.executable} {FAKE_ENGINE} --no-auth
    kind: openai
    insecure: true
  unmarked-server:
    command: {sys.executable} {FAKE_ENGINE} --no-auth
    kind: openai
""", """
  - name: fake-open
    model: /models/fake
    engine: open-server
  - name: fake-unmarked
    model: /models/fake
    engine: unmarked-server
""")


async def test_insecure_engines_are_flagged_or_refused(api):
    code, catalog = await api.call("GET", "catalog")
    assert code == 200
    models = {m["name"]: m for m in catalog["models"]}
    assert models["fake-open"]["insecure"] == [
        "no key: anyone who reaches its port can use it",
        "no TLS: prompts and answers cross the network in clear"]
    assert "insecure" not in models["fake-chat"]           # keyed, behind pinned TLS
    assert "fake-unmarked" not in models                   # not marked: a catalog problem
    assert any("unmarked-server" in p and "insecure: true" in p for p in catalog["problems"])
    code, health = await api.call("GET", "health")
    assert health["catalog"]["insecure"] == {"fake-open": models["fake-open"]["insecure"]}
