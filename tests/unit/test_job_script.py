"""The rendered job script run by bash on its own (no scheduler): endpoint, key, exit status."""
import json
import os
import subprocess
from pathlib import Path

from jupyter_osire_llm.catalog import parse_catalog
from jupyter_osire_llm.render import ScriptContext, ScriptRenderer


def run_script(tmp_path: Path, command: str, path_dir: Path = None, advertise: str = "",
               key: bool = True):
    catalog = parse_catalog({"engines": {"e": {"command": command, "kind": "openai",
                                               "guard": False}},
                             "models": [{"name": "m", "model": "/m", "engine": "e"}]})
    job_dir = tmp_path / "job"
    job_dir.mkdir()
    if key:
        (job_dir / "key").write_text("s3cret-key")
    script = ScriptRenderer().render(catalog.get("m"), catalog.get("m").resources,
                                     ScriptContext("d1", 0, job_dir, advertise_host=advertise))
    env = dict(os.environ)
    if path_dir:
        env["PATH"] = f"{path_dir}:{env['PATH']}"
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env,
                            timeout=30)
    return result, job_dir


def test_endpoint_key_and_exit_status(tmp_path):
    # The "engine" prints whether it got the key in its environment, then exits 7.
    result, job_dir = run_script(
        tmp_path, "bash -c 'echo key-len=${#VLLM_API_KEY} args=$*; exit 7' engine")
    assert result.returncode == 7
    endpoint = json.loads((job_dir / "endpoint.json").read_text())
    assert endpoint["host"] and 1024 <= endpoint["port"] < 65536
    assert "key-len=10" in result.stdout and "s3cret-key" not in result.stdout + result.stderr
    assert "--port" in result.stdout and "--served-model-name m" in result.stdout


def test_unresolvable_hostname_falls_back_to_an_address(tmp_path):
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "hostname").write_text('#!/bin/sh\n[ "$1" = "-I" ] && echo "10.9.8.7 fe80::1" '
                                   '|| echo no-such-node.invalid\n')
    (fake / "hostname").chmod(0o755)
    result, job_dir = run_script(tmp_path, "true", path_dir=fake)
    assert result.returncode == 0, result.stderr
    assert json.loads((job_dir / "endpoint.json").read_text())["host"] == "10.9.8.7"


def test_advertised_host_wins(tmp_path):
    result, job_dir = run_script(tmp_path, "true", advertise="127.0.0.1")
    assert json.loads((job_dir / "endpoint.json").read_text())["host"] == "127.0.0.1"


def test_missing_key_file_fails_clearly(tmp_path):
    result, job_dir = run_script(tmp_path, "touch engine-ran", key=False)
    assert result.returncode == 1
    assert "cannot read the key file" in result.stderr
    assert not (job_dir / "endpoint.json").exists() and not (job_dir / "engine-ran").exists()
