"""A corrupt state file does not switch off the product (issue 17, item 10).

A real Jupyter server launches a deployment on real Slurm and is stopped; its state file is then
damaged (truncated, a page overwritten, a row that is not JSON, or the whole file replaced by
something that is not SQLite) and a new server is started on the same folders. It starts, says
what happened in /osire/api/health (``status: degraded`` and ``state.problems``), keeps the rows
it can read, and keeps watching the running job: it becomes ready, serves, and can be stopped.
"""
from __future__ import annotations

import json
import os
import sqlite3
import subprocess
from pathlib import Path

import openai
import pytest

from jupyter_osire_llm.deployments.states import STOPPED, Deployment, Replica
from lifecycle_catalog import write_catalog
from server_process import JupyterServer

PAGE = 4096


@pytest.fixture
def folders(slurm_cluster, tmp_path) -> dict:
    return {"scheduler": "slurm", "job_root": str(tmp_path / "jobs"),
            "catalog": str(write_catalog(tmp_path / "c.yaml")),
            "db_path": str(tmp_path / "state" / "state.sqlite"), "keep_finished": 1000,
            "monitor_fast_interval": 0.2, "monitor_slow_interval": 1.0, "max_restarts": 0}


@pytest.fixture
def servers(tmp_path):
    started: list[JupyterServer] = []

    def start(osire: dict) -> JupyterServer:
        server = JupyterServer(tmp_path / f"server{len(started)}", osire)
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.stop()


def in_squeue(job_id: str) -> bool:
    out = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%i"], capture_output=True,
                         text=True).stdout
    return job_id in out.split()


def fill_and_damage(path: Path, kind: str) -> None:
    """Older, ended deployments after the live one (so on later pages), then the damage."""
    with sqlite3.connect(path) as db:
        for i in range(150):
            old = Deployment(id=f"old{i:03d}", model="fake-chat", created=10.0 + i,
                             resources={}, state=STOPPED, reason="x" * 1500,
                             replicas=(Replica(0, f"/nowhere/{i}", state=STOPPED),))
            db.execute("INSERT INTO records (kind, id, created, doc, version) "
                       "VALUES ('deployments', ?, ?, ?, 1)", (old.id, old.created,
                                                              json.dumps(old.to_doc())))
        if kind == "bad-row":
            db.execute("UPDATE records SET doc = '{cut off' WHERE id = 'old007'")
    data = bytearray(path.read_bytes())
    if kind == "truncated":
        data = data[:len(data) - 20 * PAGE]
    elif kind == "overwritten-page":
        at = (len(data) // PAGE - 30) * PAGE
        data[at:at + PAGE] = os.urandom(PAGE)
    elif kind == "not-sqlite":
        data = bytearray(b"{\"this\": \"is not a database\"}\n" * 300)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("kind", ["truncated", "overwritten-page", "bad-row"])
def test_the_readable_rows_are_kept_and_the_running_job_still_watched(folders, servers, kind):
    first = servers(folders)
    code, d = first.request("POST", "osire/api/deployments", {"model": "fake-chat"})
    assert code == 201, d
    first.stop()                      # the job runs on; the state file is damaged meanwhile
    fill_and_damage(Path(folders["db_path"]), kind)
    try:
        watched(servers(folders), d, kind, folders)
    finally:
        subprocess.run(["scancel", d["replicas"][0]["job_id"]], check=False,
                       capture_output=True)   # left running if the test failed


def watched(second: JupyterServer, d: dict, kind: str, folders: dict) -> None:
    """The second server (it started: the extension is on) says what happened and still
    watches the deployment: ready, served, stopped."""
    code, health = second.request("GET", "osire/api/health")
    assert code == 200 and health["status"] == "degraded", health
    problems = " | ".join(health["state"]["problems"])
    if kind == "bad-row":
        assert "deployment old007: unreadable record skipped" in problems, problems
    else:
        assert "is damaged (database disk image is malformed" in problems, problems
        assert "moved aside to" in problems and "kept for the administrator" in problems
        assert len(list(Path(folders["db_path"]).parent.glob("state.sqlite.corrupt-*"))) == 1
    ready = second.wait_state(d["id"], {"ready"}, timeout=120)    # still watched
    llm = openai.OpenAI(base_url=second.url + "osire/v1", api_key=second.token, max_retries=0)
    reply = llm.chat.completions.create(model="fake-chat", max_tokens=2,
                                        messages=[{"role": "user", "content": "hi"}])
    assert reply.choices[0].message.content.startswith("t0")
    code, _ = second.request("DELETE", f"osire/api/deployments/{d['id']}")
    assert code == 200
    ended = second.wait_state(d["id"], {"stopped"}, timeout=60)
    assert ended["replicas"][0]["scheduler_state"] == "CANCELLED", ended
    assert not in_squeue(ready["replicas"][0]["job_id"])


def test_a_file_that_is_not_sqlite_is_replaced_and_the_product_works(folders, servers):
    first = servers(folders)
    code, d = first.request("POST", "osire/api/deployments", {"model": "fake-chat"})
    assert code == 201, d
    orphan = d["replicas"][0]["job_id"]
    first.stop()
    fill_and_damage(Path(folders["db_path"]), "not-sqlite")
    try:
        second = servers(folders)
        code, health = second.request("GET", "osire/api/health")
        assert code == 200 and health["status"] == "degraded", health
        [problem] = health["state"]["problems"]
        assert "is not an SQLite database" in problem and "scancel them by hand" in problem
        [old] = Path(folders["db_path"]).parent.glob("state.sqlite.corrupt-*")
        assert old.read_bytes().startswith(b'{"this"')            # kept for the admin
        code, listing = second.request("GET", "osire/api/deployments")
        assert code == 200 and listing["deployments"] == []
        code, new = second.request("POST", "osire/api/deployments", {"model": "fake-chat"})
        assert code == 201, new                                   # the new file works
        second.wait_state(new["id"], {"ready"}, timeout=120)
        code, _ = second.request("DELETE", f"osire/api/deployments/{new['id']}")
        second.wait_state(new["id"], {"stopped"}, timeout=60)
    finally:
        subprocess.run(["scancel", orphan], check=False)           # nobody tracks it now
