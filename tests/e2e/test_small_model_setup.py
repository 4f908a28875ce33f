"""scripts/make-small-model.py without converting anything: a finished folder is reused at once,
an unexpected source file is refused before anything is installed or written. (The conversion
itself runs in scripts/bootstrap.sh and is checked end to end by test_small_model_e2e.py.)
"""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

from jupyter_osire_llm.demo import SMALL_MODEL_NAME, TINY_MODEL_NAME, demo_catalog

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "make-small-model.py"


def _script():
    spec = importlib.util.spec_from_file_location("make_small_model", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                          timeout=120)


def _finished(folder: Path, sha: str) -> Path:
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"")
    (folder / ".osire-small-model-ok").write_text(json.dumps({"gguf_sha256": sha}))
    return folder


def test_marker_must_name_the_pinned_checksum(tmp_path):
    make = _script()
    assert make.marker_ok(_finished(tmp_path / "good", make.GGUF_SHA256))
    assert not make.marker_ok(_finished(tmp_path / "other", "0" * 64))
    assert not make.marker_ok(tmp_path / "missing")
    half = _finished(tmp_path / "half", make.GGUF_SHA256)
    (half / "model.safetensors").unlink()
    assert not make.marker_ok(half)


def test_a_finished_folder_is_reused(tmp_path):
    out = _finished(tmp_path / "smol", _script().GGUF_SHA256)
    result = _run(str(out))
    assert result.returncode == 0, result.stderr
    assert "is ready" in result.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["smol"]


def test_an_unexpected_source_is_refused(tmp_path):
    bogus = tmp_path / "SmolLM2-135M-Instruct.Q4_1.gguf"
    bogus.write_bytes(b"GGUF but not the pinned one")
    out = tmp_path / "smol"
    result = _run(str(out), "--gguf", str(bogus))
    assert result.returncode == 1
    assert "SHA-256" in result.stderr and "pinned" in result.stderr, result.stderr
    made = sorted(p.name for p in tmp_path.iterdir() if p.name != "smol.lock")
    assert made == [bogus.name]  # no folder, no partial conversion, no download left


def test_demo_catalog_lists_the_real_model_first():
    catalog = demo_catalog(Path("/py"), Path("/tiny"), Path("/scratch"), Path("/smol"))
    first, second = catalog["models"]
    assert (first["name"], first["model"]) == (SMALL_MODEL_NAME, "/smol")
    assert first["engine_args"]["max-model-len"] == 2048
    assert "SmolLM2-135M-Instruct" in first["description"]
    assert (second["name"], second["model"]) == (TINY_MODEL_NAME, "/tiny")
    # Without the small model's folder: the tiny model alone, as before.
    assert [m["name"] for m in demo_catalog(Path("/py"), Path("/tiny"), Path("/s"))["models"]] \
        == [TINY_MODEL_NAME]
