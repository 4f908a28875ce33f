"""Server discovery, error mapping and progress lines, without a server: runtime files written
here, live processes standing in for servers. The kernel side imports nothing of the server."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from jupyter_osire_llm import errors
from jupyter_osire_llm._client.api import (AuthenticationFailed, Server, ServerNotFound, describe,
                                       discover)
from jupyter_osire_llm._client.http import error_from_response
from jupyter_osire_llm.cli import _new_lines


@pytest.fixture
def sleepers():
    procs = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
             for _ in range(2)]
    yield [p.pid for p in procs]
    for p in procs:
        p.kill()
        p.wait()


def runtime_file(folder, pid, port, base_url="/", root_dir="/", token="tok", age=0.0):
    """As Jupyter writes it: a 0700 folder, a 0600 file (``jupyter_core.paths.secure_write``)."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    folder.chmod(0o700)
    path = folder / f"jpserver-{pid}.json"
    path.write_text(json.dumps({
        "url": f"http://127.0.0.1:{port}{base_url}", "base_url": base_url, "port": port,
        "pid": pid, "token": token, "root_dir": str(root_dir), "secure": False, "sock": ""}))
    path.chmod(0o600)
    stamp = time.time() - age
    os.utime(path, (stamp, stamp))
    return path


def env_with(runtime, **extra):
    return {"JUPYTER_RUNTIME_DIR": str(runtime), "HOME": os.environ.get("HOME", "/"), **extra}


def test_kernel_side_imports_nothing_of_the_server():
    code = """
import sys
for name in ("jupyter_server", "tornado", "aiohttp", "pydantic", "jinja2", "yaml"):
    sys.modules[name] = None          # as in a kernel environment without them
import jupyter_osire_llm
from jupyter_osire_llm import client, async_client, load_ipython_extension
import jupyter_osire_llm.magics, jupyter_osire_llm.cli
from IPython.core.interactiveshell import InteractiveShell
shell = InteractiveShell.instance()
load_ipython_extension(shell)
assert "osire" in shell.magics_manager.magics["line"]
assert "osire" in shell.magics_manager.magics["cell"]
assert "openai" not in sys.modules   # imported only when a client is asked for
print("ok")
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert result.stdout.strip() == "ok", result.stderr


def test_environment_first(tmp_path, sleepers):
    runtime_file(tmp_path, sleepers[0], 1111)
    token_file = tmp_path / "t"
    token_file.write_text("from-file\n")
    s = discover(env=env_with(tmp_path, OSIRE_URL="http://h:2/base", OSIRE_TOKEN="T"))
    assert (s.url, s.token, s.source) == ("http://h:2/base/", "T", "OSIRE_URL")
    s = discover(env=env_with(tmp_path, OSIRE_URL="http://h:2/", OSIRE_TOKEN_FILE=str(token_file)))
    assert s.token == "from-file"
    assert "from-file" not in repr(s) and "from-file" not in json.dumps(s.public())


def test_jupyterhub(tmp_path, sleepers):
    runtime_file(tmp_path, sleepers[0], 1111)
    runtime_file(tmp_path, sleepers[1], 2222, base_url="/user/ana/")
    hub = {"JUPYTERHUB_API_TOKEN": "hubtok", "JUPYTERHUB_SERVICE_PREFIX": "/user/ana/"}
    s = discover(env=env_with(tmp_path, **hub,
                              JUPYTERHUB_SERVICE_URL="http://0.0.0.0:2222/user/ana/"))
    assert (s.url, s.token, s.source) == ("http://127.0.0.1:2222/user/ana/", "hubtok",
                                          "JupyterHub")
    s = discover(env=env_with(tmp_path, **hub))            # prefix only: the matching server
    assert s.url == "http://127.0.0.1:2222/user/ana/" and s.token == "hubtok"


def test_the_server_that_started_this_kernel_wins(tmp_path, sleepers):
    runtime_file(tmp_path, sleepers[0], 1111, age=0)       # newest
    runtime_file(tmp_path, sleepers[1], 2222, base_url="/node/cn1/2222/", token="mine", age=60)
    s = discover(env=env_with(tmp_path, JPY_PARENT_PID=str(sleepers[1])))
    assert (s.url, s.token) == ("http://127.0.0.1:2222/node/cn1/2222/", "mine")
    assert s.source == "the server that started this kernel"


def test_an_ancestor_process_is_matched(tmp_path, sleepers):
    runtime_file(tmp_path, sleepers[0], 1111, age=0)
    runtime_file(tmp_path, os.getppid(), 3333, token="parent", age=60)
    s = discover(env=env_with(tmp_path))
    assert s.token == "parent" and s.source == "the server this process runs under"


def test_fallbacks(tmp_path, sleepers, monkeypatch):
    runtime = tmp_path / "runtime"
    project = tmp_path / "project"
    (project / "sub").mkdir(parents=True)
    runtime_file(runtime, 99999999, 4444)                  # dead pid: ignored
    with pytest.raises(ServerNotFound):
        discover(env=env_with(runtime))
    runtime_file(runtime, sleepers[0], 1111, root_dir=tmp_path / "elsewhere", age=0)
    assert discover(env=env_with(runtime)).source == "the only running server"
    runtime_file(runtime, sleepers[1], 2222, root_dir=project, age=60)
    monkeypatch.chdir(project / "sub")
    s = discover(env=env_with(runtime))
    assert s.url == "http://127.0.0.1:2222/"
    assert s.source == "the server whose root folder holds the current folder"
    monkeypatch.chdir(tmp_path)
    assert discover(env=env_with(runtime)).url == "http://127.0.0.1:1111/"   # the newest


def test_url_given_takes_the_token_of_that_server(tmp_path, sleepers):
    runtime_file(tmp_path, sleepers[0], 1111, token="one")
    runtime_file(tmp_path, sleepers[1], 2222, token="two")
    assert discover(url="http://127.0.0.1:2222", env=env_with(tmp_path)).token == "two"
    assert discover(url="http://127.0.0.1:5555", env=env_with(tmp_path)).token == ""


NOBODY = 65534          # tests run as root: a file chowned to nobody is another user's
ANA = "/user/ana/"      # the base URL of both the user's server and the planted one


def plant(kind, runtime, pid, elsewhere):
    """A runtime file another user could have written, newer than the user's own."""
    if kind == "symlink":
        target = runtime_file(elsewhere, pid, 6666, ANA, token="planted")
        os.chown(target, NOBODY, NOBODY)
        (runtime / f"jpserver-{pid}.json").symlink_to(target)
        return
    path = runtime_file(runtime, pid, 6666, ANA, token="planted")
    if kind == "world-writable":
        path.chmod(0o666)
    elif kind == "group-writable":
        path.chmod(0o620)
    elif kind == "another-users":
        os.chown(path, NOBODY, NOBODY)


