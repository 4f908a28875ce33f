"""The "LLMs" sidebar in a real JupyterLab, driven in headless Debian Chromium by Playwright.

A `jupyter lab` subprocess runs the extension on the local scheduler with the fake OpenAI engine
(tests/fake_engine.py) as the catalog's engine; everything it writes lives in a temp folder.
Screenshots go to test-artifacts/ui/ (git-ignored): look at them after a change to the UI.

Needs /usr/bin/chromium (Debian's `chromium` package; `npx playwright install` cannot work here)
and the built labextension (`pip install -e .` or `pip install .` builds it).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import pytest

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
BUNDLE = REPO / "jupyter_osire_llm" / "labextension"
FAKE_ENGINE = REPO / "tests" / "fake_engine.py"
ARTIFACTS = REPO / "test-artifacts" / "ui"
TOKEN = "osire-ui-test-token"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync"]
READY_TIMEOUT_MS = 60_000

if not CHROMIUM.exists():
    pytest.skip("browser tests need Debian's chromium at /usr/bin/chromium "
                "(apt-get install chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="needs the playwright package")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _api(base: str, path: str, method: str = "GET") -> Any:
    request = urllib.request.Request(f"{base}/osire/api/{path}", method=method,
                                     headers={"Authorization": f"token {TOKEN}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read() or b"null")


def _write_catalog(path: Path) -> None:
    engine = f"{sys.executable} {FAKE_ENGINE}"
    path.write_text(f"""
engines:
  fake:
    command: {engine}
    kind: openai
    guard: false
    key_env: VLLM_API_KEY
    tls_cert_flag: --ssl-certfile
    tls_key_flag: --ssl-keyfile
models:
  - name: tiny-chat
    model: /models/tiny-chat
    engine: fake
    description: Small test model served by the fake OpenAI engine
    resources: {{cpus: 1, time: "00:30:00"}}
    env: {{OSIRE_FAKE_STARTUP_DELAY: "4"}}
  - name: broken-model
    model: /models/broken
    engine: fake
    description: Exits at start-up (shows the failed state and its log tail)
    resources: {{cpus: 1, time: "00:10:00"}}
    env: {{OSIRE_FAKE_EXIT_AT_START: "3"}}
  - name: gpu-chat
    model: /models/gpu-chat
    engine: fake
    description: Needs the one (fake) GPU of this machine; a second launch queues
    resources: {{gpus: 1, cpus: 1, time: "00:10:00"}}
""")


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A `jupyter lab` subprocess with the extension on the local scheduler; yields its URL."""
    if not (BUNDLE / "package.json").exists():
        pytest.skip(f"labextension not built ({BUNDLE} missing): run `pip install -e .`")
    if not FAKE_ENGINE.exists():
        pytest.skip(f"fake engine missing: {FAKE_ENGINE}")
    tmp = tmp_path_factory.mktemp("lab")
    home, work, state = tmp / "home", tmp / "work", tmp / "osire"
    for folder in (home, work, state):
        folder.mkdir()
    catalog = tmp / "catalog.yaml"
    _write_catalog(catalog)
    # The built bundle, found through an extra labextensions path (works without installing).
    extensions = tmp / "labextensions"
    extensions.mkdir()
    (extensions / "jupyter-osire-llm").symlink_to(BUNDLE, target_is_directory=True)
    # No news toast or update check over the screenshots.
    settings = tmp / "user-settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    config = tmp / "config"
    config.mkdir()
    (config / "jupyter_server_config.json").write_text(json.dumps({
        "ServerApp": {"jpserver_extensions": {"jupyter_osire_llm": True}},
        "LabApp": {"extra_labextensions_path": [str(extensions)],
                   "user_settings_dir": str(tmp / "user-settings"),
                   "workspaces_dir": str(tmp / "workspaces")},
    }))
    env = {**os.environ, "HOME": str(home), "JUPYTER_CONFIG_DIR": str(config),
           "JUPYTER_DATA_DIR": str(tmp / "data"), "JUPYTER_RUNTIME_DIR": str(tmp / "runtime"),
           "IPYTHONDIR": str(tmp / "ipython"), "PYTHONPATH": str(REPO)}
    env.pop("JUPYTER_TOKEN", None)
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    log_path = tmp / "jupyter.log"
    log = log_path.open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
         f"--IdentityProvider.token={TOKEN}", f"--ServerApp.root_dir={work}",
         "--OsireLLM.scheduler=local", f"--OsireLLM.catalog={catalog}",
         f"--OsireLLM.job_root={state / 'jobs'}", f"--OsireLLM.db_path={state / 'osire.db'}",
         "--OsireLLM.max_gpus=1", "--OsireLLM.local_gpus=1", *(["--allow-root"] if os.geteuid() == 0 else [])],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        health: Any = None
        while time.monotonic() < deadline and process.poll() is None:
            try:
                health = _api(base, "health")
                break
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.3)
        if health is None:
            pytest.fail(f"jupyter lab did not answer /osire/api/health:\n{log_path.read_text()}")
        assert health["scheduler"]["name"] == "local", health
        yield base
    finally:
        try:  # leave no fake engine behind: stop whatever is still live
            for d in _api(base, "deployments")["deployments"]:
                if d["state"] not in ("stopped", "failed"):
                    _api(base, f"deployments/{d['id']}", "DELETE")
        except Exception:  # noqa: BLE001 - best effort; the server may already be gone
            pass
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(5)
        log.close()
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shutil.copy(log_path, ARTIFACTS / "jupyter.log")


