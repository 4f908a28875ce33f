"""``jupyter osire`` against a running Jupyter server: every subcommand, ``--json`` parsed, every
documented exit code, and no token on the command line. The CLI is given no URL or token: it
finds the server from its runtime file, as in a terminal of the user's JupyterLab."""
from __future__ import annotations

import json
import os
import pty
import subprocess
import sys

import pytest

from conftest import start_server, stop_server
from engine_tools import free_port

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = start_server(tmp_path_factory.mktemp("cli"), "local")
    yield srv
    stop_server(srv)


@pytest.fixture
def clean(server):
    yield server
    server.stop_all_deployments()


def osire(server, *args, env=None, timeout=120):
    result = subprocess.run([sys.executable, "-m", "jupyter_osire_llm.cli", *args],
                            capture_output=True, text=True, timeout=timeout,
                            env=env or server.client_env())
    assert server.token not in result.stdout + result.stderr
    return result


def as_json(result):
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_models_ps_url_status(server):
    text = osire(server, "models")
    assert text.returncode == 0 and "fake-chat" in text.stdout and "MODEL" in text.stdout
    names = [m["name"] for m in as_json(osire(server, "models", "--json"))["models"]]
    assert names == ["fake-chat", "fake-never-ready", "fake-crash", "fake-html"]
    assert "deployments" in as_json(osire(server, "ps", "--json"))
    url = osire(server, "url")
    assert url.returncode == 0 and url.stdout.strip() == server.url + "osire/v1"
    info = as_json(osire(server, "--json", "url"))
    assert info["openai_base_url"] == server.url + "osire/v1" and info["token"] == "set"
    assert info["source"] == "the only running server"
    assert as_json(osire(server, "status", "--json"))["status"] == "ok"


def test_launch_wait_ps_logs_stop(clean):
    server = clean
    launched = osire(server, "launch", "fake-chat", "--time", "00:05:00", "--wait")
    assert launched.returncode == 0, launched.stderr
    deployment_id = launched.stdout.split()[0]
    # Not a terminal: one plain line per change of state, the last one "ready".
    lines = launched.stdout.strip().splitlines()
    assert "\r" not in launched.stdout
    assert lines[-1].startswith(f"fake-chat ({deployment_id}): ready")
    ps = as_json(osire(server, "ps", "--json"))["deployments"]
    assert [(d["id"], d["state"]) for d in ps] == [(deployment_id, "ready")]
    assert deployment_id in osire(server, "ps").stdout
    assert "starting engine" in osire(server, "logs", deployment_id, "--tail", "20").stdout
    logs = as_json(osire(server, "logs", deployment_id, "--json"))
    assert logs["id"] == deployment_id and logs["replicas"][0]["lines"]
    waited = as_json(osire(server, "wait", "fake-chat", "--json"))   # by model name
    assert waited["id"] == deployment_id and waited["state"] == "ready"
    stopped = as_json(osire(server, "stop", "fake-chat", "--json"))
    assert stopped["id"] == deployment_id and stopped["state"] in ("stopping", "stopped")
    server.wait_state(deployment_id, {"stopped"})


def test_launch_json_and_resources(clean):
    server = clean
    d = as_json(osire(server, "launch", "fake-chat", "--time", "00:03:00", "--replicas", "1",
                      "--json"))
    assert d["model"] == "fake-chat" and d["resources"]["time"] == "00:03:00"
    waited = as_json(osire(server, "launch", "fake-chat", "--wait", "--json"))
    assert waited["state"] == "ready"


def test_logs_follow_ends_when_the_deployment_ends(clean):
    server = clean
    deployment_id = as_json(osire(server, "launch", "fake-chat", "--json"))["id"]
    server.wait_state(deployment_id, {"ready"})
    follow = subprocess.Popen([sys.executable, "-m", "jupyter_osire_llm.cli", "logs", "-f",
                               deployment_id], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=server.client_env())
    first = follow.stdout.readline()         # the tail arrives before the deployment ends
    assert first.strip()
    server.request("DELETE", f"osire/api/deployments/{deployment_id}")
    out, err = follow.communicate(timeout=60)
    assert follow.returncode == 0, err
    assert "starting engine" in first + out


def test_wait_on_a_terminal_updates_one_line(clean):
    server = clean
    deployment_id = as_json(osire(server, "launch", "fake-chat", "--json"))["id"]
    main, child = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "jupyter_osire_llm.cli", "wait",
                             deployment_id], stdout=child, stderr=child, env=server.client_env())
    os.close(child)
    data = b""
    while True:
        try:
            chunk = os.read(main, 4096)
        except OSError:      # EIO: the child closed the terminal
            break
        if not chunk:
            break
        data += chunk
    assert proc.wait(60) == 0
    os.close(main)
    text = data.decode()
    assert "\r" in text and f"fake-chat ({deployment_id}): ready" in text
    assert text.endswith("\n")


