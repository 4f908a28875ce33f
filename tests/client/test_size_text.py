"""How `jupyter osire models` and `%osire models` show a model's size (``_client/commands.py``),
from the catalog listing's JSON as the server sends it."""
from __future__ import annotations

from jupyter_osire_llm._client.commands import Parser, add_verbs, models_html, models_table

SIZED = {"name": "llama-3-70b", "resources": {"gpus": 2, "time": "04:00:00"},
         "size": {"parameters": 70553706496, "weight_bytes": 141107412992,
                  "summary": "141.1 GB of weights: 2 x H100 80G, or 4 x A100 40G",
                  "options": [{"gpu_type": "h100", "gpus": 2, "nodes": 1,
                               "context_tokens": 41233}]}}
UNSIZED = {"name": "hub-model", "resources": {}, "size": {"note": "size unknown: ..."}}


def test_the_table_says_size_what_holds_it_and_the_context_left():
    text = models_table([SIZED, UNSIZED])
    assert "SIZE" in text.splitlines()[0]
    assert "70.6B, 141.1 GB of weights: 2 x H100 80G, or 4 x A100 40G (41k tokens of KV cache)" \
        in text
    assert "hub-model" in text and "unknown" in text


def test_the_notebook_table_escapes_and_shows_the_same():
    html = models_html([{**SIZED, "size": {**SIZED["size"], "summary": "<b>x</b>"}}])
    assert "&lt;b&gt;x&lt;/b&gt;" in html and "<b>" not in html


def test_launch_takes_force_in_both_front_ends():
    for front in ("cli", "magic"):
        top = Parser(prog="osire")
        add_verbs(top, front, ["launch"], Parser)
        assert top.parse_args(["launch", "m", "--force"]).force is True
        assert top.parse_args(["launch", "m"]).force is False


def test_launch_takes_an_own_model_folder_in_both_front_ends():
    from jupyter_osire_llm._client.commands import own_model
    for front in ("cli", "magic"):
        top = Parser(prog="osire")
        add_verbs(top, front, ["launch"], Parser)
        args = top.parse_args(["launch", "base", "--model-path", "/p/run7", "--name", "mine"])
        assert own_model(args) == {"model_path": "/p/run7", "name": "mine"}
        assert own_model(top.parse_args(["launch", "base"])) == {}
