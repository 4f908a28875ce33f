"""Model and engine text is data in the sidebar: an answer and a log line carrying
``<img onerror>``, ``<script>``, Markdown and an image, in a real JupyterLab in headless Chromium.

The playground renders the answer's Markdown (bold, code) with none of the model's HTML or images:
the tags show literally, no handler runs (``window.__pwned`` stays unset) and no image URL the
model chose is requested; the log viewer shows the line as text.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

import hostile
from labserver import BUNDLE, CHROMIUM, api, close_all, jupyter_lab, lab_page

pytestmark = pytest.mark.browser

FAKE_ENGINE = Path(__file__).resolve().parents[1] / "fake_engine.py"

if not CHROMIUM.exists():
    pytest.skip("browser tests need Debian's chromium at /usr/bin/chromium "
                "(apt-get install chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="needs the playwright package")


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if not (BUNDLE / "package.json").exists():
        pytest.skip(f"labextension not built ({BUNDLE} missing): run `pip install -e .`")
    tmp = tmp_path_factory.mktemp("lab-output")
    catalog = tmp / "catalog.yaml"
    catalog.write_text(yaml.safe_dump({
        "engines": {"fake": {"command": f"{sys.executable} {FAKE_ENGINE}", "kind": "openai",
                             "guard": False, "key_env": "VLLM_API_KEY",
                             "tls_cert_flag": "--ssl-certfile", "tls_key_flag": "--ssl-keyfile"}},
        "models": [{"name": "hostile-chat", "model": "/models/hostile", "engine": "fake",
                    "description": "answers and logs HTML and script",
                    "resources": {"cpus": 1, "time": "00:10:00"}, "env": dict(hostile.ENV)}]}))
    state = tmp / "osire"
    with jupyter_lab(tmp, ["--OsireLLM.scheduler=local", f"--OsireLLM.catalog={catalog}",
                           f"--OsireLLM.job_root={state / 'jobs'}",
                           f"--OsireLLM.db_path={state / 'osire.db'}"],
                     log_name="jupyter-model-output.log") as base:
        api(base, "deployments", "POST", {"model": "hostile-chat"})
        yield base


@pytest.fixture(scope="module")
def page(lab: str) -> Iterator[Any]:
    with lab_page(sync_api, lab) as page:
        requested: list[str] = []
        page.on("request", lambda request: requested.append(request.url))
        page.requested = requested
        deployment = page.locator(".jp-OsireSidebar-deployment").first
        sync_api.expect(deployment).to_have_attribute("data-state", "ready", timeout=60_000)
        yield page
        assert page.evaluate("window.__pwned") is None          # no handler of the model ran
        images = [u for u in requested if u.rsplit("/", 1)[-1] in ("x", "x.png")]
        assert not images, images                               # no image it named was fetched


def test_playground_shows_the_answers_markup_as_text(page: Any) -> None:
    page.get_by_role("button", name="Open playground for hostile-chat").click()
    panel = page.locator(".jp-OsirePlayground").last
    message = panel.get_by_label("Message to hostile-chat")
    message.fill("Show me some HTML")
    message.press("Enter")
    answer = panel.locator('.jp-OsirePlayground-turn[data-role="assistant"]').last
    sync_api.expect(answer).to_have_attribute("data-done", "true", timeout=30_000)
    shown = answer.locator(".jp-RenderedMarkdown")
    sync_api.expect(shown).to_contain_text('<img src=x onerror="window.__pwned=1">')
    sync_api.expect(shown).to_contain_text("<script>window.__pwned=2</script>")
    assert shown.locator("img, script").count() == 0
    sync_api.expect(shown.locator("strong")).to_have_text("bold")      # Markdown still renders
    sync_api.expect(shown.locator("code")).to_have_text("a < b")       # code as the model sent it
    sync_api.expect(shown.locator("a")).to_have_text("pic")            # an image only as a link
    sync_api.expect(shown).to_contain_text("!pic")
    close_all(page)


def test_log_viewer_shows_the_engines_markup_as_text(page: Any) -> None:
    page.get_by_role("button", name="Open log of hostile-chat").click()
    lines = page.locator(".jp-OsireLog").last.locator(".jp-OsireLog-lines")
    sync_api.expect(lines).to_contain_text(hostile.LOG_LINE, timeout=30_000)
    assert lines.locator("img, b").count() == 0
    close_all(page)