@pytest.fixture(scope="module")
def page(lab: str) -> Iterator[Any]:
    """The JupyterLab page with the LLMs sidebar open."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1280, "height": 800})
        context.grant_permissions(["clipboard-read", "clipboard-write"], origin=lab)
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(f"{lab}/lab?token={TOKEN}")
        tab = page.locator('.jp-SideBar [data-id="jupyter-osire-llm-sidebar"]')
        tab.wait_for(timeout=60_000)
        assert tab.get_attribute("title") == "LLMs"
        tab.click()
        page.locator("#jupyter-osire-llm-sidebar").wait_for(state="visible")
        try:
            yield page
        finally:
            context.close()
            browser.close()
        assert not [e for e in errors if "osire" in e.lower()], errors


def _card(page: Any, model: str) -> Any:
    return page.locator(f'.jp-OsireSidebar-model[data-model="{model}"]')


def _deployment(page: Any, model: str) -> Any:
    return page.locator(".jp-OsireSidebar-deployment").filter(
        has=page.locator(".jp-OsireSidebar-name", has_text=model)).first


def test_catalog_and_scheduler_footer(page: Any) -> None:
    card = _card(page, "tiny-chat")
    card.wait_for()
    assert "fake OpenAI engine" in card.inner_text()
    assert card.get_by_role("button", name="Launch tiny-chat").is_enabled()
    footer = page.locator(".jp-OsireSidebar-footer")
    sync_api.expect(footer).to_contain_text("Scheduler: local")
    page.screenshot(path=ARTIFACTS / "01-catalog.png")


def test_over_limit_error_next_to_field(page: Any) -> None:
    card = _card(page, "tiny-chat")
    card.locator("summary", has_text="Resources").click()
    gpus = card.get_by_label("GPUs")
    gpus.fill("2")
    card.get_by_role("button", name="Launch tiny-chat").click()
    error = card.locator(".jp-OsireSidebar-fieldError")
    sync_api.expect(error).to_contain_text("over the site limit of 1")
    assert gpus.get_attribute("aria-invalid") == "true"
    assert page.locator(".jp-OsireSidebar-deployment").count() == 0, "a rejected launch ran"
    page.screenshot(path=ARTIFACTS / "02-launch-error.png")
    gpus.fill("")
    sync_api.expect(error).to_have_count(0)
    card.locator("summary", has_text="Resources").click()


def test_launch_until_ready_then_copy_snippet(page: Any, lab: str) -> None:
    _card(page, "tiny-chat").get_by_role("button", name="Launch tiny-chat").click()
    deployment = _deployment(page, "tiny-chat")
    deployment.wait_for()
    # The engine takes 4 s to become healthy: long enough to see "starting" with its elapsed time.
    sync_api.expect(deployment).to_have_attribute("data-state", "starting", timeout=30_000)
    sync_api.expect(deployment.locator(".jp-OsireSidebar-badge")).to_have_text("Starting")
    page.screenshot(path=ARTIFACTS / "03-starting.png")
    sync_api.expect(deployment).to_have_attribute("data-state", "ready", timeout=READY_TIMEOUT_MS)
    sync_api.expect(deployment.locator(".jp-OsireSidebar-badge")).to_have_text("Ready")
    deployment.get_by_role("button", name="Copy OpenAI snippet for tiny-chat").click()
    snippet = page.evaluate("navigator.clipboard.readText()")
    # No URL and no token in the text: client() finds the server (issue 9).
    assert TOKEN not in snippet and "from jupyter_osire_llm import client" in snippet, snippet
    assert 'model="tiny-chat"' in snippet, snippet
    page.wait_for_timeout(1000)  # let the "copied" toast slide in before the screenshot
    page.screenshot(path=ARTIFACTS / "04-ready.png")
    (ARTIFACTS / "snippet.py").write_text(snippet)
    # The snippet works as copied: the OpenAI client reaches the model through the proxy.
    # Outside the lab's kernels the server is named by the environment (never argv).
    env = {**os.environ, "OSIRE_URL": lab, "OSIRE_TOKEN": TOKEN}
    run = subprocess.run([sys.executable, "-c", snippet], capture_output=True, text=True, env=env,
                         timeout=60)
    assert run.returncode == 0, f"copied snippet failed:\n{run.stdout}\n{run.stderr}"
    assert run.stdout.strip(), "the snippet printed no answer"


def test_failed_launch_shows_reason_and_log_tail(page: Any) -> None:
    _card(page, "broken-model").get_by_role("button", name="Launch broken-model").click()
    deployment = _deployment(page, "broken-model")
    sync_api.expect(deployment).to_have_attribute("data-state", "failed",
                                                  timeout=READY_TIMEOUT_MS)
    sync_api.expect(deployment.locator(".jp-OsireSidebar-badge")).to_have_text("Failed")
    deployment.locator("summary", has_text="Log tail").click()
    log = deployment.locator(".jp-OsireSidebar-pre")
    sync_api.expect(log).not_to_have_text("Loading…")
    deployment.scroll_into_view_if_needed()
    page.screenshot(path=ARTIFACTS / "05-failed.png")


def test_stop_ends_in_stopped(page: Any) -> None:
    deployment = page.locator('.jp-OsireSidebar-deployment[data-state="ready"]').first
    deployment.get_by_role("button", name="Stop tiny-chat").click()
    stopped = page.locator('.jp-OsireSidebar-deployment[data-state="stopped"]').filter(
        has=page.locator(".jp-OsireSidebar-name", has_text="tiny-chat"))
    sync_api.expect(stopped).to_have_count(1, timeout=30_000)
    sync_api.expect(page.locator('.jp-OsireSidebar-deployment[data-state="ready"]')) \
        .to_have_count(0)
    page.screenshot(path=ARTIFACTS / "06-stopped.png")


def test_second_gpu_launch_queues_with_reason(page: Any) -> None:
    card = _card(page, "gpu-chat")
    card.get_by_role("button", name="Launch gpu-chat").click()
    running = page.locator('.jp-OsireSidebar-deployment[data-state="ready"]').filter(
        has=page.locator(".jp-OsireSidebar-name", has_text="gpu-chat"))
    sync_api.expect(running).to_have_count(1, timeout=READY_TIMEOUT_MS)
    card.get_by_role("button", name="Launch gpu-chat").click()
    queued = page.locator('.jp-OsireSidebar-deployment[data-state="queued"]')
    sync_api.expect(queued).to_have_count(1, timeout=30_000)
    sync_api.expect(queued.locator(".jp-OsireSidebar-badge")).to_have_text("Queued")
    sync_api.expect(queued).to_contain_text("Resources")
    page.screenshot(path=ARTIFACTS / "07-queued.png")
    running.get_by_role("button", name="Stop gpu-chat").click()   # frees the GPU
    sync_api.expect(queued).to_have_count(0, timeout=30_000)
    page.locator('.jp-OsireSidebar-deployment[data-state="starting"], '
                 '.jp-OsireSidebar-deployment[data-state="ready"]').filter(
        has=page.locator(".jp-OsireSidebar-name", has_text="gpu-chat")).first.wait_for()