needs_root = pytest.mark.skipif(os.getuid() != 0, reason="chown to another user needs root")


@needs_root
@pytest.mark.parametrize("kind", ["world-writable", "group-writable", "another-users",
                                  "symlink"])
def test_a_runtime_file_another_user_could_write_is_ignored(tmp_path, sleepers, kind, caplog):
    runtime = tmp_path / "runtime"
    runtime_file(runtime, sleepers[0], 1111, ANA, token="mine", age=60)
    plant(kind, runtime, sleepers[1], tmp_path / "elsewhere")
    caplog.set_level("WARNING", logger="jupyter_osire_llm._client.discovery")
    s = discover(env=env_with(runtime))
    assert (s.url, s.token, s.source) == ("http://127.0.0.1:1111/user/ana/", "mine",
                                          "the only running server")
    # Under JupyterHub, the hub token never goes to the URL of a planted file either.
    hub = discover(env=env_with(runtime, JUPYTERHUB_API_TOKEN="hubtok",
                                JUPYTERHUB_SERVICE_PREFIX=ANA))
    assert (hub.url, hub.token) == ("http://127.0.0.1:1111/user/ana/", "hubtok")
    said = caplog.text
    assert f"jpserver-{sleepers[1]}.json" in said and "planted" not in said
    assert {"world-writable": "writable by others", "group-writable": "writable by its group",
            "another-users": f"owned by uid {NOBODY}", "symlink": "a symlink"}[kind] in said


@needs_root
@pytest.mark.parametrize("kind", ["world-writable", "another-users"])
def test_a_runtime_folder_another_user_could_write_is_ignored(tmp_path, sleepers, kind, caplog):
    runtime = tmp_path / "runtime"
    runtime_file(runtime, sleepers[0], 1111, token="mine")
    if kind == "world-writable":
        runtime.chmod(0o777)
    else:
        os.chown(runtime, NOBODY, NOBODY)
    with pytest.raises(ServerNotFound):
        discover(env=env_with(runtime))
    assert str(runtime) in caplog.text and "mine" not in caplog.text


def test_server_errors_become_the_projects_exceptions():
    server = Server("http://h/", "SECRET")

    def body(code, status_type="invalid_request_error", param=None):
        return json.dumps({"error": {"message": "m", "type": status_type, "code": code,
                                     "param": param}}).encode()

    cases = [(404, body("not_found"), errors.NotFound),
             (400, body("limit_exceeded", param="resources.gpus"), errors.LimitExceeded),
             (409, body("conflict"), errors.Conflict),
             (503, body("scheduler_unavailable", "scheduler_error"), errors.SchedulerUnavailable),
             (503, body("model_not_ready", "upstream_error"), errors.ModelNotReady),
             (403, body(403, "authentication_error"), AuthenticationFailed),
             (403, b'{"message": "Forbidden", "reason": null}', AuthenticationFailed),
             (404, b"<html>not found</html>", errors.NotFound),
             (400, body("whatever-new"), errors.RequestError)]
    for status, raw, cls in cases:
        exc = error_from_response(status, raw, "http://h/osire/api/x", server)
        assert type(exc) is cls, (status, raw)
        assert exc.status == status and "SECRET" not in exc.message
    assert error_from_response(400, body("limit_exceeded", param="resources.gpus"), "u",
                                server).field == "resources.gpus"
    assert "enabled" in error_from_response(404, b"", "u", server).message


def test_progress_lines():
    now = 1_000_000.0
    d = {"id": "ab12", "model": "m", "created": now - 30, "state": "queued", "reason": None,
         "replicas": [{"reason": "Resources", "estimated_start": now + 300}]}
    line = describe(d, now)
    assert line.startswith("m (ab12): queued, reason Resources, estimated start ")
    assert "(in 5 min 00 s)" in line and "waiting 30 s" in line
    d.update(state="starting", replicas=[{"started_at": now - 12}])
    assert describe(d, now) == "m (ab12): starting, 12 s since the job started"
    d.update(state="ready", replicas=[{"ready_at": now - 5}])
    assert describe(d, now) == "m (ab12): ready after 25 s"
    d.update(state="failed", reason="out of memory")
    assert describe(d, now) == "m (ab12): failed: out of memory"


def test_follow_prints_only_new_lines():
    assert _new_lines([], ["a", "b"]) == ["a", "b"]
    assert _new_lines(["a", "b", "c"], ["b", "c", "d", "e"]) == ["d", "e"]
    assert _new_lines(["a", "b"], ["a", "b"]) == []
    assert _new_lines(["x"], ["y", "z"]) == ["y", "z"]