@pytest.mark.parametrize("args", [[], ["nope"], ["launch"], ["ps", "--bogus"],
                                  ["logs", "x", "--tail", "many"]])
def test_usage_errors_exit_2(server, args):
    assert osire(server, *args).returncode == 2


def test_token_is_never_taken_from_argv(server):
    for args in (["--token", server.token, "ps"], [f"--token={server.token}", "ps"],
                 ["ps", "--token", server.token]):
        result = osire(server, *args)            # osire() asserts the token is not echoed
        assert result.returncode == 2
        assert "OSIRE_TOKEN" in result.stderr and "--token-file" in result.stderr


def test_token_from_environment_or_file(server, tmp_path):
    # A URL given, token from $OSIRE_TOKEN; and from --token-file; and a wrong one is refused.
    env = {**server.client_env(), "JUPYTER_RUNTIME_DIR": str(tmp_path / "none"),
           "OSIRE_URL": server.url, "OSIRE_TOKEN": server.token}
    assert osire(server, "ps", env=env).returncode == 0
    token_file = tmp_path / "token"
    token_file.write_text(server.token + "\n")
    token_file.chmod(0o600)
    env_file = {**server.client_env(), "JUPYTER_RUNTIME_DIR": str(tmp_path / "none")}
    result = osire(server, "--url", server.url, "--token-file", str(token_file), "ps",
                   env=env_file)
    assert result.returncode == 0, result.stderr
    wrong = osire(server, "ps", env={**env, "OSIRE_TOKEN": "wrong"})
    assert wrong.returncode == 4 and "refused the token" in wrong.stderr
    # --url alone: the token comes from the runtime file of the server at that URL.
    assert osire(server, "--url", server.url, "ps").returncode == 0


def test_not_found_exits_3(server):
    for args in (["logs", "nope"], ["stop", "nope"], ["wait", "nope"], ["launch", "no-such"]):
        result = osire(server, *args)
        assert result.returncode == 3, (args, result.stderr)
        assert result.stderr.startswith("error") and "Traceback" not in result.stderr


def test_refused_exits_4(server):
    result = osire(server, "launch", "fake-chat", "--gpus", "99")
    assert result.returncode == 4 and "resources.gpus" in result.stderr
    assert "Traceback" not in result.stderr


def test_unreachable_exits_5(server, tmp_path):
    env = {**server.client_env(), "OSIRE_URL": f"http://127.0.0.1:{free_port()}/"}
    result = osire(server, "ps", env=env)
    assert result.returncode == 5 and "cannot reach" in result.stderr
    nothing = osire(server, "ps", env={**server.client_env(),
                                       "JUPYTER_RUNTIME_DIR": str(tmp_path)})
    assert nothing.returncode == 5 and "no running Jupyter server" in nothing.stderr


def test_wait_timeout_exits_6_and_leaves_the_model(clean):
    server = clean
    deployment_id = as_json(osire(server, "launch", "fake-never-ready", "--json"))["id"]
    result = osire(server, "wait", deployment_id, "--timeout", "1")
    assert result.returncode == 6, result.stderr
    assert "still" in result.stderr
    code, body = server.request("GET", f"osire/api/deployments/{deployment_id}")
    assert body["state"] in ("queued", "starting")


def test_failed_deployment_exits_1_with_the_reason(clean):
    result = osire(clean, "launch", "fake-crash", "--wait")
    assert result.returncode == 1
    assert "failed" in result.stderr and "last lines of the log" in result.stderr


def test_old_names_still_work(server):
    catalog = osire(server, "catalog")
    assert catalog.returncode == 0 and "fake-chat" in catalog.stdout
    assert "jupyter osire models" in catalog.stderr
    listing = osire(server, "list", "--json")
    assert listing.returncode == 0 and "deployments" in json.loads(listing.stdout)


def test_jupyter_osire_command(server):
    """The `jupyter` dispatcher finds `jupyter-osire`."""
    jupyter = os.path.join(os.path.dirname(sys.executable), "jupyter")
    result = subprocess.run([jupyter, "osire", "ps"], capture_output=True, text=True,
                            env=server.client_env(), timeout=60)
    assert result.returncode == 0, result.stderr


def test_terminal_ipython_gets_plain_text(server):
    """Terminal IPython (no kernel): plain tables, and a usage error is a message."""
    ipython = os.path.join(os.path.dirname(sys.executable), "ipython")
    code = "%load_ext jupyter_osire_llm\n%osire models\n%osire ps\n%osire launch\n"
    result = subprocess.run([ipython, "--no-banner", "--colors=NoColor", "-c", code],
                            capture_output=True, text=True, timeout=120,
                            env={**server.client_env(), "IPYTHONDIR": str(server.workdir / "ip")})
    out = result.stdout + result.stderr
    assert "MODEL" in out and "fake-chat" in out and "<table>" not in out
    assert "no deployments" in out or "STATE" in out
    assert "the following arguments are required: model" in out and "Traceback" not in out
    assert server.token not in out


