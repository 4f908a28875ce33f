import pytest

from jupyter_osire_llm.core.catalog import load_catalog, parse_catalog
from jupyter_osire_llm.errors import ConfigError, NotFound

GOOD = """
engines:
  vllm:
    command: python -m vllm.entrypoints.openai.api_server
    setup: module load cuda
models:
  - name: llama-8b
    model: /shared/models/llama
    description: chat
    resources: {gpus: 1, time: "04:00:00", partition: gpu}
    engine_args: {max-model-len: 4096, enforce-eager: true}
  - name: bad-gpus
    model: /m
    resources: {gpus: many}
  - name: bad-engine
    model: /m
    engine: sglang
  - name: llama-8b
    model: /dup
  - {model: /no-name}
  - name: bad-env
    model: /m
    env: {"A": "x\\nexport B=1"}
"""


def test_good_entries_load_and_each_bad_entry_gets_one_message(tmp_path):
    path = tmp_path / "catalog.yaml"
    path.write_text(GOOD)
    catalog = load_catalog(str(path))
    assert list(catalog.models) == ["llama-8b"]
    entry = catalog.get("llama-8b")
    assert entry.resources.gpus == 1 and entry.engine.setup == "module load cuda"
    assert len(catalog.problems) == 5, catalog.problems
    joined = "\n".join(catalog.problems)
    for fragment in ("bad-gpus", "resources.gpus", "sglang", "duplicate", "'name'", "env.A"):
        assert fragment in joined


def test_public_view_hides_engine_internals():
    catalog = parse_catalog({"engines": {"vllm": {"command": "vllm serve", "env": {"S": "1"}}},
                             "models": [{"name": "m", "model": "/m", "setup": "secret"}]})
    public = catalog.public()[0]
    assert public == {"name": "m", "model": "/m", "engine": "vllm", "description": "",
                      "resources": {"gpus": 0, "nodes": 1}}


def test_unknown_model_lists_known():
    catalog = parse_catalog({"engines": {"vllm": {"command": "x"}},
                             "models": [{"name": "a", "model": "/a"}, {"name": "b", "model": "/b"}]})
    with pytest.raises(NotFound) as err:
        catalog.get("c")
    assert "a, b" in err.value.message and err.value.status == 404


@pytest.mark.parametrize("text, fragment", [
    ("[1, 2]", "top level"), ("models: {a: 1}", "'models' must be a list"),
    ("models: [\n  - {name: x", "not valid YAML"),
])
def test_broken_catalog_files(tmp_path, text, fragment):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_catalog(str(path))
    assert fragment in err.value.message


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_catalog(str(tmp_path / "nope.yaml"))
    assert "cannot read" in err.value.message


def test_bad_engine_reported():
    catalog = parse_catalog({"engines": {"e": {"command": ""}, "f": {"command": "x", "kind": "?"}},
                             "models": []})
    assert len(catalog.problems) == 2


def _engine_catalog(**engine):
    return parse_catalog({"engines": {"e": {"command": "server", "kind": "openai", **engine}},
                          "models": [{"name": "m", "model": "/m", "engine": "e"}]})


def test_an_engine_with_no_way_to_take_a_key_is_a_catalog_problem():
    catalog = _engine_catalog()
    assert "m" not in catalog.models
    assert any("no key" in p and "no TLS" in p and "insecure: true" in p
               for p in catalog.problems), catalog.problems


def test_an_engine_marked_insecure_loads_and_is_flagged():
    catalog = _engine_catalog(insecure=True)
    assert catalog.models["m"].public()["insecure"] == [
        "no key: anyone who reaches its port can use it",
        "no TLS: prompts and answers cross the network in clear"]
    assert list(catalog.insecure()) == ["m"]


def test_key_file_flag_and_tls_flags_make_a_protected_engine():
    catalog = _engine_catalog(key_file_flag="--api-key-file", tls_cert_flag="--ssl-cert-file",
                              tls_key_flag="--ssl-key-file")
    assert "insecure" not in catalog.models["m"].public() and catalog.insecure() == {}


def test_vllm_engines_take_their_key_from_the_environment_and_serve_tls_by_default():
    engine = parse_catalog({"engines": {"v": {"command": "vllm serve"}},
                            "models": [{"name": "m", "model": "/m", "engine": "v"}]}
                           ).models["m"].engine
    assert (engine.key_env, engine.tls_cert_flag, engine.tls_key_flag) == (
        "VLLM_API_KEY", "--ssl-certfile", "--ssl-keyfile")


@pytest.mark.parametrize("field, value", [("key_env", "A B"), ("key_file_flag", "--x;rm"),
                                          ("tls_cert_flag", "$(id)")])
def test_protection_fields_are_validated(field, value):
    catalog = _engine_catalog(**{field: value}, insecure=True)
    assert "m" not in catalog.models and field in catalog.problems[0]


@pytest.mark.parametrize("field, value, says", [
    ("model_flag", "-m x", "not a valid command-line flag"),
    ("name_flag", "$(id)", "not a valid command-line flag"),
    ("host_flag", "", "cannot be empty"), ("port_flag", None, "cannot be empty")])
def test_argument_flags_are_validated(field, value, says):
    catalog = _engine_catalog(**{field: value}, insecure=True)
    assert "m" not in catalog.models
    assert field in catalog.problems[0] and says in catalog.problems[0], catalog.problems
