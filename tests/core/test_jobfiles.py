"""Job-folder files: the key, and the job-side payloads copied from the installation."""
from __future__ import annotations

import asyncio
import stat

import pytest

from jupyter_osire_llm.core import jobfiles
from jupyter_osire_llm.errors import ConfigError
from service_factory import make_service, one_model_catalog


def test_an_engine_folder_gets_a_private_key_and_the_guard(tmp_path):
    folder = tmp_path / "jobs" / "d1" / "r0"
    jobfiles.prepare_engine_folder(tmp_path / "jobs", folder, "s3cret")
    assert jobfiles.read_key(folder) == "s3cret"
    assert stat.S_IMODE((folder / jobfiles.KEY_FILE).stat().st_mode) == 0o600
    assert (folder / "engine_guard.py").read_bytes() == jobfiles.GUARD_SOURCE.read_bytes()


def test_a_batch_folder_gets_its_input_and_both_payloads(tmp_path):
    source = tmp_path / "upload"
    source.write_text('{"custom_id": "1"}\n')
    folder = tmp_path / "jobs" / "batches" / "batch_1"
    jobfiles.prepare_batch_folder(folder, source)
    assert (folder / "input.jsonl").read_text() == source.read_text()
    assert {p.name for p in folder.iterdir()} == {"input.jsonl", "batch_runner.py",
                                                  "engine_guard.py"}


@pytest.mark.parametrize("payload", ["GUARD_SOURCE", "RUNNER_SOURCE"])
def test_a_missing_payload_stops_the_folder_from_being_made(tmp_path, monkeypatch, payload):
    """Before, a missing guard was skipped and the engine ran unguarded."""
    missing = tmp_path / "gone" / "engine_guard.py"
    monkeypatch.setattr(jobfiles, "ENGINE_PAYLOADS", (missing,)
                        if payload == "GUARD_SOURCE" else jobfiles.ENGINE_PAYLOADS)
    monkeypatch.setattr(jobfiles, "BATCH_PAYLOADS", (missing,)
                        if payload == "RUNNER_SOURCE" else jobfiles.BATCH_PAYLOADS)
    source = tmp_path / "upload"
    source.write_text("{}\n")
    with pytest.raises(ConfigError, match="missing from the installation"):
        if payload == "GUARD_SOURCE":
            jobfiles.prepare_engine_folder(tmp_path / "jobs", tmp_path / "jobs" / "d" / "r0",
                                           "k")
        else:
            jobfiles.prepare_batch_folder(tmp_path / "jobs" / "batches" / "b", source)


class CountingScheduler:
    def __init__(self, real):
        self.real, self.submitted = real, []

    def __getattr__(self, name):
        return getattr(self.real, name)

    def submit(self, request):
        self.submitted.append(request)
        return self.real.submit(request)


def test_a_launch_without_the_guard_submits_nothing_and_keeps_nothing(tmp_path, monkeypatch):
    from jupyter_osire_llm.schedulers.local import LocalScheduler
    monkeypatch.setattr(jobfiles, "ENGINE_PAYLOADS", (tmp_path / "gone" / "engine_guard.py",))
    scheduler = CountingScheduler(LocalScheduler(tmp_path / "local"))
    service = make_service(tmp_path, one_model_catalog("bash -c 'sleep 300' engine"),
                           scheduler)
    with pytest.raises(ConfigError, match="engine_guard.py is missing"):
        asyncio.run(service.launch("m"))
    assert scheduler.submitted == [] and service.all() == []
    assert service.store.load("deployments") == []