def test_batch_spec_runs_with_progress_and_writes_results(server, tmp_path):
    (tmp_path / "lines.jsonl").write_text("".join(
        json.dumps({"custom_id": f"c{i}", "method": "POST", "url": "/v1/chat/completions",
                    "body": {"messages": [{"role": "user", "content": "hi"}]}}) + "\n"
        for i in range(6)))
    spec = tmp_path / "spec.yaml"
    spec.write_text("model: fake-chat\ninput: lines.jsonl\nparams: {max_tokens: 2}\n"
                    "output: out/answers.jsonl\nmetadata: {project: cli}\n")
    (tmp_path / "out").mkdir()
    run = osire(server, "batch", str(spec), timeout=180)
    assert run.returncode == 0, run.stderr
    assert "completed, 6/6 done" in run.stdout            # progress lines (not a terminal)
    assert f"wrote {tmp_path / 'out' / 'answers.jsonl'}" in run.stdout
    answers = [json.loads(line) for line in
               (tmp_path / "out" / "answers.jsonl").read_text().splitlines()]
    assert sorted(a["custom_id"] for a in answers) == [f"c{i}" for i in range(6)]
    assert all(a["response"]["body"]["choices"][0]["message"]["content"].split() == ["t0", "t1"]
               for a in answers)
    listed = as_json(osire(server, "batches", "--json"))["batches"]
    mine = [b for b in listed if (b["metadata"] or {}).get("project") == "cli"]
    assert len(mine) == 1 and mine[0]["status"] == "completed"
    assert "completed" in osire(server, "batches").stdout
    again = as_json(osire(server, "batch", mine[0]["id"], "--no-wait", "--json"))
    assert again["request_counts"] == {"total": 6, "completed": 6, "failed": 0}
    resume = osire(server, "batch", mine[0]["id"], "--resume")
    assert resume.returncode == 4 and "nothing to resume" in resume.stderr
    deleted = osire(server, "batch", mine[0]["id"], "--delete")
    assert deleted.returncode == 0 and f"deleted {mine[0]['id']}" in deleted.stdout
    assert mine[0]["id"] not in osire(server, "batches").stdout
    assert (tmp_path / "out" / "answers.jsonl").is_file()      # what was written stays
    gone = osire(server, "batch", mine[0]["id"], "--delete")
    assert gone.returncode == 3, gone.stderr                     # not found


@pytest.mark.parametrize("text, code, words", [
    ("model: fake-chat\nprompts: [a]\ncolour: red\n", 4, "unknown field 'colour'"),
    ("model: fake-chat\n", 4, "either 'prompts'"),
    ("model: no-such\nprompts: [a]\n", 4, "line 1: model 'no-such' is not in the catalog"),
    ("prompts: [a]\n", 4, "'model' is required"),
    ("model: [unclosed\n", 4, "not valid YAML"),
])
def test_bad_batch_specs_are_refused_naming_the_field(server, tmp_path, text, code, words):
    spec = tmp_path / "spec.yaml"
    spec.write_text(text)
    before = as_json(osire(server, "batches", "--json"))["batches"]
    run = osire(server, "batch", str(spec))
    assert run.returncode == code and words in run.stderr, run.stderr
    assert as_json(osire(server, "batches", "--json"))["batches"] == before


@pytest.mark.parametrize("output", ["link.jsonl", "../stolen.jsonl", "{outside}/stolen.jsonl"])
def test_a_spec_output_outside_its_folder_or_symlinked_is_refused_and_nothing_written(
        server, tmp_path, output):
    outside, folder = tmp_path / "outside", tmp_path / "project"
    outside.mkdir()
    folder.mkdir()
    victim = outside / "victim"
    victim.write_text("precious\n")
    (folder / "link.jsonl").symlink_to(victim)
    spec = folder / "spec.yaml"
    spec.write_text(f"model: fake-chat\nprompts: [hi]\noutput: {output.format(outside=outside)}\n")
    before = as_json(osire(server, "batches", "--json"))["batches"]
    run = osire(server, "batch", str(spec))
    assert run.returncode == 4 and "'output'" in run.stderr, run.stderr
    assert as_json(osire(server, "batches", "--json"))["batches"] == before   # nothing submitted
    assert victim.read_text() == "precious\n"
    assert sorted(p.name for p in outside.iterdir()) == ["victim"]
    assert not (tmp_path / "stolen.jsonl").exists()
