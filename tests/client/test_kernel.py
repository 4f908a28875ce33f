"""A kernel started by the running Jupyter server, given no URL or token, drives the models:
``%load_ext``, ``%osire models/launch --wait/ps/stop``, ``%%osire chat`` streaming in several
display updates, and ``client()``. On the real Slurm cluster; then the same discovery under an
Open OnDemand base URL and with JupyterHub's environment variables."""
from __future__ import annotations

import subprocess

import pytest

import hostile
from conftest import Kernel, errors_of, outputs, start_server, stop_server, text_of

pytestmark = pytest.mark.timeout(400)


def run_ok(kernel, code, timeout=120):
    messages = kernel.run(code, timeout)
    assert not errors_of(messages), text_of(messages)
    assert kernel.server.token not in repr(messages)     # the token never reaches a notebook
    return messages


def stdout_of(messages):
    return "".join(m["content"]["text"] for m in outputs(messages, "stream")
                   if m["content"]["name"] == "stdout")


def stderr_of(messages):
    return "".join(m["content"]["text"] for m in outputs(messages, "stream")
                   if m["content"]["name"] == "stderr")


@pytest.mark.slurm
def test_notebook_on_slurm(slurm_cluster, tmp_path):
    server = start_server(tmp_path, "slurm")
    kernel = None
    try:
        kernel = Kernel(server)
        run_ok(kernel, "%load_ext jupyter_osire_llm")

        source = run_ok(kernel, "from jupyter_osire_llm._client.api import discover\n"
                                "print(discover().source)")
        assert stdout_of(source).strip() == "the server that started this kernel"

        models = run_ok(kernel, "%osire models")
        shown = outputs(models, "display_data")
        assert shown and "fake-chat" in shown[0]["content"]["data"]["text/html"]
        assert "<table>" in shown[0]["content"]["data"]["text/html"]

        launch = run_ok(kernel, "%osire launch fake-chat --time 00:05:00 --wait --timeout 150",
                        timeout=180)
        progress = outputs(launch, "display_data", "update_display_data")
        assert progress, text_of(launch)
        display_ids = {m["content"]["transient"]["display_id"] for m in progress}
        assert len(display_ids) == 1                       # one line, updated in place
        assert ": ready" in progress[-1]["content"]["data"]["text/plain"]

        code, listing = server.request("GET", "osire/api/deployments")
        job_id = listing["deployments"][0]["replicas"][0]["job_id"]
        assert subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True,
                              text=True).stdout.count("JobState=RUNNING") == 1   # a real job

        ps = run_ok(kernel, "%osire ps")
        table = outputs(ps, "display_data")[0]["content"]["data"]
        assert "fake-chat" in table["text/html"] and "ready" in table["text/plain"]

        run_ok(kernel, "who = 'world'")
        chat = run_ok(kernel, "%%osire chat fake-chat --max-tokens 6 --system 'Be brief.'\n"
                              "Hello {who}!", timeout=60)
        shown = outputs(chat, "display_data", "update_display_data")
        updates = [m["content"]["data"]["text/plain"] for m in shown]
        assert len(updates) >= 4, updates                   # it streamed, chunk after chunk
        assert all(b.startswith(a) for a, b in zip(updates, updates[1:]))
        final = shown[-1]["content"]["data"]
        assert final == {"text/plain": "t0 t1 t2 t3 t4 t5 "}   # data, never markup
        assert len({m["content"]["transient"]["display_id"] for m in shown}) == 1

        state = run_ok(kernel, "print(repr(_osire_answer)); "
                               "m = get_ipython().magics_manager.registry['OsireMagics']; "
                               "print([x['role'] for x in m.chat.messages]); "
                               "print(m.chat.messages[1]['content'])")
        lines = stdout_of(state).splitlines()
        assert lines[0] == repr("t0 t1 t2 t3 t4 t5 ")
        assert lines[1] == "['system', 'user', 'assistant']"
        assert lines[2] == "Hello world!"                   # {who} came from the namespace

        again = run_ok(kernel, "%%osire chat fake-chat --max-tokens 2 --continue --out second\n"
                               "And again?")
        assert outputs(again, "update_display_data")
        roles = run_ok(kernel, "print(len(m.chat.messages), repr(second))")
        assert stdout_of(roles).strip() == "5 " + repr("t0 t1 ")

        direct = run_ok(kernel, "from jupyter_osire_llm import client\n"
                                "r = client().chat.completions.create(model='fake-chat', "
                                "max_tokens=3, messages=[{'role': 'user', 'content': 'Hi'}])\n"
                                "print(r.choices[0].message.content)")
        assert stdout_of(direct).strip() == "t0 t1 t2"

        aio = run_ok(kernel, "from jupyter_osire_llm import async_client\n"
                             "r = await async_client().chat.completions.create("
                             "model='fake-chat', max_tokens=2, "
                             "messages=[{'role': 'user', 'content': 'Hi'}])\n"
                             "print(r.choices[0].message.content)")
        assert stdout_of(aio).strip() == "t0 t1"

        # A refusal from the server is one readable line, not a traceback.
        bad = run_ok(kernel, "%osire launch fake-chat --gpus 99")
        assert stderr_of(bad).count("\n") == 1 and "resources.gpus" in stderr_of(bad)
        missing = run_ok(kernel, "%%osire chat no-such-model\nHi")
        assert stderr_of(missing).startswith("osire: ") and stderr_of(missing).count("\n") == 1

        url = run_ok(kernel, "%osire url")
        assert stdout_of(url).splitlines()[0] == server.url + "osire/v1"

        logs = run_ok(kernel, "%osire logs fake-chat --tail 5")
        assert stdout_of(logs).strip()

        stop = run_ok(kernel, "%osire stop fake-chat")
        assert "fake-chat" in stdout_of(stop)
        code, listing = server.request("GET", "osire/api/deployments")
        deployment_id = listing["deployments"][0]["id"]
        assert server.wait_state(deployment_id, {"stopped"})["state"] == "stopped"
    finally:
        if kernel:
            kernel.close()
        stop_server(server)


