"""The sidebar's "Batches" section in a real JupyterLab, driven in headless Chromium by Playwright.

A `jupyter lab` subprocess runs the extension on the local scheduler; each batch is a local job
running the fake OpenAI engine (tests/fake_engine.py), slowed down (0.3 s a token, two requests
in flight) so that a batch of 20 requests runs for several seconds and its progress can be seen
growing. The batches are made over HTTP, as the `openai` SDK makes them; the sidebar shows them,
cancels, resumes and downloads their results. Screenshots: test-artifacts/ui/13-batches*.png.
"""
from __future__ import annotations

import contextlib
import json
import re
import sys
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Iterator, Optional

import pytest

from labserver import BUNDLE, CHROMIUM, TOKEN, api, dismiss_toasts, expect_notified, \
    jupyter_lab, lab_page, shoot

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[2]
FAKE_ENGINE = REPO / "tests" / "fake_engine.py"
MODEL = "slow-chat"
WAIT_MS = 120_000  # only turns a hang into a readable failure; no test asserts on time
HELD_AFTER = 4     # requests a held batch's engine answers before it waits (the hold fixture)

if not CHROMIUM.exists():
    pytest.skip("browser tests need Debian's chromium at /usr/bin/chromium "
                "(apt-get install chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="needs the playwright package")
expect = sync_api.expect


def _write_catalog(path: Path, hold: Path) -> None:
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
  - name: {MODEL}
    model: /models/slow-chat
    engine: fake
    description: The fake OpenAI engine, 0.3 s a token
    resources: {{cpus: 1, time: "00:30:00"}}
    env: {{OSIRE_FAKE_TOKEN_DELAY: "0.3", OSIRE_FAKE_HOLD_FILE: "{hold}",
           OSIRE_FAKE_HOLD_AFTER: "{HELD_AFTER}"}}
""")


@pytest.fixture(scope="module")
def hold(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """While this file exists, a batch's engine answers its first HELD_AFTER requests and holds
    the rest: a batch stays part-way until the test lets it go (no race with the polls)."""
    return tmp_path_factory.mktemp("hold") / "hold"


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory, hold: Path) -> Iterator[str]:
    """A `jupyter lab` subprocess with the extension on the local scheduler; yields its URL."""
    if not (BUNDLE / "package.json").exists():
        pytest.skip(f"labextension not built ({BUNDLE} missing): run `pip install -e .`")
    tmp = tmp_path_factory.mktemp("batchlab")
    catalog = tmp / "catalog.yaml"
    _write_catalog(catalog, hold)
    state = tmp / "osire"
    with jupyter_lab(tmp, ["--OsireLLM.scheduler=local", f"--OsireLLM.catalog={catalog}",
                           f"--OsireLLM.job_root={state / 'jobs'}",
                           f"--OsireLLM.db_path={state / 'osire.db'}",
                           "--OsireLLM.batch_concurrency=2"],
                     log_name="jupyter-batches.log") as base:
        assert api(base, "health")["scheduler"]["name"] == "local"
        try:
            yield base
        finally:  # leave no batch job behind
            with contextlib.suppress(Exception):
                for batch in _v1(base, "batches?limit=100")["data"]:
                    if batch["status"] in ("validating", "queued", "in_progress"):
                        _v1(base, f"batches/{batch['id']}/cancel", "POST")


@pytest.fixture(scope="module")
def page(lab: str) -> Iterator[Any]:
    """The JupyterLab page with the LLMs sidebar open."""
    with lab_page(sync_api, lab) as page:
        yield page


def _v1(base: str, path: str, method: str = "GET", body: Optional[dict] = None,
        data: Optional[bytes] = None, content_type: str = "application/json") -> Any:
    """`<base>/osire/v1/<path>` with the token, as any OpenAI client calls it."""
    if body is not None:
        data = json.dumps(body).encode()
    request = urllib.request.Request(f"{base}/osire/v1/{path}", method=method, data=data,
                                     headers={"Authorization": f"token {TOKEN}",
                                              "Content-Type": content_type})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read() or b"null")


def _create_batch(base: str, count: int) -> dict:
    """Upload `count` chat requests (multipart, purpose=batch) and make a batch of them."""
    lines = "".join(json.dumps({
        "custom_id": f"q{i}", "method": "POST", "url": "/v1/chat/completions",
        "body": {"model": MODEL, "max_tokens": 3,
                 "messages": [{"role": "user", "content": f"hi {i}"}]}}) + "\n"
        for i in range(count))
    boundary = uuid.uuid4().hex
    form = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
            f"filename=\"questions.jsonl\"\r\nContent-Type: application/jsonl\r\n\r\n"
            f"{lines}\r\n--{boundary}--\r\n").encode()
    upload = _v1(base, "files", "POST", data=form,
                 content_type=f"multipart/form-data; boundary={boundary}")
    assert upload["purpose"] == "batch", upload
    batch = _v1(base, "batches", "POST", {"input_file_id": upload["id"],
                                          "endpoint": "/v1/chat/completions",
                                          "completion_window": "24h"})
    assert batch["request_counts"]["total"] == count, batch
    return batch


def _item(page: Any, batch_id: str) -> Any:
    return page.locator(f'.jp-OsireBatch[data-batch="{batch_id}"]')


def _answered(item: Any) -> int:
    return int(item.get_by_role("progressbar").get_attribute("aria-valuenow"))


def _running_part_way(page: Any, batch_id: str) -> int:
    """Wait until the item shows the batch running with some requests answered and not all,
    and its Cancel button enabled (all in one rendering); returns how many are answered."""
    handle = page.wait_for_function("""id => {
        const item = document.querySelector(`.jp-OsireBatch[data-batch="${id}"]`);
        const bar = item?.querySelector('[role="progressbar"]');
        if (!bar || item.dataset.status !== 'in_progress') { return false; }
        const now = Number(bar.getAttribute('aria-valuenow'));
        const max = Number(bar.getAttribute('aria-valuemax'));
        const badge = item.querySelector('.jp-OsireBatch-badge')?.textContent;
        const cancel = [...item.querySelectorAll('button')]
            .find(b => b.getAttribute('aria-label')?.startsWith('Cancel the'));
        return now > 0 && now < max && badge === 'Running' && cancel && !cancel.disabled
            ? now : false;
    }""", arg=batch_id, timeout=WAIT_MS)
    return int(handle.json_value())


def _refresh(page: Any) -> None:
    page.locator("#jupyter-osire-llm-sidebar").get_by_role(
        "button", name="Refresh", exact=True).click()


def test_no_batches_no_section(page: Any) -> None:
    """A user without batches sees no Batches section (the deployments and catalog only)."""
    expect(page.locator(".jp-OsireSidebar-model").first).to_be_visible(timeout=WAIT_MS)
    expect(page.get_by_text("Nothing running. Launch a model below.")).to_be_visible()
    expect(page.locator(".jp-OsireBatches")).to_have_count(0)


def test_a_batch_grows_to_completed_and_its_results_download(page: Any, lab: str,
                                                             hold: Path) -> None:
    hold.touch()
    batch = _create_batch(lab, 20)
    item = _item(page, batch["id"])
    expect(item).to_be_visible(timeout=WAIT_MS)
    section = page.locator(".jp-OsireBatches")
    expect(section.locator(".jp-OsireSidebar-sectionTitle")).to_have_text("Batches (1)")
    expect(item.locator(".jp-OsireSidebar-name")).to_have_text(MODEL)
    bar = item.get_by_role("progressbar")
    expect(bar).to_have_attribute("aria-valuemax", "20")
    # Part-way: running, some requests answered and not all (the bar grows as answers arrive).
    part_way = _running_part_way(page, batch["id"])   # it cannot end while held
    shoot(page, "13-batches-running")  # the bar part-way, held there
    hold.unlink()
    # The end: completed, all 20 answered.
    expect(item).to_have_attribute("data-status", "completed", timeout=WAIT_MS)
    expect(bar).to_have_attribute("aria-valuenow", "20")
    assert _answered(item) > part_way
    expect(item.locator(".jp-OsireBatch-count")).to_have_text("20/20")
    expect(item.locator(".jp-OsireBatch-badge")).to_have_text("Completed")
    expect(item.locator(".jp-OsireBatch-summary")).to_have_text("finished: every request answered")
    expect(item.locator(".jp-OsireBatch-failedCount")).to_have_count(0)
    expect(item.get_by_role("button", name=re.compile("^Cancel the"))).to_have_count(0)
    expect(item.get_by_role("button", name=re.compile("^Resume the"))).to_have_count(0)
    expect_notified(page, f"Batch of {MODEL} completed: 20/20 done")
    # Download results: the output file's content, through the server, saved by the browser.
    with page.expect_download(timeout=WAIT_MS) as download_info:
        item.get_by_role("button", name=f"Download the results of the {MODEL} batch").click()
    download = download_info.value
    assert download.suggested_filename == f"{batch['id']}-output.jsonl"
    answers = [json.loads(line) for line in Path(download.path()).read_text().splitlines()]
    assert sorted(a["custom_id"] for a in answers) == sorted(f"q{i}" for i in range(20))
    assert all(a["response"]["status_code"] == 200 for a in answers)


def test_cancel_keeps_the_answers_and_resume_does_the_rest(page: Any, lab: str,
                                                           hold: Path) -> None:
    hold.touch()
    batch = _create_batch(lab, 40)
    item = _item(page, batch["id"])
    bar = item.get_by_role("progressbar")
    # Newest first: the new batch above the completed one.
    expect(page.locator(".jp-OsireBatch").first).to_have_attribute("data-batch", batch["id"],
                                                                     timeout=WAIT_MS)
    before_cancel = _running_part_way(page, batch["id"])   # it cannot end while held
    item.get_by_role("button", name=f"Cancel the {MODEL} batch").click()
    expect(item).to_have_attribute("data-status", "cancelled", timeout=WAIT_MS)
    expect(item.locator(".jp-OsireBatch-badge")).to_have_text("Cancelled")
    expect(item.locator(".jp-OsireBatch-summary")).to_have_text("cancelled by user")
    kept = _answered(item)
    assert before_cancel <= kept < 40, kept
    hold.unlink()
    expect(item.locator(".jp-OsireBatch-count")).to_have_text(f"{kept}/40")
    expect(item.locator(".jp-OsireSidebar-explain")).to_have_text(
        f"{40 - kept} request{'' if 40 - kept == 1 else 's'} left: Resume answers only those")
    resume = item.get_by_role("button", name=f"Resume the {MODEL} batch")
    expect(resume).to_be_enabled()
    expect(item.get_by_role("button", name=re.compile("^Cancel the"))).to_have_count(0)
    # The answers so far can be downloaded already.
    expect(item.get_by_role("button", name=f"Download the results of the {MODEL} batch")) \
        .to_be_visible()
    # A batch that did not complete says so, and the notice stays until dismissed.
    expect_notified(page, f"Batch of {MODEL} cancelled: {kept}/40 done (cancelled by user)")
    dismiss_toasts(page)
    shoot(page, "13-batches")
    # Resume: a new job answers the rest; the batch ends completed with all 40.
    resume.click()
    expect(item).to_have_attribute("data-status", re.compile("^(validating|queued|in_progress)$"),
                                   timeout=WAIT_MS)
    expect(item.get_by_role("button", name=re.compile("^Resume the"))).to_have_count(0)
    expect(item).to_have_attribute("data-status", "completed", timeout=WAIT_MS)
    expect(item.locator(".jp-OsireBatch-count")).to_have_text("40/40")
    expect(bar).to_have_attribute("aria-valuenow", "40")
    record = _v1(lab, f"batches/{batch['id']}")
    assert record["request_counts"] == {"total": 40, "completed": 40, "failed": 0}
    assert len(record["osire"]["jobs"]) == 2, record["osire"]


def test_a_listing_error_stays_in_the_batches_section(page: Any) -> None:
    """The batches cannot be listed: their section says so; the deployments are untouched."""
    pattern = re.compile(r"/osire/v1/batches(\?.*)?$")

    def refuse(route: Any) -> None:
        route.fulfill(status=503, content_type="application/json", body=json.dumps(
            {"error": {"message": "batch store unavailable", "type": "server_error",
                       "code": None, "param": None}}))

    page.route(pattern, refuse)
    try:
        _refresh(page)
        error = page.locator(".jp-OsireBatches .jp-OsireSidebar-error")
        expect(error).to_have_text("Cannot list your batches: batch store unavailable",
                                   timeout=WAIT_MS)
        # The last known batches stay listed under the error; the deployments show no error.
        expect(page.locator(".jp-OsireBatch")).to_have_count(2)
        running = page.locator('section[aria-labelledby="osire-deployments-h"]')
        expect(running.get_by_text("Nothing running. Launch a model below.")).to_be_visible()
        expect(running.locator(".jp-OsireSidebar-error")).to_have_count(0)
    finally:
        page.unroute(pattern, refuse)
    _refresh(page)
    expect(page.locator(".jp-OsireBatches .jp-OsireSidebar-error")).to_have_count(0,
                                                                                  timeout=WAIT_MS)


def test_remove_asks_first_then_deletes_the_batch_and_its_results(page: Any, lab: str) -> None:
    listed = _v1(lab, "batches")["data"]
    assert len(listed) == 2 and all(b["status"] == "completed" for b in listed), listed
    oldest, newest = listed[-1], listed[0]
    item = _item(page, oldest["id"])
    expect(item).to_be_visible(timeout=WAIT_MS)
    remove = item.get_by_role("button", name=f"Remove the {MODEL} batch and its results")
    remove.click()
    dialog = page.locator(".jp-Dialog")
    expect(dialog).to_contain_text("Download what you want to keep first", timeout=WAIT_MS)
    dialog.get_by_role("button", name="Cancel").click()        # changed their mind: kept
    expect(dialog).to_have_count(0)
    expect(item).to_be_visible()
    assert _v1(lab, f"batches/{oldest['id']}")["status"] == "completed"
    remove.click()
    dialog.get_by_role("button", name="Remove").click()
    expect(item).to_have_count(0, timeout=WAIT_MS)
    expect(page.locator(".jp-OsireBatches .jp-OsireSidebar-sectionTitle")).to_have_text(
        "Batches (1)")
    assert [b["id"] for b in _v1(lab, "batches")["data"]] == [newest["id"]]
    with pytest.raises(urllib.error.HTTPError) as gone:
        _v1(lab, f"files/{oldest['output_file_id']}/content")
    assert gone.value.code == 404
