"""A `jupyter lab` subprocess with the extension, a Chromium page on it, and screenshots in the
light and the dark theme. Shared by the browser tests of tests/ui/.

Everything the server writes lives in a temp folder; screenshots and the server's log go to
test-artifacts/ui/ (git-ignored).
"""
from __future__ import annotations

import contextlib
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
from typing import Any, Callable, Iterator, Optional

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
BUNDLE = REPO / "jupyter_osire_llm" / "labextension"
ARTIFACTS = REPO / "test-artifacts" / "ui"
TOKEN = "osire-ui-test-token"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync"]
LIGHT, DARK = "JupyterLab Light", "JupyterLab Dark"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def api(base: str, path: str, method: str = "GET", body: Optional[dict] = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"{base}/osire/api/{path}", method=method, data=data,
                                     headers={"Authorization": f"token {TOKEN}",
                                              "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read() or b"null")


@contextlib.contextmanager
def jupyter_lab(tmp: Path, osire: list[str], artifacts: Path = ARTIFACTS,
                log_name: str = "jupyter.log") -> Iterator[str]:
    """Run `jupyter lab` with the built bundle and `--OsireLLM.*` options; yields its URL.

    On exit every live deployment is stopped and the server ends (its process group).
    """
    home, work = tmp / "home", tmp / "work"
    for folder in (home, work):
        folder.mkdir(parents=True, exist_ok=True)
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
                   "workspaces_dir": str(tmp / "workspaces"),
                   # window.jupyterapp: the tests switch themes with JupyterLab's own command
                   "expose_app_in_browser": True},
    }))
    env = {**os.environ, "HOME": str(home), "JUPYTER_CONFIG_DIR": str(config),
           "JUPYTER_DATA_DIR": str(tmp / "data"), "JUPYTER_RUNTIME_DIR": str(tmp / "runtime"),
           "IPYTHONDIR": str(tmp / "ipython"), "PYTHONPATH": str(REPO)}
    for name in ("JUPYTER_TOKEN", "OSIRE_URL", "OSIRE_TOKEN", "OSIRE_TOKEN_FILE"):
        env.pop(name, None)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log_path = tmp / "jupyter.log"
    log = log_path.open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
         "--ServerApp.port_retries=0", f"--IdentityProvider.token={TOKEN}",
         f"--ServerApp.root_dir={work}", *osire,
         *(["--allow-root"] if os.geteuid() == 0 else [])],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        health: Any = None
        while time.monotonic() < deadline and process.poll() is None:
            try:
                health = api(base, "health")
                break
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.3)
        if health is None:
            raise RuntimeError(f"jupyter lab did not answer /osire/api/health:\n"
                               f"{log_path.read_text()[-5000:]}")
        yield base
    finally:
        try:  # leave no engine behind: stop whatever is still live, and wait for it
            live = [d["id"] for d in api(base, "deployments")["deployments"]
                    if d["state"] not in ("stopped", "failed")]
            for deployment_id in live:
                api(base, f"deployments/{deployment_id}", "DELETE")
            deadline = time.monotonic() + 60
            while live and time.monotonic() < deadline:
                states = {d["id"]: d["state"] for d in api(base, "deployments")["deployments"]}
                live = [i for i in live if states.get(i) not in ("stopped", "failed")]
                time.sleep(0.5)
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
        artifacts.mkdir(parents=True, exist_ok=True)
        shutil.copy(log_path, artifacts / log_name)