def rich_markup(messages):
    """Every rich (non text/plain) output of these messages that carries markup unescaped."""
    rich = [(m["msg_type"], mime, value)
            for m in outputs(messages, "display_data", "update_display_data", "execute_result")
            for mime, value in m["content"]["data"].items() if mime != "text/plain"]
    return [r for r in rich if any(tag in str(r[2]) for tag in hostile.MARKUP)]


def test_model_answer_and_engine_log_are_data_never_markup(tmp_path):
    """An answer carrying <img onerror>, <script>, Markdown and an image reaches the notebook as
    text/plain only (JupyterLab renders that as text, now and when the saved notebook opens);
    so does a log line carrying HTML."""
    server = start_server(tmp_path, "local")
    kernel = None
    try:
        kernel = Kernel(server)
        run_ok(kernel, "%load_ext jupyter_osire_llm")
        run_ok(kernel, "%osire launch fake-html --wait --timeout 150", timeout=180)
        chat = run_ok(kernel, "%%osire chat fake-html\nShow me some HTML", timeout=60)
        shown = outputs(chat, "display_data", "update_display_data")
        assert shown, text_of(chat)
        assert [m["content"]["data"] for m in shown][-1] == {"text/plain": hostile.REPLY}
        assert all(set(m["content"]["data"]) == {"text/plain"} for m in shown), shown
        assert not rich_markup(chat)
        answer = run_ok(kernel, "print(_osire_answer == " + repr(hostile.REPLY) + ")")
        assert stdout_of(answer).strip() == "True"       # the variable keeps the text as sent
        logs = run_ok(kernel, "%osire logs fake-html --tail 50")
        assert hostile.LOG_LINE in stdout_of(logs) and not rich_markup(logs)
        listing = run_ok(kernel, "%osire ps")
        assert not rich_markup(listing)
    finally:
        if kernel:
            kernel.close()
        stop_server(server)


def test_interrupt_stops_the_wait_not_the_model(tmp_path):
    server = start_server(tmp_path, "local")
    kernel = None
    try:
        kernel = Kernel(server)
        run_ok(kernel, "%load_ext jupyter_osire_llm")
        msg_id = kernel.kc.execute("%osire launch fake-never-ready --wait")
        # Interrupt once the wait has shown its line (the launch has happened by then).
        while True:
            msg = kernel.kc.get_iopub_msg(timeout=60)
            if (msg["parent_header"].get("msg_id") == msg_id
                    and msg["msg_type"] == "display_data"):
                break
        code, _ = server.request("POST", f"api/kernels/{kernel.kernel_id}/interrupt")
        assert code == 204
        rest = []
        while True:
            msg = kernel.kc.get_iopub_msg(timeout=60)
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            rest.append(msg)
            if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                break
        assert not errors_of(rest), text_of(rest)
        assert "stopped waiting" in stderr_of(rest)
        code, listing = server.request("GET", "osire/api/deployments")
        assert [d["state"] for d in listing["deployments"]] in (["queued"], ["starting"])
    finally:
        if kernel:
            kernel.close()
        stop_server(server)


