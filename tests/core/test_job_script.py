"""The rendered job script run by bash on its own (no scheduler): endpoint, key, exit status."""
import hashlib
import json
import os
import subprocess
from pathlib import Path

from jupyter_osire_llm.core.catalog import parse_catalog
from jupyter_osire_llm.core.render import ScriptContext, ScriptRenderer


TLS = {"tls_cert_flag": "--ssl-certfile", "tls_key_flag": "--ssl-keyfile"}


def run_script(tmp_path: Path, command: str, path_dir: Path = None, advertise: str = "",
               key: bool = True, **engine):
    engine = engine or {"key_env": "VLLM_API_KEY", **TLS}
    catalog = parse_catalog({"engines": {"e": {"command": command, "kind": "openai",
                                               "guard": False, **engine}},
                             "models": [{"name": "m", "model": "/m", "engine": "e"}]})
    assert not catalog.problems, catalog.problems
    job_dir = tmp_path / "job"
    job_dir.mkdir()
    if key:
        (job_dir / "key").write_text("s3cret-key")
    script = ScriptRenderer().render(catalog.get("m"), catalog.get("m").resources,
                                     ScriptContext("d1", 0, job_dir, advertise_host=advertise))
    env = {**os.environ, "SLURM_JOB_ID": "4242"}
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


def test_each_run_makes_its_own_certificate_and_names_job_and_run(tmp_path):
    result, job_dir = run_script(tmp_path, "bash -c 'echo args=$*' engine")
    assert result.returncode == 0, result.stderr
    endpoint = json.loads((job_dir / "endpoint.json").read_text())
    der = subprocess.run(["openssl", "x509", "-in", str(job_dir / "tls.crt"), "-outform", "DER"],
                         capture_output=True, check=True).stdout
    assert endpoint["fingerprint"] == hashlib.sha256(der).hexdigest()
    assert endpoint["job_id"] == "4242" and endpoint["run"].startswith("0-")
    assert (job_dir / "tls.key").stat().st_mode & 0o777 == 0o600
    assert f"--ssl-certfile {job_dir}/tls.crt --ssl-keyfile {job_dir}/tls.key" in result.stdout
    first = endpoint
    (job_dir / "endpoint.json").unlink()
    result, _ = _rerun(job_dir, "bash -c true")
    second = json.loads((job_dir / "endpoint.json").read_text())
    assert second["run"] != first["run"] and second["fingerprint"] != first["fingerprint"]


def _rerun(job_dir: Path, command: str):
    catalog = parse_catalog({"engines": {"e": {"command": command, "kind": "openai",
                                               "key_env": "VLLM_API_KEY", **TLS}},
                             "models": [{"name": "m", "model": "/m", "engine": "e"}]})
    script = ScriptRenderer().render(catalog.get("m"), catalog.get("m").resources,
                                     ScriptContext("d1", 0, job_dir))
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True,
                            env={**os.environ, "SLURM_JOB_ID": "4242"}, timeout=30)
    return result, job_dir


def test_a_previous_runs_endpoint_file_is_removed_at_start(tmp_path):
    job_dir = tmp_path / "job"
    job_dir.mkdir()
    (job_dir / "endpoint.json").write_text('{"host": "old", "port": 1}')
    # no key file: the run stops before the engine starts, and the stale file must be gone
    _rerun(job_dir, "true")
    assert not (job_dir / "endpoint.json").exists()


def test_key_file_flag_passes_the_path_never_the_key(tmp_path):
    result, job_dir = run_script(tmp_path, "bash -c 'echo args=$* env=${VLLM_API_KEY:-none}' e",
                                 key_file_flag="--api-key-file", **TLS)
    assert result.returncode == 0, result.stderr
    assert f"--api-key-file {job_dir}/key" in result.stdout and "env=none" in result.stdout
    assert "s3cret-key" not in result.stdout + result.stderr
