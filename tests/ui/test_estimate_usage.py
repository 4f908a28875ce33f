"""Cost in the sidebar (issue 20), in a real JupyterLab on the real Slurm test cluster, driven in
headless Chromium: the launch form's estimate follows the GPUs field (from `sbatch --test-only`
and the partition's billing weights), a partition Slurm refuses is named next to its field, a
request over the site limit is shown in the warning style; a ready model says what its idle GPUs
have cost, its sparklines use their whole width from the first samples, and the usage section
lists the tokens it answered.

Screenshots (light and dark): test-artifacts/ui/3*-*.png.
"""
from __future__ import annotations

import json
import re
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import pytest

from labserver import BUNDLE, CHROMIUM, TOKEN, api, dismiss_toasts, jupyter_lab, lab_page, shoot

pytestmark = [pytest.mark.browser, pytest.mark.slurm]

REPO = Path(__file__).resolve().parents[2]
FAKE_ENGINE = REPO / "tests" / "fake_engine.py"
MODEL = "gpu-chat"

if not CHROMIUM.exists():
    pytest.skip("browser tests need Debian's chromium at /usr/bin/chromium",
                allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="needs the playwright package")


def _write_catalog(path: Path) -> None:
    path.write_text(f"""
engines:
  fake:
    command: {sys.executable} {FAKE_ENGINE}
    kind: openai
    guard: false
    key_env: VLLM_API_KEY
    tls_cert_flag: --ssl-certfile
    tls_key_flag: --ssl-keyfile
models:
  - name: {MODEL}
    model: /models/gpu-chat
    engine: fake
    description: One of the test cluster's two (fake) GPUs
    resources: {{gpus: 1, cpus: 1, memory: 1G, time: "00:30:00"}}
""")


