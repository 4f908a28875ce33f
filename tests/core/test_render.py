"""Batch script rendering: derived engine args, and no hostile value escaping its quotes."""
import shlex
import subprocess
from pathlib import Path

from hypothesis import given, settings, strategies as st

from jupyter_osire_llm.core.catalog import parse_catalog
from jupyter_osire_llm.errors import RequestError
from jupyter_osire_llm.core.render import ScriptContext, ScriptRenderer, engine_argv
from jupyter_osire_llm.schedulers.base import Resources
from jupyter_osire_llm.core.limits import parse_resources

ENGINE = {"vllm": {"command": "python -m vllm.entrypoints.openai.api_server"}}
HOSTILE = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["\n#SBATCH --uid=0", "$(touch /tmp/pwned)", "`id`", "'; rm -rf ~; '",
                     "../../../etc/passwd", "a\nb", "x' #", '"$HOME"', "gpu&&id", "\\", "\x00"]),
).map(str)


def entry(**model):
    spec = {"name": "m", "model": "/models/m", **model}
    catalog = parse_catalog({"engines": ENGINE, "models": [spec]})
    assert not catalog.problems, catalog.problems
    return catalog.get("m")


def render(e, resources=Resources(), job_dir="/jobs/abc/r0"):
    ctx = ScriptContext("abc", 0, Path(job_dir))
    return ScriptRenderer().render(e, resources, ctx)


def engine_line(script):
    line = next(l for l in script.splitlines() if l.startswith("setsid "))
    return shlex.split(line)


def test_vllm_args_are_derived_from_resources():
    argv = engine_argv(entry(), Resources(gpus=4), "0.0.0.0")
    assert argv[argv.index("--tensor-parallel-size") + 1] == "4"
    assert argv[argv.index("--served-model-name") + 1] == "m"
    assert argv[argv.index("--host") + 1] == "0.0.0.0"
    assert "--middleware" in argv


def test_catalog_engine_args_win_over_derived_ones_but_not_host_or_name():
    e = entry(engine_args={"tensor-parallel-size": 2, "host": "1.2.3.4", "port": 1,
                           "served-model-name": "x", "enforce-eager": True, "trust": False})
    argv = engine_argv(e, Resources(gpus=4), "0.0.0.0")
    assert argv[argv.index("--tensor-parallel-size") + 1] == "2"
    assert argv[argv.index("--host") + 1] == "0.0.0.0"
    assert argv[argv.index("--served-model-name") + 1] == "m"
    assert "--port" not in argv and "--enforce-eager" in argv and "--trust" not in argv


LLAMA_CPP = {"command": "llama-server", "kind": "openai", "model_flag": "-m",
             "name_flag": "--alias", "key_file_flag": "--api-key-file",
             "tls_cert_flag": "--ssl-cert-file", "tls_key_flag": "--ssl-key-file"}


def llama_cpp_entry(**engine):
    catalog = parse_catalog({"engines": {"llama": {**LLAMA_CPP, **engine}}, "models": [
        {"name": "mistral", "model": "/m.gguf", "engine": "llama",
         "engine_args": {"ctx-size": 8192, "alias": "x", "host": "1.2.3.4"}}]})
    assert not catalog.problems, catalog.problems
    return catalog.get("mistral")


def test_an_engine_with_other_flag_names_gets_them():
    argv = engine_argv(llama_cpp_entry(), Resources(gpus=2), "0.0.0.0")
    assert argv == ["-m", "/m.gguf", "--ctx-size", "8192", "--host", "0.0.0.0",
                    "--alias", "mistral"]
    script = render(llama_cpp_entry())
    subprocess.run(["bash", "-n"], input=script, text=True, check=True)
    assert '--port "$PORT" &' in script
    positional = engine_argv(llama_cpp_entry(model_flag="", name_flag=""), Resources(), "h")
    assert positional == ["/m.gguf", "--ctx-size", "8192", "--alias", "x", "--host", "h"]


def test_the_port_flag_reaches_both_job_scripts():
    e = llama_cpp_entry(port_flag="--listen")
    assert '--listen "$PORT" &' in render(e)
    batch = ScriptRenderer().render_batch(e, Resources(), "batch_1", Path("/jobs/b"), 4)
    assert 'LISTEN_ARGS=(--listen "$PORT")' in batch and '--port "$PORT"' not in batch


def test_script_is_valid_bash_and_carries_no_key_and_no_sbatch_lines():
    script = render(entry(env={"HF_HOME": "/scratch/hf"}, setup="module load cuda"))
    subprocess.run(["bash", "-n"], input=script, text=True, check=True)
    assert "#SBATCH" not in script
    assert "VLLM_API_KEY=$(cat \"$JOB_DIR/key\")" in script
    assert "export HF_HOME=/scratch/hf" in script and "module load cuda" in script
    assert engine_line(script)[:4] == ["setsid", "python", "-m",
                                       "vllm.entrypoints.openai.api_server"]


@settings(max_examples=300, deadline=None)
@given(field=st.sampled_from(["partition", "account", "qos", "gpu_type", "memory", "time",
                              "constraint"]), value=HOSTILE)
def test_hostile_user_resources_are_rejected_or_inert(field, value):
    try:
        resources = parse_resources({field: value})
    except RequestError as err:
        assert err.field == f"resources.{field}"
        return
    # Accepted values have no whitespace, quote, newline, '$', '`', ';', '/' or '\\'.
    assert not set(value) & set(" \t\n\r'\"$`;/\\<>!{}#~"), value
    script = render(entry(), resources)
    assert script == render(entry())  # resources never reach the script text


@settings(max_examples=200, deadline=None)
@given(value=HOSTILE)
def test_hostile_catalog_values_stay_inside_their_quotes(value):
    try:
        e = entry(env={"X": value}, engine_args={"extra": value})
    except AssertionError:
        return  # rejected by the catalog (control characters)
    script = render(e)
    subprocess.run(["bash", "-n"], input=script, text=True, check=True)
    argv = engine_line(script)
    assert argv[argv.index("--extra") + 1] == value
    assert f"export X={shlex.quote(value)}\n" in script
    assert len(script.splitlines()) == len(render(entry(env={"X": "v"},
                                                        engine_args={"extra": "v"})).splitlines())


def test_site_template_folder_overrides_ours(tmp_path):
    (tmp_path / "engine.sh.j2").write_text(
        "#!/bin/bash\n#SBATCH --reservation=llm\n# site template for {{ served_name }}\n"
        "{{ command }} {{ engine_args | map('q') | join(' ') }}\n")
    ctx = ScriptContext("abc", 0, Path("/jobs/abc/r0"))
    script = ScriptRenderer(str(tmp_path)).render(entry(), Resources(), ctx)
    assert script.startswith("#!/bin/bash\n#SBATCH --reservation=llm\n# site template for m\n")


def test_missing_template_is_a_config_error(tmp_path):
    import pytest
    from jupyter_osire_llm.errors import ConfigError
    catalog = parse_catalog({"engines": {"e": {"command": "x", "template": "nope.j2"}},
                             "models": [{"name": "m", "model": "/m", "engine": "e"}]})
    with pytest.raises(ConfigError) as err:
        ScriptRenderer(str(tmp_path)).render(catalog.get("m"), Resources(),
                                             ScriptContext("a", 0, Path("/j")))
    assert "nope.j2" in err.value.message