@contextlib.contextmanager
def lab_page(sync_api: Any, base: str) -> Iterator[Any]:
    """A Chromium page on JupyterLab with the LLMs sidebar open; fails on the extension's errors."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1280, "height": 800})
        context.grant_permissions(["clipboard-read", "clipboard-write"], origin=base)
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(f"{base}/lab?token={TOKEN}")
        tab = page.locator('.jp-SideBar [data-id="jupyter-osire-llm-sidebar"]')
        tab.wait_for(timeout=60_000)
        assert tab.get_attribute("title") == "LLMs"
        wait_until_restored(page)
        tab.click()
        page.locator("#jupyter-osire-llm-sidebar").wait_for(state="visible")
        try:
            yield page
        finally:
            context.close()
            browser.close()
        assert not [e for e in errors if "osire" in e.lower()], errors


def wait_until_restored(page: Any) -> None:
    """Wait until JupyterLab has restored its layout and opened the empty workspace's Launcher.

    The sidebar's tab shows before that, and the Launcher comes up to seconds after `restored`
    (on the first routing): opening it takes the focus and runs commands, and any command run
    closes the command palette.
    """
    page.wait_for_function("async () => { await window.jupyterapp.restored; return true; }",
                           timeout=60_000)
    wait_for_launcher(page, timeout=60_000)


def wait_for_launcher(page: Any, timeout: float = 30_000) -> None:
    """Wait until the main area holds just a Launcher and it is the current widget."""
    page.wait_for_function("""() => {
        const shell = window.jupyterapp.shell;
        const main = [...shell.widgets('main')];
        return main.length === 1 && shell.currentWidget === main[0]
            && main[0].node.querySelector('.jp-Launcher') !== null;
    }""", timeout=timeout)


def close_all(page: Any) -> None:
    """Close every main-area tab; returns once JupyterLab's Launcher has taken their place.

    JupyterLab opens that Launcher a frame after the main area empties, and activates it: what a
    test opened before would lose the focus (or be hidden behind it).
    """
    page.evaluate("window.jupyterapp.commands.execute('application:close-all')")
    wait_for_launcher(page)


def new_notebook(page: Any) -> Any:
    """A new notebook on the python3 kernel, the current widget; returns its panel's locator.

    The panel shows before its content has loaded from the server (and its kernel has started).
    """
    panel_id = page.evaluate("""async () => {
        const panel = await window.jupyterapp.commands.execute(
            'notebook:create-new', {kernelName: 'python3'});
        return panel.id;
    }""")
    page.wait_for_function("id => window.jupyterapp.shell.currentWidget?.id === id", arg=panel_id)
    panel = page.locator(f'.jp-NotebookPanel[id="{panel_id}"]')
    panel.wait_for()
    return panel


def set_theme(page: Any, theme: str) -> None:
    page.evaluate("t => window.jupyterapp.commands.execute('apputils:change-theme', {theme: t})",
                  theme)
    page.wait_for_function(
        "t => document.body.dataset.jpThemeName === t && "
        "getComputedStyle(document.body).getPropertyValue('--jp-layout-color0').trim() !== ''",
        arg=theme)
    page.wait_for_timeout(300)  # the theme's stylesheet applies on the next frames


def shoot(page: Any, name: str, element: Any = None,
          prepare: Optional[Callable[[], None]] = None) -> None:
    """`<name>-light.png` and `<name>-dark.png` in test-artifacts/ui/ (page or one element).

    `prepare` runs after each theme switch, before its screenshot: the switch is a command, and
    any command run closes the command palette.
    """
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    target = element if element is not None else page
    try:
        for theme, suffix in ((LIGHT, "light"), (DARK, "dark")):
            set_theme(page, theme)
            if prepare is not None:
                prepare()
            target.screenshot(path=ARTIFACTS / f"{name}-{suffix}.png")
    finally:
        set_theme(page, LIGHT)


def expect_notified(page: Any, text: str) -> None:
    """``text`` is among JupyterLab's notifications (the notification center lists them all,
    also those whose toast has closed already)."""
    from playwright.sync_api import expect
    show = ("window.jupyterapp.commands.execute('apputils:display-notifications')"
            ".then(() => null)")
    page.evaluate(show)
    try:
        expect(page.locator(".jp-Notification-Center")).to_contain_text(text)
    finally:
        page.evaluate(show)  # the same command hides it


def dismiss_toasts(page: Any) -> None:
    """Close the notification toasts (they sit over the lower right of the main area)."""
    page.evaluate("() => document.querySelectorAll('.Toastify__close-button')"
                  ".forEach(b => b.click())")