@pytest.mark.parametrize("hub", [False, True], ids=["ood-base-url", "jupyterhub-env"])
def test_discovery_under_a_base_url(tmp_path, hub):
    """OOD's /node/<host>/<port>/ prefix; JupyterHub's /user/<name>/ with its variables."""
    if hub:
        server = start_server(tmp_path, "local", base_url="/user/alice/")
        server.env.update({"JUPYTERHUB_API_TOKEN": server.token,
                           "JUPYTERHUB_SERVICE_PREFIX": "/user/alice/",
                           "JUPYTERHUB_SERVICE_URL": server.url})
        server.stop()
        server.start()
    else:
        server = start_server(tmp_path, "local", base_url="/node/cn0042/12345/")
    kernel = None
    try:
        kernel = Kernel(server)
        run_ok(kernel, "%load_ext jupyter_osire_llm")
        found = run_ok(kernel, "from jupyter_osire_llm._client.api import discover\n"
                               "s = discover(); print(s.url); print(s.source)")
        url, source = stdout_of(found).splitlines()
        assert url == server.url
        assert source == ("JupyterHub" if hub else "the server that started this kernel")
        models = run_ok(kernel, "%osire models")
        assert "fake-chat" in outputs(models, "display_data")[0]["content"]["data"]["text/plain"]
        listed = run_ok(kernel, "from jupyter_osire_llm import client\n"
                                "print(type(client().models.list().data).__name__)")
        assert stdout_of(listed).strip() == "list"
        if hub:   # without the service URL: the hub's prefix, the local server's address
            prefix_only = run_ok(kernel, "import os; del os.environ['JUPYTERHUB_SERVICE_URL']\n"
                                         "s = discover(); print(s.url); print(s.source)\n"
                                         "%osire ps")
            url, source = stdout_of(prefix_only).splitlines()[:2]
            assert url == server.url and source.startswith("JupyterHub + ")
    finally:
        if kernel:
            kernel.close()
        stop_server(server)


def test_site_config_loads_the_magics_in_every_kernel(tmp_path):
    """The documented way: ``c.InteractiveShellApp.extensions`` in ipython_kernel_config.py."""
    profile = tmp_path / "ipython" / "profile_default"
    profile.mkdir(parents=True)
    (profile / "ipython_kernel_config.py").write_text(
        'c.InteractiveShellApp.extensions = ["jupyter_osire_llm"]\n')
    server = start_server(tmp_path, "local", env={"IPYTHONDIR": str(tmp_path / "ipython")})
    kernel = None
    try:
        kernel = Kernel(server)
        url = run_ok(kernel, "%osire url")                 # no %load_ext
        assert stdout_of(url).splitlines()[0] == server.url + "osire/v1"
    finally:
        if kernel:
            kernel.close()
        stop_server(server)


def test_batch_magic_shows_progress_and_writes_the_results(tmp_path):
    """``%osire batch spec.yaml``: one progress line updated in place, results in its output."""
    server = start_server(tmp_path, "local")
    spec = tmp_path / "capitals.yaml"
    spec.write_text("model: fake-chat\nprompts: [one, two, three, four]\n"
                    "params: {max_tokens: 3}\noutput: answers.jsonl\n")
    kernel = None
    try:
        kernel = Kernel(server)
        run_ok(kernel, "%load_ext jupyter_osire_llm")
        run = run_ok(kernel, f"%osire batch {spec}", timeout=180)
        progress = outputs(run, "display_data", "update_display_data")
        assert len({m["content"]["transient"]["display_id"] for m in progress}) == 1
        assert "completed, 4/4 done" in progress[-1]["content"]["data"]["text/plain"]
        assert f"wrote {tmp_path / 'answers.jsonl'}" in stdout_of(run)
        answers = (tmp_path / "answers.jsonl").read_text().splitlines()
        assert sorted(__import__("json").loads(a)["custom_id"] for a in answers) == \
            ["prompt-1", "prompt-2", "prompt-3", "prompt-4"]
        kept = run_ok(kernel, "print(_osire_batch['status'])")
        assert stdout_of(kept).strip() == "completed"
        listing = run_ok(kernel, "%osire batches")
        assert "completed" in outputs(listing, "display_data")[0]["content"]["data"]["text/plain"]
        bad = run_ok(kernel, f"%osire batch {tmp_path / 'missing.yaml'}")
        assert stderr_of(bad).startswith("osire: cannot read the batch spec")
        deleted = run_ok(kernel, "%osire batch {_osire_batch['id']} --delete")
        assert stdout_of(deleted).startswith("deleted batch_")
        empty = run_ok(kernel, "%osire batches")
        assert "no batches" in outputs(empty, "display_data")[0]["content"]["data"]["text/html"]
    finally:
        if kernel:
            kernel.close()
        stop_server(server)