@pytest.fixture(scope="module")
def lab(slurm_cluster: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if not (BUNDLE / "package.json").exists():
        pytest.skip(f"labextension not built ({BUNDLE} missing): run `pip install -e .`")
    tmp = tmp_path_factory.mktemp("cost-lab")
    catalog = tmp / "catalog.yaml"
    _write_catalog(catalog)
    state = tmp / "osire"
    with jupyter_lab(tmp, ["--OsireLLM.scheduler=slurm", f"--OsireLLM.catalog={catalog}",
                           f"--OsireLLM.job_root={state / 'jobs'}",
                           f"--OsireLLM.db_path={state / 'osire.db'}",
                           "--OsireLLM.max_gpus=2", "--OsireLLM.monitor_fast_interval=0.5"],
                     log_name="jupyter-cost.log") as base:
        yield base


@pytest.fixture(scope="module")
def page(lab: str) -> Iterator[Any]:
    with lab_page(sync_api, lab) as page:
        yield page


def _card(page: Any) -> Any:
    return page.locator(f'.jp-OsireSidebar-model[data-model="{MODEL}"]')


def _estimate(card: Any) -> Any:
    return card.locator('.jp-OsireSidebar-estimate[data-state="current"]')


def _usage_route(base: str) -> bool:
    try:
        api(base, "usage")
        return True
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return False
        raise


@pytest.mark.cluster_exclusive
def test_the_estimate_follows_the_gpus_field(page: Any, lab: str) -> None:
    card = _card(page)
    card.locator("summary", has_text="Resources").click()
    line = _estimate(card)
    # Both GPUs free: Slurm would start it now; 1 GPU for half an hour.
    sync_api.expect(line).to_contain_text("starts now", timeout=30_000)
    sync_api.expect(line).to_contain_text("1 GPU x 0.5 h = 0.5 GPU-h")
    assert line.get_attribute("data-tone") == "ok"
    # The server's own answer for the same body is what the card shows.
    expected = api(lab, "deployments/estimate", "POST",
                   {"model": MODEL, "resources": {"gpus": 2}})["summary"]
    card.get_by_label("GPUs").fill("2")
    sync_api.expect(line).to_contain_text("2 GPU x 0.5 h = 1 GPU-h", timeout=30_000)
    assert re.sub(r"\d+ SU", "SU", line.inner_text()) == re.sub(r"\d+ SU", "SU", expected), \
        (line.inner_text(), expected)
    assert "SU" in line.inner_text(), "the test partition has TRESBillingWeights"
    card.get_by_label("Time").fill("02:00:00")
    sync_api.expect(line).to_contain_text("2 GPU x 2 h = 4 GPU-h", timeout=30_000)
    shoot(page, "30-estimate", element=card)


@pytest.mark.cluster_exclusive
def test_estimate_refusals_next_to_the_field_and_warnings(page: Any) -> None:
    card = _card(page)
    partition = card.get_by_label("Partition")
    partition.fill("nosuchpartition")
    # Slurm refuses the partition: named next to its field where the server names the field
    # (param resources.partition), else said under the card as a refusal; no estimate line.
    error = card.locator(".jp-OsireSidebar-fieldError")
    refused = card.locator('.jp-OsireSidebar-estimate[data-state="refused"]')
    sync_api.expect(error.or_(refused)).to_have_count(1, timeout=30_000)
    said = (error if error.count() else refused).inner_text()
    assert "partition" in said.lower(), said
    if error.count():
        sync_api.expect(partition).to_have_attribute("aria-invalid", "true")
    assert _estimate(card).count() == 0, "no estimate line for a refused request"
    shoot(page, "31-estimate-refused", element=card)
    partition.fill("")
    sync_api.expect(error.or_(refused)).to_have_count(0, timeout=30_000)
    # Over the site limit of 2 GPUs: said in the warning style, with the reason.
    card.get_by_label("GPUs").fill("3")
    line = _estimate(card)
    sync_api.expect(line).to_have_attribute("data-tone", "warn", timeout=30_000)
    sync_api.expect(line.locator(".jp-OsireSidebar-estimateWarning")).to_contain_text("limit")
    shoot(page, "32-estimate-warning", element=card)
    card.get_by_label("GPUs").fill("1")
    card.get_by_label("Time").fill("00:30:00")
    sync_api.expect(line).to_have_attribute("data-tone", "ok", timeout=30_000)
    card.locator("summary", has_text="Resources").click()
    sync_api.expect(card.locator(".jp-OsireSidebar-estimate")).to_have_count(0)


def _chat(base: str) -> dict:
    body = json.dumps({"model": MODEL, "max_tokens": 8,
                       "messages": [{"role": "user", "content": "Count to three"}]}).encode()
    request = urllib.request.Request(f"{base}/osire/v1/chat/completions", data=body,
                                     headers={"Authorization": f"Bearer {TOKEN}",
                                              "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def test_idle_cost_full_width_charts_and_usage(page: Any, lab: str) -> None:
    usage_route = _usage_route(lab)
    section = page.locator(".jp-OsireUsage")
    sync_api.expect(section).to_be_visible()
    if not usage_route:
        sync_api.expect(section).to_contain_text("Usage not available")
    _card(page).get_by_role("button", name=f"Launch {MODEL}").click()
    deployment = page.locator(".jp-OsireSidebar-deployment").filter(
        has=page.locator(".jp-OsireSidebar-name", has_text=MODEL)).first
    sync_api.expect(deployment).to_have_attribute("data-state", "ready", timeout=120_000)
    # The first samples already span the sparkline's width (no thin strip at the right edge).
    metrics = deployment.locator(".jp-OsireMetrics")
    sync_api.expect(metrics).to_have_attribute("data-span", "samples", timeout=30_000)
    path = deployment.locator('.jp-OsireMetrics-item[data-series="running"] path')
    path.wait_for(state="attached")  # a flat zero line has no height: "hidden" to Playwright
    assert path.get_attribute("d").startswith("M0 "), path.get_attribute("d")
    answer = _chat(lab)
    assert answer["usage"]["completion_tokens"] > 0, answer
    dismiss_toasts(page)
    # A minute without a request: the card says what its GPU has cost meanwhile.
    idle = deployment.locator(".jp-OsireSidebar-idle")
    sync_api.expect(idle).to_contain_text("since its last request: 1 GPU,", timeout=150_000)
    assert float(idle.get_attribute("data-gpu-hours")) >= 60 / 3600 * 0.99
    if usage_route:
        # Asked again once a minute when the sidebar refreshes: the call shows up per model.
        row = section.locator(f'tr[data-model="{MODEL}"]')
        sync_api.expect(row).to_have_count(1, timeout=90_000)
        assert re.search(r"\b1\b", row.locator("td").first.inner_text()), row.inner_text()
        sync_api.expect(section.locator("rect.jp-OsireUsage-bar")).to_have_count(30)
    section.scroll_into_view_if_needed()
    shoot(page, "33-idle-cost-usage")
