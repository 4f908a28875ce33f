"""The "LLMs" sidebar in a real JupyterLab, driven in headless Debian Chromium by Playwright.

A `jupyter lab` subprocess runs the extension on the local scheduler with the fake OpenAI engine
(tests/fake_engine.py) as the catalog's engine; everything it writes lives in a temp folder.
Screenshots go to test-artifacts/ui/ (git-ignored): look at them after a change to the UI.

Needs /usr/bin/chromium (Debian's `chromium` package; `npx playwright install` cannot work here)
and the built labextension (`pip install -e .` or `pip install .` builds it).
"""
from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest

from labserver import ARTIFACTS, BUNDLE, CHROMIUM, TOKEN, api, close_all, dismiss_toasts, \
    expect_notified, jupyter_lab, lab_page, new_notebook, shoot

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[2]
FAKE_ENGINE = REPO / "tests" / "fake_engine.py"
READY_TIMEOUT_MS = 60_000

if not CHROMIUM.exists():
    pytest.skip("browser tests need Debian's chromium at /usr/bin/chromium "
                "(apt-get install chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="needs the playwright package")


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
    catalog = tmp / "catalog.yaml"
    _write_catalog(catalog)
    state = tmp / "osire"
    with jupyter_lab(tmp, ["--OsireLLM.scheduler=local", f"--OsireLLM.catalog={catalog}",
                           f"--OsireLLM.job_root={state / 'jobs'}",
                           f"--OsireLLM.db_path={state / 'osire.db'}",
                           "--OsireLLM.max_gpus=1", "--OsireLLM.local_gpus=1"]) as base:
        assert api(base, "health")["scheduler"]["name"] == "local"
        yield base


@pytest.fixture(scope="module")
def page(lab: str) -> Iterator[Any]:
    """The JupyterLab page with the LLMs sidebar open."""
    with lab_page(sync_api, lab) as page:
        yield page


def _card(page: Any, model: str) -> Any:
    return page.locator(f'.jp-OsireSidebar-model[data-model="{model}"]')


def _deployment(page: Any, model: str) -> Any:
    return page.locator(".jp-OsireSidebar-deployment").filter(
        has=page.locator(".jp-OsireSidebar-name", has_text=model)).first


def _toast(page: Any, text: str) -> Any:
    return page.locator(".Toastify__toast").filter(has_text=text)


@contextlib.contextmanager
def _notebook_loads_held(page: Any) -> Iterator[None]:
    """Notebooks opened inside stay loading: their content comes from the server when it ends."""
    page.evaluate("""() => {
        const contents = window.jupyterapp.serviceManager.contents;
        const get = contents.get;
        let release;
        const held = new Promise(resolve => { release = resolve; });
        contents.get = async (path, options) => {
            if (path.endsWith('.ipynb') && options?.content) {
                await held;
            }
            return get.call(contents, path, options);
        };
        window.osireReleaseLoads = () => { contents.get = get; release(); };
    }""")
    try:
        yield
    finally:
        page.evaluate("window.osireReleaseLoads()")


def test_catalog_and_scheduler_footer(page: Any) -> None:
    card = _card(page, "tiny-chat")
    card.wait_for()
    assert "fake OpenAI engine" in card.inner_text()
    assert card.get_by_role("button", name="Launch tiny-chat").is_enabled()
    footer = page.locator(".jp-OsireSidebar-footer")
    sync_api.expect(footer).to_contain_text("Scheduler: local")
    shoot(page, "01-catalog")


def test_commands_in_the_palette_and_the_panel_shortcut(page: Any) -> None:
    page.keyboard.press("Control+Shift+C")
    search = page.locator(".lm-CommandPalette-input")
    search.wait_for()
    labels = {}
    for query, label in [("Open Playground", "Open Playground…"),
                         ("Launch a Model", "Launch a Model…"),
                         ("Stop a Model", "Stop a Model…"),
                         ("Open Log Viewer", "Open Log Viewer…"),
                         ("Insert Model Call", "Insert Model Call into Notebook…"),
                         ("Open the LLMs Panel", "Open the LLMs Panel")]:
        search.fill(query)
        item = page.locator(".lm-CommandPalette-item").filter(has_text=label).first
        sync_api.expect(item).to_be_visible()
        labels[label] = item.locator(".lm-CommandPalette-itemShortcut").inner_text()

    def show_palette() -> None:
        page.keyboard.press("Control+Shift+C")
        search.fill("LLMs")

    shoot(page, "08-palette", prepare=show_palette)  # each theme switch closes the palette
    page.keyboard.press("Escape")
    assert labels["Open the LLMs Panel"].strip(), "the panel command shows its shortcut"
    # The shortcut brings the panel back after it was folded away.
    page.locator('.jp-SideBar [data-id="jupyter-osire-llm-sidebar"]').click()
    sync_api.expect(page.locator("#jupyter-osire-llm-sidebar")).to_be_hidden()
    page.locator(".jp-LabShell").click(position={"x": 640, "y": 400})
    page.keyboard.press("Control+Shift+M")
    sync_api.expect(page.locator("#jupyter-osire-llm-sidebar")).to_be_visible()


def test_settings_in_the_settings_editor(page: Any) -> None:
    page.evaluate("window.jupyterapp.commands.execute('settingeditor:open', {query: 'LLMs'})")
    editor = page.locator(".jp-SettingsPanel, .jp-SettingsEditor").first
    editor.wait_for()
    page.locator(".jp-PluginList-entry").filter(has_text="LLMs").first.click()
    for title in ("Refresh interval (seconds)", "Resources in the launch form",
                  "Metrics window (minutes)"):
        sync_api.expect(page.get_by_text(title, exact=True).first).to_be_visible()
    shoot(page, "09-settings")
    close_all(page)


def test_form_checks_fields_before_sending(page: Any) -> None:
    card = _card(page, "tiny-chat")
    card.locator("summary", has_text="Resources").click()
    time_field = card.get_by_label("Time")
    time_field.fill("4 hours")
    time_field.blur()
    error = card.locator(".jp-OsireSidebar-fieldError")
    sync_api.expect(error).to_contain_text("HH:MM:SS")
    assert time_field.get_attribute("aria-invalid") == "true"
    card.get_by_role("button", name="Launch tiny-chat").click()
    sync_api.expect(time_field).to_be_focused()
    assert page.locator(".jp-OsireSidebar-deployment").count() == 0, "an invalid form launched"
    time_field.fill("00:30:00")
    sync_api.expect(error).to_have_count(0)
    card.locator("summary", has_text="Resources").click()


def test_over_limit_error_next_to_field_and_notified(page: Any) -> None:
    card = _card(page, "tiny-chat")
    card.locator("summary", has_text="Resources").click()
    gpus = card.get_by_label("GPUs")
    gpus.fill("2")
    card.get_by_role("button", name="Launch tiny-chat").click()
    error = card.locator(".jp-OsireSidebar-fieldError")
    sync_api.expect(error).to_contain_text("over the site limit of 1")
    assert gpus.get_attribute("aria-invalid") == "true"
    # The server's own message, as a JupyterLab notification too.
    sync_api.expect(_toast(page, "Launch of tiny-chat refused")).to_contain_text(
        "over the site limit of 1")
    assert page.locator(".jp-OsireSidebar-deployment").count() == 0, "a rejected launch ran"
    shoot(page, "02-launch-error")
    dismiss_toasts(page)
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
    sync_api.expect(deployment).to_contain_text("engine loading the model")
    shoot(page, "03-starting")
    sync_api.expect(deployment).to_have_attribute("data-state", "ready", timeout=READY_TIMEOUT_MS)
    sync_api.expect(deployment.locator(".jp-OsireSidebar-badge")).to_have_text("Ready")
    expect_notified(page, "tiny-chat is ready")  # its toast may have closed already
    deployment.get_by_role("button", name="Copy OpenAI snippet for tiny-chat").click()
    snippet = page.evaluate("navigator.clipboard.readText()")
    # No URL and no token in the text: client() finds the server (issue 9).
    assert TOKEN not in snippet and "from jupyter_osire_llm import client" in snippet, snippet
    assert 'model="tiny-chat"' in snippet, snippet
    page.wait_for_timeout(1000)  # let the "copied" toast slide in before the screenshot
    shoot(page, "04-ready")
    dismiss_toasts(page)
    (ARTIFACTS / "snippet.py").write_text(snippet)
    # The snippet works as copied: the OpenAI client reaches the model through the proxy.
    # Outside the lab's kernels the server is named by the environment (never argv).
    env = {**os.environ, "OSIRE_URL": lab, "OSIRE_TOKEN": TOKEN}
    run = subprocess.run([sys.executable, "-c", snippet], capture_output=True, text=True, env=env,
                         timeout=60)
    assert run.returncode == 0, f"copied snippet failed:\n{run.stdout}\n{run.stderr}"
    assert run.stdout.strip(), "the snippet printed no answer"


def test_figures_only_for_what_the_engine_exports(page: Any) -> None:
    """The fake engine exports the request gauges only: no KV-cache or tokens/s line (no zeros)."""
    deployment = _deployment(page, "tiny-chat")
    running = deployment.locator('.jp-OsireMetrics-item[data-series="running"]')
    sync_api.expect(running).to_have_count(1, timeout=30_000)
    sync_api.expect(deployment.locator('[data-series="waiting"]')).to_have_count(1)
    assert deployment.locator('[data-series="kvCache"]').count() == 0
    assert deployment.locator('[data-series="tokensPerSecond"]').count() == 0
    svg = running.locator("svg")
    assert svg.get_attribute("role") == "img" and "Running: now" in svg.get_attribute("aria-label")


def test_playground_streams_an_answer(page: Any) -> None:
    deployment = _deployment(page, "tiny-chat")
    deployment.get_by_role("button", name="Open playground for tiny-chat").click()
    panel = page.locator(".jp-OsirePlayground").last
    message = panel.get_by_label("Message to tiny-chat")
    sync_api.expect(message).to_be_focused()
    panel.get_by_label("Max tokens").fill("12")
    message.focus()
    message.fill("Say something")
    page.keyboard.press("Enter")
    answer = panel.locator('.jp-OsirePlayground-turn[data-role="assistant"]').last
    sync_api.expect(answer).to_have_attribute("data-done", "true", timeout=30_000)
    sync_api.expect(answer.locator(".jp-RenderedMarkdown")).to_contain_text("t0 t1")
    stats = panel.locator(".jp-OsirePlayground-stats")
    sync_api.expect(stats).to_contain_text("Tokens: 12")
    assert stats.get_attribute("data-ttft") != ""
    shoot(page, "10-playground-fake")
    panel.get_by_role("button", name="Clear the conversation").click()
    sync_api.expect(panel.locator(".jp-OsirePlayground-turn")).to_have_count(0)
    close_all(page)


def test_log_viewer_follows_and_searches(page: Any) -> None:
    _deployment(page, "tiny-chat").get_by_role("button", name="Open log of tiny-chat").click()
    viewer = page.locator(".jp-OsireLog").last
    lines = viewer.locator(".jp-OsireLog-lines")
    sync_api.expect(lines).not_to_have_attribute("data-lines", "0", timeout=30_000)
    search = viewer.get_by_label("Search the log")
    sync_api.expect(search).to_be_focused()
    first_word = lines.locator(".jp-OsireLog-line").first.inner_text().split()[0]
    search.fill(first_word)
    sync_api.expect(viewer.locator(".jp-OsireLog-line mark").first).to_be_visible()
    search.press("Enter")
    sync_api.expect(viewer.locator(".jp-OsireLog-count")).to_contain_text("1/")
    sync_api.expect(viewer.locator(".jp-OsireLog-line.jp-mod-current")).to_have_count(1)
    shoot(page, "11-log-viewer")
    close_all(page)


def test_insert_into_a_notebook_and_run_it(page: Any) -> None:
    """The inserted call runs as is in the notebook's kernel: client() finds the server.

    Insert is pressed while the new notebook's content is still on its way from the server: the
    call must not be lost when the notebook's cells are replaced by the loaded ones.
    """
    with _notebook_loads_held(page):
        notebook = new_notebook(page)
        _deployment(page, "tiny-chat").get_by_role(
            "button", name="Insert code calling tiny-chat into the notebook").click()
        assert not page.evaluate("() => window.jupyterapp.shell.currentWidget.context.isReady"), \
            "the notebook had loaded before Insert was pressed"
    cell = notebook.locator(".jp-CodeCell").nth(1)  # below the new notebook's empty cell
    sync_api.expect(cell.locator(".cm-content")).to_contain_text("llm = client()")
    source = cell.locator(".cm-content").inner_text()
    assert TOKEN not in source and 'model="tiny-chat"' in source, source
    # A cell run before the kernel is up is skipped: wait for it as a user would.
    sync_api.expect(page.locator(".jp-StatusBar-Widget").filter(
        has_text="Python 3 (ipykernel) | Idle").first).to_be_visible(timeout=120_000)
    cell.locator(".cm-content").click()  # as a user does: into the cell, Shift+Enter
    page.keyboard.press("Shift+Enter")
    output = cell.locator(".jp-OutputArea-output")
    try:
        sync_api.expect(output.first).to_contain_text("t0", timeout=120_000)
    finally:
        shoot(page, "12-notebook")
    assert "Traceback" not in output.first.inner_text()
    # The notebook stays open: closing an unsaved one asks (a dialog racing the next test).


def test_failed_launch_shows_reason_and_log_tail(page: Any) -> None:
    _card(page, "broken-model").get_by_role("button", name="Launch broken-model").click()
    deployment = _deployment(page, "broken-model")
    sync_api.expect(deployment).to_have_attribute("data-state", "failed",
                                                  timeout=READY_TIMEOUT_MS)
    sync_api.expect(deployment.locator(".jp-OsireSidebar-badge")).to_have_text("Failed")
    sync_api.expect(deployment).to_contain_text("exit code 3")
    sync_api.expect(_toast(page, "broken-model failed")).to_be_visible()
    deployment.locator("summary", has_text="Log tail").click()
    log = deployment.locator(".jp-OsireSidebar-pre")
    sync_api.expect(log).not_to_have_text("Loading…")
    deployment.scroll_into_view_if_needed()
    shoot(page, "05-failed")
    dismiss_toasts(page)


def test_stop_ends_in_stopped(page: Any) -> None:
    deployment = page.locator('.jp-OsireSidebar-deployment[data-state="ready"]').first
    deployment.get_by_role("button", name="Stop tiny-chat").click()
    stopped = page.locator('.jp-OsireSidebar-deployment[data-state="stopped"]').filter(
        has=page.locator(".jp-OsireSidebar-name", has_text="tiny-chat"))
    sync_api.expect(stopped).to_have_count(1, timeout=30_000)
    sync_api.expect(page.locator('.jp-OsireSidebar-deployment[data-state="ready"]')) \
        .to_have_count(0)
    shoot(page, "06-stopped")


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
    sync_api.expect(queued).to_contain_text("waiting for GPUs, CPUs or memory to become free")
    dismiss_toasts(page)
    shoot(page, "07-queued")
    running.get_by_role("button", name="Stop gpu-chat").click()   # frees the GPU
    sync_api.expect(queued).to_have_count(0, timeout=30_000)
    page.locator('.jp-OsireSidebar-deployment[data-state="starting"], '
                 '.jp-OsireSidebar-deployment[data-state="ready"]').filter(
        has=page.locator(".jp-OsireSidebar-name", has_text="gpu-chat")).first.wait_for()
