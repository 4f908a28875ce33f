"""The Open OnDemand app on the real Slurm cluster, submitted the way OOD submits it.

The ERB files are rendered by Ruby for sample form values (model ``fake-chat`` chosen in the
form), the job script is assembled and submitted as ood_core does (see ood_stub.py), as the
test's user. Then, as the Connect button does, the password is posted to
``/node/<host>/<port>/login``; the session's cookie reaches ``/osire/api/health``, sees the model
the form asked for become ready, launches another, and a chat completion goes through
``/osire/v1`` under that base URL (the engine: tests/fake_engine.py, TLS with per-job certificates
like vLLM). The model jobs, submitted from inside the session's job, carry none of its Slurm
settings or secrets.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

import pytest
import requests

import ood_stub
from lifecycle_catalog import write_catalog

pytestmark = [pytest.mark.slurm]

#: Bounds on waiting (a failure message, not a timing assertion).
START_TIMEOUT = 240
READY_TIMEOUT = 120


def scontrol(job_id: str) -> dict[str, str]:
    out = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True,
                         text=True, timeout=30).stdout
    return dict(re.findall(r"(\w+(?::\w+)?)=(\S*)", out))


@pytest.fixture(scope="module")
def portal() -> Iterator[ood_stub.Portal]:
    portal = ood_stub.Portal().start()
    yield portal
    portal.stop()


@pytest.fixture(scope="module")
def session(slurm_cluster, ruby, portal) -> Iterator[ood_stub.Session]:
    user, _ = ood_stub.session_user()
    # Our own scratch folder (pytest's base temp may be pruned by another pytest run meanwhile):
    # the site's catalog, the session folder (as under ~/ondemand), the model jobs' folders.
    shared = Path(tempfile.mkdtemp(prefix="osire-ood-", dir="/tmp"))
    shared.chmod(0o755)
    site = {"OSIRE_OOD_CATALOG": str(write_catalog(shared / "catalog.yaml")),
            # as a site's module would: the Jupyter environment with the extension on PATH
            "OSIRE_OOD_SETUP": ood_stub.site_setup(Path(sys.executable), shared),
            "OSIRE_OOD_CLUSTER": "osire", "OSIRE_OOD_ORIGIN": portal.url}
    (shared / "catalog.yaml").chmod(0o644)
    form = ood_stub.render_form(site)
    assert ["fake-chat - the fake OpenAI engine", "fake-chat"] in \
        form["attributes"]["osire_model"]["options"]
    values = ood_stub.form_values(form, {"auto_accounts": "", "auto_queues": "debug",
                                         "bc_num_hours": "1", "num_cores": "2",
                                         "memory_gb": "2", "osire_model": "fake-chat",
                                         # one site setting, a root per user ($USER)
                                         "osire_job_root": f"{shared}/$USER/jobs"})
    (shared / user).mkdir(mode=0o700)   # /scratch/$USER, as a site makes it
    shutil.chown(shared / user, user)
    submit_doc = ood_stub.render_submit(values, shared)
    s = ood_stub.new_session(user, shared)
    ood_stub.stage(values, s.work_dir)
    ood_stub.chown_tree(s.work_dir, user)
    for name in ("before.sh", "script.sh", "after.sh"):
        assert subprocess.run(["bash", "-n", str(s.work_dir / name)]).returncode == 0
    ood_stub.submit(s, submit_doc)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while s.connection() is None:
            state = scontrol(s.job_id).get("JobState", "GONE")
            if state not in ("PENDING", "RUNNING", "CONFIGURING"):
                pytest.fail(f"session job {s.job_id} is {state}:\n{s.output()[-4000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"no connection.yml after {START_TIMEOUT}s:\n{s.output()[-4000:]}")
            time.sleep(0.5)
        yield s
    finally:
        _stop(s)
        shutil.rmtree(shared, ignore_errors=True)


def _stop(s: ood_stub.Session) -> None:
    """Stop the models (through the session's server), then the session as OOD does: scancel."""
    conn = s.connection()
    token_file = s.work_dir / "osire_token"
    if conn and token_file.exists():
        api = _base(conn) + "osire/api/"
        auth = {"Authorization": f"token {token_file.read_text().strip()}"}
        try:
            for d in requests.get(api + "deployments", headers=auth, timeout=30).json()[
                    "deployments"]:
                if d["state"] not in ("stopped", "failed"):
                    requests.delete(api + f"deployments/{d['id']}", headers=auth, timeout=30)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and any(
                    d["state"] not in ("stopped", "failed") for d in requests.get(
                        api + "deployments", headers=auth, timeout=30).json()["deployments"]):
                time.sleep(0.5)
        except (requests.RequestException, KeyError, ValueError):
            pass
    if s.job_id:
        subprocess.run(["scancel", s.job_id], capture_output=True, timeout=30)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and scontrol(s.job_id).get("JobState") in (
                "PENDING", "RUNNING", "COMPLETING"):
            time.sleep(0.5)


def _base(conn: dict) -> str:
    host, port = conn["host"], conn["port"]
    return f"http://{host}:{port}/node/{host}/{port}/"


@pytest.fixture(scope="module")
def browser(session, tmp_path_factory) -> requests.Session:
    """Logged in as the Connect button does it: the login page's _xsrf, then the password."""
    conn = session.connection()
    view = ood_stub.render_view(conn, tmp_path_factory.mktemp("view"))
    login = re.search(r'action="([^"?]+)\?next=([^"]+)"', view)
    host, port = conn["host"], conn["port"]
    assert login.group(1) == f"/node/{host}/{port}/login"
    origin = f"http://{host}:{port}"
    xsrf_pattern = re.search(r"/(name=\"_xsrf\".*?)/\.exec", view).group(1)
    web = requests.Session()
    page = web.get(origin + login.group(1), timeout=30)
    assert page.status_code == 200
    xsrf = re.search(xsrf_pattern.replace("\\s", r"\s"), page.text).group(1)
    password = re.search(r'name="password" value="([^"]+)"', view).group(1)
    assert password == str(conn["password"])
    done = web.post(origin + login.group(1) + "?next=" + login.group(2),
                    data={"password": password, "_xsrf": xsrf}, allow_redirects=False,
                    timeout=30)
    assert done.status_code == 302, done.text[:500]
    assert done.headers["Location"] == f"/node/{host}/{port}/lab"
    return web


def test_connect_logs_in_under_the_node_base_url(session, browser):
    conn = session.connection()
    base = _base(conn)
    lab = browser.get(base + "lab", timeout=30)
    assert lab.status_code == 200 and "JupyterLab" in lab.text
    # Without the password, or without the login page's _xsrf, there is no way in.
    anonymous = requests.get(base + "osire/api/health", timeout=30, allow_redirects=False)
    assert anonymous.status_code in (302, 403)
    stranger = requests.Session()
    assert stranger.post(base + "login", data={"password": str(conn["password"])},
                         timeout=30, allow_redirects=False).status_code == 403
    # A page of another site posting the right password with a valid _xsrf: its Origin is not
    # the portal's (the only one allowed), so Jupyter refuses it.
    other = requests.Session()
    page = other.get(base + "login", timeout=30)
    xsrf = re.search(r'name="_xsrf" value="([^"]+)"', page.text).group(1)
    assert other.post(base + "login", data={"password": str(conn["password"]), "_xsrf": xsrf},
                      headers={"Origin": "https://elsewhere.example"}, timeout=30,
                      allow_redirects=False).status_code in (403, 404)
    wrong = requests.Session()
    page = wrong.get(base + "login", timeout=30)
    xsrf = re.search(r'name="_xsrf" value="([^"]+)"', page.text).group(1)
    assert wrong.post(base + "login", data={"password": "wrong", "_xsrf": xsrf}, timeout=30,
                      allow_redirects=False).status_code == 401


def test_health_and_the_model_chosen_in_the_form(session, browser):
    base = _base(session.connection())
    health = browser.get(base + "osire/api/health", timeout=30)
    assert health.status_code == 200, health.text
    assert health.json()["scheduler"]["name"] == "slurm"
    listing = browser.get(base + "osire/api/deployments", timeout=30).json()["deployments"]
    assert [d["model"] for d in listing] == ["fake-chat"], session.output()[-3000:]
    ready = _wait_ready(browser, base, listing[0]["id"])
    assert "Launching fake-chat" in session.output()
    assert ready["replicas"][0]["job_id"]
    user, _ = ood_stub.session_user()
    root = Path(ready["replicas"][0]["folder"]).parents[1]
    assert root.name == "jobs" and root.parent.name == user, ready["replicas"][0]["folder"]


def test_launch_and_chat_completion_under_the_base_url(session, browser):
    base = _base(session.connection())
    xsrf = {"X-XSRFToken": browser.cookies.get("_xsrf")}
    made = browser.post(base + "osire/api/deployments", json={"model": "fake-chat"},
                        headers=xsrf, timeout=30)
    assert made.status_code == 201, made.text
    _wait_ready(browser, base, made.json()["id"])
    # As the sidebar and a notebook page would: the session's cookie (and its XSRF header).
    reply = browser.post(base + "osire/v1/chat/completions", headers=xsrf, timeout=30, json={
        "model": "fake-chat", "messages": [{"role": "user", "content": "Hello there"}]})
    assert reply.status_code == 200, reply.text
    assert reply.json()["choices"][0]["message"]["content"]
    # As a kernel of the session would: the official client, the session's token.
    from openai import OpenAI
    token = (session.work_dir / "osire_token").read_text().strip()
    llm = OpenAI(base_url=base + "osire/v1", api_key=token)
    answer = llm.chat.completions.create(model="fake-chat",
                                         messages=[{"role": "user", "content": "Hi"}])
    assert answer.choices[0].message.content
    chunks = list(llm.chat.completions.create(
        model="fake-chat", stream=True, messages=[{"role": "user", "content": "Hi"}]))
    assert len(chunks) > 1


def test_model_jobs_inherit_nothing_of_the_session_job(session, browser):
    """The server runs inside the session's job (SLURM_* set: 2 CPUs, 2 GB, 1 hour); a model job
    it submits gets the catalog's resources (1 CPU, the cluster's default memory, 10 minutes),
    its own SLURM_* only, and neither the session's password nor its token."""
    base = _base(session.connection())
    listing = browser.get(base + "osire/api/deployments", timeout=30).json()["deployments"]
    engine_job = _wait_ready(browser, base, listing[0]["id"])["replicas"][0]["job_id"]
    outer, inner = scontrol(session.job_id), scontrol(engine_job)
    assert (outer["NumCPUs"], outer["TimeLimit"]) == ("2", "01:00:00"), outer
    assert outer.get("MinMemoryNode") == "2G", outer
    assert (inner["NumCPUs"], inner["TimeLimit"]) == ("1", "00:10:00"), inner
    assert "MinMemoryNode" not in inner, inner      # the cluster's per-CPU default instead
    assert inner["UserId"].split("(")[0] == session.user
    env = _engine_environment(engine_job)
    assert env["SLURM_JOB_ID"] == engine_job
    assert env.get("SLURM_CPUS_PER_TASK") in (None, "1")
    assert "SLURM_MEM_PER_NODE" not in env
    assert not [k for k in env if k.startswith(("SBATCH_", "SALLOC_", "SRUN_"))]
    assert session.job_id not in {env.get("SLURM_JOB_ID"), env.get("SLURM_JOBID")}
    secrets = [(session.work_dir / "osire_token").read_text().strip(),
               str(session.connection()["password"])]
    dumped = "\n".join(f"{k}={v}" for k, v in env.items())
    scontrol_text = subprocess.run(["scontrol", "show", "job", engine_job], capture_output=True,
                                   text=True, timeout=30).stdout
    for secret in secrets:
        assert secret not in dumped and secret not in scontrol_text
    assert "password" not in env and "OSIRE_TOKEN" not in env


def _wait_ready(web: requests.Session, base: str, deployment_id: str) -> dict:
    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        d = web.get(base + f"osire/api/deployments/{deployment_id}", timeout=30).json()
        if d["state"] == "ready":
            return d
        assert d["state"] in ("queued", "starting"), d
        assert time.monotonic() < deadline, f"not ready after {READY_TIMEOUT}s: {d}"
        time.sleep(0.5)


def _engine_environment(job_id: str) -> dict[str, str]:
    """The environment of the engine process of a job (this machine is the job's node)."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            raw = (proc / "environ").read_bytes()
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        env = dict(item.split("=", 1) for item in raw.decode(errors="replace").split("\0")
                   if "=" in item)
        if env.get("SLURM_JOB_ID") == job_id and b"fake_engine.py" in cmdline:
            return env
    raise AssertionError(f"no engine process of job {job_id} found")


@pytest.mark.browser
def test_connect_button_logs_in_through_the_portal(session, portal, tmp_path):
    """The rendered view.html in a real browser on the portal stand-in: the button fills in the
    login page's _xsrf, posts the password through the /node proxy (Host rewritten, Origin the
    portal's), and the new tab is JupyterLab, logged in: its own fetch of the health route works."""
    chromium = Path("/usr/bin/chromium")
    if not chromium.exists():
        if os.environ.get("CI"):
            pytest.fail("Debian chromium is missing")
        pytest.skip("Debian chromium is missing")
    from playwright.sync_api import sync_playwright
    conn = session.connection()
    portal.view_html = ood_stub.render_view(conn, tmp_path)
    base = f"/node/{conn['host']}/{conn['port']}/"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(chromium), args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--no-first-run", "--disable-sync"])
        try:
            page = browser.new_page()
            page.goto(portal.url + "/pun/sys/dashboard/session")
            page.wait_for_function(
                "document.querySelector('input[name=_xsrf]').value !== ''", timeout=60000)
            with page.context.expect_page(timeout=60000) as opened:
                page.click("button[type=submit]")
            lab = opened.value
            lab.wait_for_url(re.compile(re.escape(portal.url + base + "lab")), timeout=60000)
            status = lab.evaluate(f"fetch('{base}osire/api/health').then(r => r.status)")
            assert status == 200
            title = lab.evaluate("document.title")
            assert "JupyterLab" in title
        finally:
            browser.close()
