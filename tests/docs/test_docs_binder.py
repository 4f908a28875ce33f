"""binder/: the postBuild is valid shell, the Binder catalog loads without problems, and what a
Binder user does works there: on the local backend, launch the stand-in, stream an answer through
/osire/v1 with the openai client, and see the failing demo model fail with its reason."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from docblocks import REPO
from server_process import JupyterServer

BINDER = REPO / "binder"


def test_postbuild_is_valid_shell_and_uses_the_binder_catalog():
    assert subprocess.run(["bash", "-n", str(BINDER / "postBuild")]).returncode == 0
    text = (BINDER / "postBuild").read_text()
    assert "demo_catalog.py" in text and '"scheduler": "local"' in text


def _catalog(tmp_path: Path) -> Path:
    out = tmp_path / "catalog.yaml"
    subprocess.run([sys.executable, str(BINDER / "demo_catalog.py"), "--out", str(out)],
                   check=True, capture_output=True)
    return out


def test_binder_catalog_loads_without_problems(tmp_path):
    from jupyter_osire_llm.core.catalog import load_catalog
    catalog = load_catalog(str(_catalog(tmp_path)))
    assert not catalog.problems and not catalog.insecure()
    assert list(catalog.models) == ["demo-stand-in", "demo-fails-at-start"]


@pytest.fixture
def binder_server(tmp_path):
    server = JupyterServer(tmp_path, {"scheduler": "local", "catalog": str(_catalog(tmp_path)),
                                      "job_root": str(tmp_path / "jobs")})
    server.start()
    try:
        yield server
    finally:
        server.stop_all_deployments()
        server.stop()


def test_what_a_binder_user_does(binder_server):
    server = binder_server
    code, d = server.request("POST", "osire/api/deployments", {"model": "demo-stand-in"})
    assert code == 201, d
    server.wait_state(d["id"], {"ready"}, timeout=120)
    from openai import OpenAI
    llm = OpenAI(base_url=server.url + "osire/v1", api_key=server.token)
    chunks = [c.choices[0].delta.content or "" for c in llm.chat.completions.create(
        model="demo-stand-in", stream=True, max_tokens=5,
        messages=[{"role": "user", "content": "Hello"}]) if c.choices]
    assert "".join(chunks).split() == ["t0", "t1", "t2", "t3", "t4"]
    code, bad = server.request("POST", "osire/api/deployments", {"model": "demo-fails-at-start"})
    assert code == 201, bad
    failed = server.wait_state(bad["id"], {"failed"}, timeout=120)
    assert "failed at start-up" in failed["reason"] and "exit code 3" in failed["reason"]
    server.request("DELETE", f"osire/api/deployments/{d['id']}")
    server.wait_state(d["id"], {"stopped"}, timeout=60)
